"""``GET /``: the live dashboard, one page with its script and style shipped in the package.

The assets live in ``node/http/static/`` (package data; no build step, no CDN, no external fonts)
and are read once when the app is built. The page holds no data of the mesh: it draws everything
from ``GET /v1/events`` (``events.py``), which it reads with ``fetch`` rather than ``EventSource`` so
that it can send ``Authorization: Bearer KEY`` like every other client. That is why the page and
its two assets are open to everyone (``mesh/access.py``) while the feed needs a key from another
machine: a key never has to travel in a URL, where it would end up in logs and browser history.
A strict Content-Security-Policy keeps the page to its own origin.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

from ..errors import NotFound

__all__ = ["ASSET_PREFIX", "add_dashboard_routes"]

ASSET_PREFIX = "/dashboard/"
_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return (resources.files(__package__ or "meshnode.http") / "static" / name).read_bytes()


def add_dashboard_routes(app: FastAPI) -> None:
    """Mount ``GET /`` and ``GET /dashboard/{asset}``."""
    page = _asset("index.html")
    assets = {name: _asset(name) for name in _TYPES}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        """The dashboard page."""
        return Response(page, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @app.get(ASSET_PREFIX + "{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        """The page's script or style."""
        if name not in assets:
            raise NotFound(f"no dashboard asset named {name!r}")
        return Response(assets[name], media_type=_TYPES[name], headers=_HEADERS)
