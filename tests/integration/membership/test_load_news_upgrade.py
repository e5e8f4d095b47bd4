"""A mesh in the middle of an upgrade: load goes whole while a node of the earlier release is in it.

n2 runs the release before load news (commit ``EARLIER``, installed apart from this checkout, as
``bench/baseline.py`` does for the benchmarks), n0 and n1 this one. n0 hosts the probe app; slow
requests into it move its load. While n2 is a member, n0 gossips its load whole (``sent_whole``),
never as load news, and n2, which knows no such message, still sees n0's load move; nobody is
suspected. Once n2 has left, the next moves of n0's load go as load news, applied by n1.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.cli.doctor_checks import view_findings
from tests.integration.agents import AgentProcess, Mesh, metric, statuses, wait_for
from tests.integration.membership.test_load_news_agents import LOAD_NEWS, PROBE, busy_n0_seen_by, serving
from tests.integration.releases import REPOSITORY, install_commit, pythonpath_first

EARLIER = "536feb2"  # the last commit before load news (mesh/load_news.py)


def install_earlier(root: Path) -> Path:
    """The meshnode of ``EARLIER`` in a folder of its own; a skip where this clone lacks it."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to check out the earlier release")
    exists = ["git", "-C", str(REPOSITORY), "cat-file", "-e", f"{EARLIER}^{{commit}}"]
    if subprocess.run(exists, check=False, capture_output=True).returncode != 0:
        pytest.skip(f"this clone does not hold commit {EARLIER} (a shallow clone?)")
    return install_commit(EARLIER, root, "earlier")


def features_seen(agent: AgentProcess) -> dict[str, list[str]]:
    return {m["name"]: m["features"] for m in agent.get("/v1/mesh").json()["members"]}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("load-news-upgrade")
    site = install_earlier(root)
    planned = Mesh(root, 3, extra_args={0: PROBE})
    earlier = planned.agents[2]
    earlier.env["PYTHONPATH"] = pythonpath_first(site)
    with serving(planned) as started:
        yield started


def test_load_goes_whole_while_an_earlier_release_is_a_member_and_as_news_once_it_left(mesh: Mesh) -> None:
    n0, n1, n2 = mesh.agents
    assert LOAD_NEWS not in n2.get("/metrics").text  # n2 is of the earlier release indeed
    busy_n0_seen_by(mesh, 2)  # and sees n0's load move
    sent = metric(n0, LOAD_NEWS, "outcome")
    assert sent["sent_whole"] >= 2 and sent["sent"] == 0, sent
    for agent in mesh.agents:
        assert set(statuses(agent.get("/v1/mesh").json()).values()) == {"alive"}, agent.name
    # n2 relays n1's metadata without the field it does not know; where that copy reached n0 before
    # n1's own, n1's own (by gossip, or at the latest in a push-pull, every 10 s) mends it.
    features = {"n0": ["load-news"], "n1": ["load-news"], "n2": []}
    wait_for(lambda: features_seen(n0) == features, 30, 0.1, lambda: f"n0 sees {features_seen(n0)}")
    view = n0.get("/v1/mesh").json()
    (release,) = [f for f in view_findings(view) if f.check == "releases"]  # what `meshnode doctor` says
    assert release.level == "warn" and release.detail.startswith("n2 run")

    assert n2.terminate() == 0  # a graceful leave: the mesh is all of this release again
    wait_for(lambda: statuses(n0.get("/v1/mesh").json()).get(n2.node_id) == "left", 30, 0.1)
    applied = metric(n1, LOAD_NEWS, "outcome").get("applied", 0)
    busy_n0_seen_by(mesh, 1)
    assert metric(n0, LOAD_NEWS, "outcome")["sent"] >= 2
    assert metric(n1, LOAD_NEWS, "outcome")["applied"] >= applied + 2
