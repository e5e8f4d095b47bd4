"""GET /docs, its assets and /openapi.json: served from the package, strict headers, gzip and ETags,
open or keyed from another machine as docs/security.md says (the gate in front, no sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from meshnode.http.api_docs import DOCS_ASSETS, SWAGGER_UI_VERSION
from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.mesh.access import need_for

STATIC = Path(__file__).resolve().parents[3] / "node" / "http" / "static"
REMOTE = ("192.0.2.7", 40000)


class Node:
    node_id = "n0"

    def mesh_view(self) -> dict[str, object]:
        return {"self": "n0", "members": []}

    def readiness(self) -> tuple[bool, str]:
        return True, ""


def client(remote: bool = False) -> httpx.AsyncClient:
    gate = Gate(create_app(Node()), lambda _key_id: None, insecure=False)
    transport = httpx.ASGITransport(app=gate, client=REMOTE if remote else ("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://node")


async def test_the_page_loads_only_from_its_own_origin() -> None:
    async with client() as http:
        page = await http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    sources = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
    for name in DOCS_ASSETS:
        assert f"/docs/{name}" in page.text, name


@pytest.mark.parametrize("name", sorted(DOCS_ASSETS))
async def test_each_asset_is_the_packaged_file_gzipped_with_an_etag(name: str) -> None:
    async with client() as http:
        plain = await http.get(f"/docs/{name}", headers={"Accept-Encoding": "identity"})
        zipped = await http.get(f"/docs/{name}", headers={"Accept-Encoding": "gzip"})
        again = await http.get(f"/docs/{name}", headers={"If-None-Match": plain.headers["etag"]})
    assert plain.status_code == 200 and plain.content == (STATIC / DOCS_ASSETS[name][0]).read_bytes()
    assert plain.headers["content-type"].startswith(("text/javascript", "text/css"))
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content  # httpx inflates
    assert again.status_code == 304 and not again.content
    assert "content-security-policy" in plain.headers


async def test_an_unknown_asset_is_a_404_in_the_one_error_shape() -> None:
    async with client() as http:
        answer = await http.get("/docs/nothing.js")
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


async def test_from_another_machine_the_page_is_open_and_the_document_needs_a_key() -> None:
    async with client(remote=True) as http:
        page = await http.get("/docs")
        assets = [await http.get(f"/docs/{name}") for name in DOCS_ASSETS]
        document = await http.get("/openapi.json")
    assert page.status_code == 200 and all(a.status_code == 200 for a in assets)
    assert document.status_code == 401 and document.headers["www-authenticate"].startswith("Bearer")
    # The gate's list and the served assets are the same set.
    assert all(need_for("GET", f"/docs/{name}") is None for name in DOCS_ASSETS)
    assert need_for("GET", "/docs/other.js") is not None


async def test_the_document_is_a_route_with_a_proper_405() -> None:
    async with client() as http:
        document = await http.get("/openapi.json")
        posted = await http.post("/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET"


def test_the_vendored_swagger_ui_is_whole_and_says_its_version() -> None:
    folder = STATIC / "swagger"
    assert {"LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"} <= {p.name for p in folder.iterdir()}
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert f"**{SWAGGER_UI_VERSION}**" in (folder / "README.md").read_text()
    assert len((folder / "swagger-ui-bundle.js").read_bytes()) > 1_000_000  # the file, not a pointer to it
