"""docs/http.md names every route the node serves, and only those: the page cannot drift.

Routes come from the node's app as ``server.http_server`` builds it (``served_routes.py``); each must
appear on the page as ``METHOD /path`` in backticks, and every route the page's table lists must be
served.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.http.served_routes import node_app, served_operations, websocket_paths

PAGE = Path(__file__).resolve().parents[3] / "docs" / "http.md"
TABLE_ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE|PATCH) (/[^`]*)` \|", re.MULTILINE)


def test_every_route_is_on_the_reference_page_and_the_table_lists_only_served_ones() -> None:
    app, _, _ = node_app()
    page = PAGE.read_text()
    served = {(method.upper(), path) for method, path in served_operations(app)}
    served |= {("GET", path) for path in websocket_paths(app)}
    missing = sorted(f"{method} {path}" for method, path in served if f"`{method} {path}`" not in page)
    assert missing == [], f"docs/http.md does not describe: {missing}"
    listed = set(TABLE_ROW.findall(page))
    assert listed == served, f"the routes table differs: {sorted(listed ^ served)}"


def test_the_check_sees_a_missing_route() -> None:
    assert TABLE_ROW.findall("| `GET /health` | open | liveness |\n") == [("GET", "/health")]
