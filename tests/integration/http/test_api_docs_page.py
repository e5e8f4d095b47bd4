"""The API docs (``GET /docs``) in headless Debian Chromium, driven by playwright, on a real agent.

The page must list the operations (predict's among them), run one with "Try it out", and ask for
nothing from any host but the node: every other request is aborted by the browser and recorded,
and none may be attempted. Then the key: a 401 on the document (played by the browser's request
interception, since loopback needs no key) shows the key form, and the key typed there goes to the
document and to "Try it out" in the Authorization header, never in a URL. Chromium and playwright as
in ``test_dashboard.py`` (skipped without them, saying which).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.agents import AgentProcess, Mesh
from tests.integration.http.test_dashboard import CHROMIUM, SHOW_TIMEOUT_MS

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed: apt-get install --no-install-recommends chromium",
)
KEY = "mn_0123456789ab_" + "k" * 43


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("docs")
    with Mesh(workdir, 1, extra_args={0: ["--deploy", "echo=meshnode.apps.echo:Echo"]}) as mesh:
        yield mesh.agents[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def node_only(page: sync_api.Page, agent: AgentProcess) -> list[str]:
    """Abort every request to another host than the node's; the list of those attempted."""
    node = urlsplit(agent.url).netloc
    elsewhere: list[str] = []

    def only_the_node(route: sync_api.Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https") and parts.netloc != node:
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", only_the_node)
    return elsewhere


def test_the_page_lists_and_runs_operations_asking_no_other_host(
    agent: AgentProcess, browser: sync_api.Browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    # A Content-Security-Policy refusal shows as a console error: there must be none.
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    elsewhere = node_only(page, agent)
    page.goto(f"{agent.url}/docs")
    expect = sync_api.expect
    predict = page.locator("#operations-predict-predict")
    expect(predict).to_be_visible(timeout=SHOW_TIMEOUT_MS)
    expect(predict).to_contain_text("/v1/predict/{deployment}")
    for tag in ("jobs", "openai", "deployments", "keys", "metrics"):
        expect(page.locator(f'h3[data-tag="{tag}"]')).to_be_visible()

    # "Try it out" on predict: echo answers the body, through the page's own origin.
    predict.locator(".opblock-summary").click()
    predict.locator("button.try-out__btn").click()
    predict.locator('input[placeholder="deployment"]').fill("echo")
    predict.locator("textarea.body-param__text").fill('{"hello": "docs"}')
    predict.locator("button.execute").click()
    answer = predict.locator(".live-responses-table tr.response")
    expect(answer.locator(".response-col_status")).to_have_text("200", timeout=SHOW_TIMEOUT_MS)
    expect(answer.locator(".response-col_description")).to_contain_text("docs")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert elsewhere == [], f"requests to other hosts: {elsewhere}"
    assert problems == [], problems
    page.close()


def test_a_key_asked_for_goes_in_a_header_to_the_document_and_to_try_it_out(
    agent: AgentProcess, browser: sync_api.Browser
) -> None:
    page = browser.new_page()
    elsewhere = node_only(page, agent)
    sent: list[tuple[str, str | None]] = []

    def gate(route: sync_api.Route) -> None:
        authorization = route.request.headers.get("authorization")
        sent.append((route.request.url, authorization))
        if authorization != f"Bearer {KEY}":
            route.fulfill(status=401, content_type="application/json", body='{"error": {}}')
        else:
            route.fallback()  # on to node_only, which lets the node answer

    page.route("**/openapi.json", gate)
    page.route("**/v1/mesh", gate)
    page.goto(f"{agent.url}/docs")
    expect = sync_api.expect
    expect(page.locator("#key-form")).to_be_visible(timeout=SHOW_TIMEOUT_MS)
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    view = page.locator("#operations-mesh-mesh_v1_mesh_get")
    expect(view).to_be_visible(timeout=SHOW_TIMEOUT_MS)
    view.locator(".opblock-summary").click()
    view.locator("button.try-out__btn").click()
    view.locator("button.execute").click()
    status = view.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200", timeout=SHOW_TIMEOUT_MS)
    assert sent[0] == (f"{agent.url}/openapi.json", None), sent
    assert (f"{agent.url}/openapi.json", f"Bearer {KEY}") in sent, sent
    assert (f"{agent.url}/v1/mesh", f"Bearer {KEY}") in sent, "Try it out sends the key"
    assert all(KEY not in url for url, _ in sent)
    assert elsewhere == []
    page.close()
