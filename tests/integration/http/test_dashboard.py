"""The dashboard (``GET /``) in headless Debian Chromium, driven by playwright, on a real 3-node mesh.

It must show the three nodes and the deployments, the traffic (a deployment's rate and latency,
the link that carried requests from one node to another) and the jobs a node holds, show a
SIGKILLed node dead within seconds, and show a deployment declared on another node without a
reload. A screenshot goes to the test's
tmp_path. Chromium comes from Debian (``apt-get install --no-install-recommends chromium``,
scripts/setup.sh) and playwright from PyPI, used through ``executable_path``: never
``playwright install``. Without either the test is skipped, saying which.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.agents import Mesh

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
)
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: apt-get install --no-install-recommends chromium",
)
# Generous for 2 busy cores running three agents and a browser; the page itself updates within a second.
SHOW_TIMEOUT_MS = 20_000


def test_dashboard_shows_the_mesh_a_death_and_a_new_deployment_live(tmp_path: Path) -> None:
    with Mesh(tmp_path, 3, extra_args={0: ["--deploy", "echo=meshnode.apps.echo:Echo"]}) as mesh:
        mesh.wait_formed()
        viewer, declarer, victim = mesh.agents
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{viewer.url}/")
                expect = sync_api.expect
                for name in ("n0", "n1", "n2"):
                    expect(page.locator(f'.node[data-node="{name}"]')).to_have_attribute(
                        "data-status", "alive", timeout=SHOW_TIMEOUT_MS
                    )
                expect(page.locator('tr[data-deployment="echo"]')).to_be_visible(timeout=SHOW_TIMEOUT_MS)
                expect(page.locator("#connection")).to_have_attribute("data-state", "live")

                # Requests entering n1 are served by n0's replica: a link n1 -> n0 and a rate for echo.
                with httpx.Client(base_url=declarer.url, timeout=10, trust_env=False) as client:
                    for index in range(60):
                        answer = client.post("/v1/predict/echo", json={"n": index})
                        assert answer.status_code == 200, answer.text
                    job = client.post("/v1/jobs/echo", json={"n": "job"})
                    assert job.status_code == 202, job.text
                link = page.locator(f'#topology line.link[data-from="{declarer.node_id}"]')
                expect(link).to_have_attribute("data-to", viewer.node_id, timeout=SHOW_TIMEOUT_MS)
                expect(page.locator('tr[data-deployment="echo"] .rate')).not_to_have_text("\u2013")
                expect(page.locator('tr[data-deployment="echo"] .latency')).to_contain_text("ms")
                expect(page.locator('tr[data-jobs="echo"]')).to_be_visible(timeout=SHOW_TIMEOUT_MS)

                victim.kill()
                killed = time.monotonic()
                expect(page.locator('.node[data-node="n2"]')).to_have_attribute(
                    "data-status", "dead", timeout=SHOW_TIMEOUT_MS
                )
                # Issue 16 asks for 3 s; on 2 shared cores only a generous bound is asserted.
                print(f"the page showed n2 dead {time.monotonic() - killed:.2f} s after its SIGKILL")
                expect(page.locator("#events")).to_contain_text("n2 is dead")

                spec = {"app": "meshnode.apps.echo:Echo", "min_replicas": 1, "max_replicas": 1}
                url = f"{declarer.url}/v1/deployments/fresh"
                put = httpx.put(url, json=spec, timeout=10, trust_env=False)
                assert put.status_code == 201, put.text
                expect(page.locator('tr[data-deployment="fresh"]')).to_be_visible(timeout=SHOW_TIMEOUT_MS)
                expect(page.locator('tr[data-deployment="fresh"] .count')).to_contain_text(
                    "1 / 1", timeout=SHOW_TIMEOUT_MS
                )
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                page.emulate_media(color_scheme="dark")
                page.screenshot(path=str(tmp_path / "dashboard-dark.png"), full_page=True)
                assert not errors, errors
            finally:
                browser.close()


def test_the_page_asks_for_a_key_and_sends_it_in_a_header_never_a_url(tmp_path: Path) -> None:
    # From loopback no key is needed, so the node's 401 to another machine is played by the browser's
    # own request interception: the page must show the key form, then send the key it was given.
    with Mesh(tmp_path, 1) as mesh:
        agent = mesh.agents[0]
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            try:
                page = browser.new_page()
                sent: list[tuple[str, str | None]] = []

                def gate(route: sync_api.Route) -> None:
                    authorization = route.request.headers.get("authorization")
                    sent.append((route.request.url, authorization))
                    if authorization != "Bearer mn_typed":
                        route.fulfill(status=401, content_type="application/json", body='{"error": {}}')
                    else:
                        route.continue_()

                page.route("**/v1/events*", gate)
                page.goto(f"{agent.url}/#key=mn_from_fragment")
                expect = sync_api.expect
                expect(page.locator("#key-form")).to_be_visible(timeout=SHOW_TIMEOUT_MS)
                assert page.url == f"{agent.url}/", "the key stays in the address bar"
                page.fill("#key-input", "mn_typed")
                page.click("#key-form button")
                expect(page.locator("#connection")).to_have_attribute(
                    "data-state", "live", timeout=SHOW_TIMEOUT_MS
                )
                expect(page.locator('.node[data-node="n0"]')).to_be_visible(timeout=SHOW_TIMEOUT_MS)
                assert sent[0] == (f"{agent.url}/v1/events", "Bearer mn_from_fragment"), sent
                assert all("mn_" not in url for url, _ in sent), sent
            finally:
                browser.close()
