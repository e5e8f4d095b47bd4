"""``GET /docs``: the HTTP API's reference in Swagger UI, and ``GET /openapi.json``, the document it shows.

Swagger UI is vendored in ``static/swagger/`` (swagger-ui-dist, Apache-2.0; its ``README.md`` says
which version and how to update it) and served from the package like the dashboard: no CDN, no
external fonts, no validator badge (``validatorUrl: null`` in ``static/docs.js``). A strict
Content-Security-Policy keeps the page to its own origin.

Access (``mesh/access.py``; docs/security.md): the page and its assets are open to everyone, as the
dashboard's are, because they hold nothing of the mesh; the document needs an ``invoke`` key from
another machine like every other ``/v1`` read, because it is this node's API as served (its version
included) and nobody without a key can call it anyway. The page fetches the document itself with
``fetch``, so that the key goes in ``Authorization: Bearer`` (asked for on a 401, kept in the tab's
session storage under the dashboard's name, never in a URL) and Swagger's "Authorize" starts out
filled with it for "Try it out".

The bundle is 1.7 MB: each asset is read once, on its first request, and sent gzipped to clients
that take it (0.45 MB), with an ETag so a reload costs a 304.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import NotFound

__all__ = ["DOCS_ASSETS", "DOCS_PATH", "OPENAPI_PATH", "SWAGGER_UI_VERSION", "add_api_docs_routes"]

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
SWAGGER_UI_VERSION = "5.35.0"  # static/swagger/README.md
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
# Served name -> (file under static/, its type). The page's own script and style beside Swagger's.
DOCS_ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger/swagger-ui-bundle.js", _JS),
    "swagger-ui.css": ("swagger/swagger-ui.css", _CSS),
    "docs.js": ("docs.js", _JS),
    "docs.css": ("docs.css", _CSS),
}
_HEADERS = {
    "Cache-Control": "no-cache",  # revalidated with the ETag: a new meshnode brings new assets
    "X-Content-Type-Options": "nosniff",
    # Swagger UI draws its icons as data: SVGs; everything else comes from this node.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}
# Smaller answers gain little from gzip; every asset here is larger.
_GZIP_FROM_BYTES = 1024


class _Asset:
    """One file's bytes, their gzipped copy and an ETag, made once."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.data = data
        self.media_type = media_type
        self.gzipped = gzip.compress(data, 6, mtime=0) if len(data) >= _GZIP_FROM_BYTES else None
        self.etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {**_HEADERS, "ETag": self.etag, "Vary": "Accept-Encoding"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = self.data
        if self.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body, headers["Content-Encoding"] = self.gzipped, "gzip"
        return Response(body, media_type=self.media_type, headers=headers)


@functools.cache
def _asset(file: str, media_type: str) -> _Asset:
    """A file of ``static/``, read on first use (the unit tests' many apps never read the bundle)."""
    return _Asset(
        (resources.files(__package__ or "meshnode.http") / "static" / file).read_bytes(), media_type
    )


def add_api_docs_routes(app: FastAPI) -> None:
    """Mount ``GET /openapi.json``, ``GET /docs`` and ``GET /docs/{asset}``.

    The app is built with ``openapi_url=None``: the document is served here as a route like the
    others, so a wrong method on it gets the usual 405 with its ``Allow``.
    """

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        """This node's OpenAPI document (``openapi.py``)."""
        return JSONResponse(app.openapi())

    @app.get(DOCS_PATH, include_in_schema=False)
    async def api_docs(request: Request) -> Response:
        """The Swagger UI page."""
        return _asset("docs.html", "text/html; charset=utf-8").response(request)

    @app.get(DOCS_PATH + "/{name}", include_in_schema=False)
    async def api_docs_asset(request: Request, name: str) -> Response:
        """Swagger UI's script and style, and the page's own."""
        if name not in DOCS_ASSETS:
            raise NotFound(f"no API docs asset named {name!r}")
        return _asset(*DOCS_ASSETS[name]).response(request)
