"""The OpenAPI document describes every route the node serves and every error answer it gives.

Routes come from the node's own app as ``server.http_server`` builds it (``served_routes.py``), so a
route added later and left out of the document, or without its errors named in
``openapi.ERRORS``, fails here. The gate's and the bodies' answers are then checked by sending the
requests that cause them through the whole ASGI stack; schemathesis checks the rest against a real
agent (tests/integration/http/test_openapi_fuzz.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshnode.http.openapi import ERRORS
from meshnode.mesh.access import Scope, need_for
from tests.unit.http.served_routes import LIMITS, node_app, served_operations, websocket_paths

REMOTE = ("192.0.2.7", 40000)
LOCAL = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def node() -> tuple[Any, Any, str, dict[str, Any]]:
    app, stack, key = node_app()
    return app, stack, key, app.openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def example_path(path: str, operation: dict[str, Any]) -> str:
    """`path` with each parameter given its first allowed value, else "x"."""
    allowed = {
        p["name"]: p["schema"].get("enum", ["x"])[0]
        for p in operation.get("parameters", ())
        if p["in"] == "path"
    }
    return re.sub(r"\{(\w+)\}", lambda m: str(allowed.get(m[1], "x")), path)


def test_every_route_the_node_serves_is_in_the_document_and_no_other(node: Any) -> None:
    app, _, _, document = node
    served = served_operations(app)
    described = {(method, path) for method, path, _ in operations(document)}
    assert served - described == set(), "routes the document leaves out"
    assert described - served == set(), "operations the node does not serve"
    # OpenAPI has no WebSockets: the document's description tells of each.
    for path in websocket_paths(app):
        assert f"GET {path}" in document["info"]["description"], path


def test_every_operation_names_its_own_errors(node: Any) -> None:
    described = {(method, path) for method, path, _ in operations(node[3])}
    assert set(ERRORS) == described, "openapi.ERRORS must name every operation, and only those"


def test_each_operation_lists_the_gates_and_its_bodys_errors_in_the_error_shape(node: Any) -> None:
    document = node[3]
    for method, path, operation in operations(document):
        responses = operation["responses"]
        needed = need_for(method.upper(), example_path(path, operation))
        if needed is not None:
            assert "401" in responses, (method, path)
            assert operation.get("security") != [], (method, path)
        else:
            assert operation.get("security") == [], f"{method} {path} is open: no key asked"
        assert ("403" in responses) == (needed is Scope.ADMIN), (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(responses), (method, path)
        for code, answer in responses.items():
            assert answer["headers"]["X-Request-Id"], (method, path, code)
            if code in ("429", "503"):
                assert "Retry-After" in answer["headers"], (method, path, code)
            if code[0] in "45" and (method, path) != ("get", "/ready"):
                schema = answer["content"]["application/json"]["schema"]["$ref"]
                assert schema.rsplit("/", 1)[1] in ("Error", "OpenAIError"), (method, path, code)
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def send(stack: Any, client: tuple[str, int], method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=stack, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        return await http.request(method, path, **kwargs)


async def test_the_gates_answers_are_the_documented_ones(node: Any) -> None:
    _, stack, key, document = node
    for method, path, operation in operations(document):
        needed = need_for(method.upper(), example_path(path, operation))
        if needed is None:
            continue  # open: the route itself answers (the fuzz test's business)
        url = example_path(path, operation)
        refused = await send(stack, REMOTE, method.upper(), url)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        if needed is Scope.ADMIN:
            small = await send(stack, REMOTE, method.upper(), url, headers={"Authorization": f"Bearer {key}"})
            assert small.status_code == 403 and "403" in operation["responses"], (method, path, small.text)


async def test_bad_and_oversized_bodies_get_the_documented_answers(node: Any) -> None:
    _, stack, _, document = node
    too_big = b"{" + b" " * (LIMITS.max_request_bytes + 1) + b"}"
    with_body = [(m, p, o) for m, p, o in operations(document) if "requestBody" in o]
    assert len(with_body) >= 9  # predict, four OpenAI calls, a job, a deployment, a key, the keyring
    for method, path, operation in with_body:
        url = example_path(path, operation)
        for body, expected in ((b"{not json", 400), (too_big, 413), (b"[]", None)):
            answer = await send(
                stack, LOCAL, method.upper(), url, content=body, headers={"Content-Type": "application/json"}
            )
            assert expected in (None, answer.status_code), (method, path, answer.status_code, answer.text)
            assert str(answer.status_code) in operation["responses"], (method, path, answer.status_code)
            assert answer.json()["error"]["message"], (method, path)
