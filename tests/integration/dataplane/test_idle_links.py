"""Data-plane links nothing uses are closed, and made again when a request needs one (real agents).

``n0`` runs with ``forward_link_idle_s=3``. Its start-up job sync opens a link to ``n1``; a listing of
every node's jobs (``GET /v1/jobs``) asks ``n1`` again. Neither may leave a connection open for good:
in a mesh of a thousand, one listing would otherwise keep a thousand.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.agents import AgentProcess, Mesh, metric, wait_for

IDLE_S = 3


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    flags = {0: ["--set", f"forward_link_idle_s={IDLE_S}"]}
    with Mesh(tmp_path_factory.mktemp("idle-links"), 2, extra_args=flags) as started:
        started.wait_formed()
        yield started


def serving_links(agent: AgentProcess) -> float:
    return metric(agent, "meshnode_data_links_open", "lane").get("serving", 0.0)


def test_a_link_is_closed_once_idle_and_opened_again_by_the_next_request(mesh: Mesh) -> None:
    entry = mesh.agents[0]
    wait_for(lambda: serving_links(entry) == 0, 60, 0.2, "the start-up sync's link stayed open")

    listing = entry.get("/v1/jobs")  # asks n1 for the jobs it holds: a link again
    assert listing.status_code == 200, listing.text
    assert serving_links(entry) == 1
    wait_for(lambda: serving_links(entry) == 0, 60, 0.2, "the listing's link stayed open")

    again = entry.get("/v1/jobs")
    assert again.status_code == 200 and again.json() == listing.json()
