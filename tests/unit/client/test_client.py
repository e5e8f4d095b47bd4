"""The client's pure parts: node list, failover and retry decisions, SSE decoding, error mapping.

The planner is driven here as the shells drive it, with a scripted "network" (a function from each
``Send`` to a prepared ``httpx.Response`` or transport error) and a fake clock: no sockets, no sleeps.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest

import meshnode
from meshnode.client.answers import SseDecoder, fetch, read_result
from meshnode.client.base import DISCOVER_TIMEOUT_S
from meshnode.client.errors import (
    ClientError,
    DeploymentNotFound,
    GatewayTimeout,
    NoNodeAvailable,
    PredictorFailed,
    RequestFailed,
    RequestRejected,
    RequestTimeout,
    StreamBroken,
    Unavailable,
    error_from_answer,
    parse_retry_after,
)
from meshnode.client.exchange import ClientOptions, Opened, Planner, PredictRequest
from meshnode.client.nodes import NodeList, default_interfaces, members_from_view, node_url
from meshnode.client.steps import Finished, Pause, Read, Send, step
from meshnode.errors import MeshnodeError

A, B, C = "http://10.0.0.1:8470", "http://10.0.0.2:8470", "http://10.0.0.3:8470"


class Clock:
    """A clock that moves only when told (or when the fake network takes time)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(*members: tuple[str, str], self_id: str = "elsewhere") -> dict[str, Any]:
    """A /v1/mesh body; members are (url, status) with ids n0, n1...; ``self_id`` says who answered."""
    return {
        "self": self_id,
        "members": [
            {"id": f"n{index}", "name": f"node{index}", "status": status, "http": url.removeprefix("http://")}
            for index, (url, status) in enumerate(members)
        ],
    }


def answer(status: int = 200, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={} if body is None else body, headers=headers)


def error_answer(status: int, kind: str, message: str = "no", **headers: str) -> httpx.Response:
    return answer(status, {"error": {"type": kind, "message": message, "request_id": "r1"}}, **headers)


Network = Callable[[Send], httpx.Response | Exception]


def drive(steps: Generator[Any, Any, Any], network: Network, clock: Clock) -> tuple[Any, list[Any]]:
    """Run the planner's steps as a shell would; the value and every action it asked for."""
    actions: list[Any] = []
    reply: object = None
    while True:
        action = step(steps, reply)
        if isinstance(action, Finished):
            return action.value, actions
        actions.append(action)
        match action:
            case Send():
                reply = network(action)
            case Read(response):
                reply = response.read()
            case Pause(seconds):
                clock.now += seconds
                reply = None


def planner(seeds: list[str], clock: Clock, *, fresh: bool = True, **options: Any) -> Planner:
    """A planner over ``seeds``; ``fresh`` as if the mesh had just been asked for its nodes."""
    made = Planner(NodeList(seeds, random.Random(1)), ClientOptions(**options), clock)
    if fresh:
        made.nodes.postpone_refresh(clock.now)
    return made


def request(timeout_s: float = 10.0, **fields: Any) -> PredictRequest:
    return PredictRequest("echo", {"x": 1}, "application/json", timeout_s, **fields)


def sent_to(actions: list[Any]) -> list[str]:
    return [action.url for action in actions if isinstance(action, Send)]


def refused(action: Send) -> Exception:
    return httpx.ConnectError("connection refused")


# -- node addresses and the mesh view ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("10.0.0.2:8470", "http://10.0.0.2:8470"),
        ("http://10.0.0.2:8470/", "http://10.0.0.2:8470"),
        ("https://mesh.example/prefix/", "https://mesh.example/prefix"),
        (" [::1]:8470 ", "http://[::1]:8470"),
    ],
)
def test_node_urls_are_normalized(given: str, url: str) -> None:
    assert node_url(given) == url


@pytest.mark.parametrize("bad", ["", "ftp://host:1", "http://", "http://h:1/?q=1", "8470", ":8470"])
def test_bad_node_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        node_url(bad)


def test_the_view_gives_alive_nodes_then_suspect_ones_and_drops_the_rest() -> None:
    body = view((A, "alive"), (B, "suspect"), (C, "dead"), ("http://10.0.0.4:8470", "left"))
    body["members"].append({"id": "n9", "status": "alive", "http": "0.0.0.0:8470"})  # unusable address
    body["members"].append({"id": "n8", "status": "alive"})  # no address at all
    body["members"].append("junk")
    assert members_from_view(body, A) == ([A], [B])


def test_the_answering_node_stands_for_itself_and_lends_its_scheme() -> None:
    body = view(("http://0.0.0.0:8470", "alive"), ("10.0.0.2:8470", "suspect"), self_id="n0")
    expected = (["https://front.example"], ["https://10.0.0.2:8470"])
    assert members_from_view(body, "https://front.example") == expected


@pytest.mark.parametrize("body", [None, [], {"members": "x"}, {"self": "n0"}])
def test_a_malformed_view_teaches_nothing(body: Any) -> None:
    nodes = NodeList([A], random.Random(1))
    assert members_from_view(body, A) is None
    assert not nodes.learn(body, A, now=0.0)
    assert nodes.known == [A]


def test_order_prefers_the_last_good_node_then_alive_suspect_seeds_and_down_ones_last() -> None:
    seed = "http://10.0.0.9:8470"
    nodes = NodeList([seed], random.Random(1))
    nodes.learn(view((A, "alive"), (B, "alive"), (C, "suspect")), seed, now=0.0)
    assert set(nodes.order(0.0)[:2]) == {A, B}
    assert nodes.order(0.0)[2:] == [C, seed]
    nodes.mark_good(B)
    assert nodes.order(0.0)[0] == B
    nodes.mark_down(B, now=0.0, for_s=10.0)
    nodes.mark_down(A, now=0.0, for_s=5.0)
    assert nodes.preferred is None
    assert nodes.order(1.0) == [C, seed, A, B]  # down ones still come, last, soonest back first
    assert nodes.order(6.0)[-1] == B and nodes.order(11.0)[-1] == seed


def test_alive_nodes_are_spread_rather_than_always_the_first() -> None:
    nodes = NodeList([A], random.Random(7))
    nodes.learn(view((A, "alive"), (B, "alive"), (C, "alive")), A, now=0.0)
    assert {nodes.order(0.0)[0] for _ in range(50)} == {A, B, C}


def test_refresh_is_due_at_first_after_the_interval_and_after_a_failure() -> None:
    nodes = NodeList([A], random.Random(1))
    assert nodes.stale(0.0, 10.0)
    nodes.learn(view((A, "alive")), A, now=0.0)
    assert not nodes.stale(9.0, 10.0)
    assert nodes.stale(10.0, 10.0)
    nodes.postpone_refresh(10.0)
    assert not nodes.stale(11.0, 10.0)
    nodes.invalidate()
    assert nodes.stale(11.0, 10.0)


def test_a_client_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one"):
        NodeList([], random.Random(1))


def test_discovery_browses_one_explicit_interface_by_default() -> None:
    interfaces = default_interfaces()
    assert len(interfaces) == 1
    assert interfaces[0] not in ("0.0.0.0", "")


# -- choosing, failing over, retrying ---------------------------------------------------------


def test_first_request_learns_the_mesh_then_sends_with_deadline_hint_and_id() -> None:
    clock = Clock()
    plan = planner([A], clock, fresh=False)

    def network(action: Send) -> httpx.Response:
        if action.url.endswith("/v1/mesh"):
            return answer(200, view((B, "alive"), self_id="other"))
        return answer(200, {"ok": True}, **{"X-Mesh-Route": "node1, node2", "X-Request-Id": "r9"})

    opened, actions = drive(plan.exchange(request(7.5, hint="lora-a", request_id="r9")), network, clock)
    assert sent_to(actions) == [f"{A}/v1/mesh", f"{B}/v1/predict/echo"]
    headers = actions[-1].headers
    assert headers["X-Request-Timeout"] == "7.5"
    assert headers["X-Mesh-Hint"] == "lora-a"
    assert headers["X-Request-Id"] == "r9"
    assert actions[-1].timeout.connect == ClientOptions().connect_timeout_s
    assert opened.node == B
    assert plan.nodes.preferred == B
    # Fresh view: the next request goes straight to the node that answered.
    _, actions = drive(plan.exchange(request()), network, clock)
    assert sent_to(actions) == [f"{B}/v1/predict/echo"]


def test_a_refused_connection_fails_over_and_marks_the_node_down() -> None:
    clock = Clock()
    plan = planner([A, B], clock)
    plan.nodes.learn(view((A, "alive"), (B, "alive")), A, now=clock.now)
    plan.nodes.mark_good(A)

    def network(action: Send) -> httpx.Response | Exception:
        if action.url.startswith(A):
            return refused(action)
        return answer(200, view((A, "alive"), (B, "alive"))) if action.url.endswith("/v1/mesh") else answer()

    opened, actions = drive(plan.exchange(request()), network, clock)
    assert sent_to(actions) == [f"{A}/v1/predict/echo", f"{B}/v1/predict/echo"]
    assert opened.node == B
    # The next request refreshes the view (a node failed), then keeps away from A, still in the view.
    _, actions = drive(plan.exchange(request()), network, clock)
    assert sent_to(actions) == [f"{B}/v1/mesh", f"{B}/v1/predict/echo"]


@pytest.mark.parametrize(
    "failure",
    [httpx.RemoteProtocolError("server disconnected"), httpx.ReadError("reset"), httpx.ConnectTimeout("")],
)
def test_a_node_that_drops_the_request_before_answering_is_failed_over(failure: Exception) -> None:
    clock = Clock()
    plan = planner([A, B], clock)
    plan.nodes.mark_good(A)
    opened, actions = drive(
        plan.exchange(request()), lambda a: failure if a.url.startswith(A) else answer(), clock
    )
    assert opened.node == B
    assert len(sent_to(actions)) == 2


def test_every_node_unreachable_is_no_node_available_naming_them() -> None:
    clock = Clock()
    plan = planner([A, B], clock)
    with pytest.raises(NoNodeAvailable) as caught:
        drive(plan.exchange(request()), refused, clock)
    assert A in str(caught.value) and B in str(caught.value)
    assert caught.value.retryable


def test_503_fails_over_at_once_without_using_a_retry() -> None:
    clock = Clock()
    plan = planner([A, B], clock)
    plan.nodes.mark_good(A)

    def network(action: Send) -> httpx.Response:
        return (
            error_answer(503, "not_ready", **{"Retry-After": "3"}) if action.url.startswith(A) else answer()
        )

    opened, actions = drive(plan.exchange(request()), network, clock)
    assert opened.node == B
    assert not [action for action in actions if isinstance(action, Pause)]
    assert plan.nodes.order(clock.now)[-1] == A  # A asked for 3 s of peace


def test_503_everywhere_is_raised_unless_retries_were_asked_for() -> None:
    clock = Clock()
    busy = error_answer(503, "not_ready", "loading", **{"Retry-After": "2"})
    plan = planner([A, B], clock)
    with pytest.raises(Unavailable) as caught:
        drive(plan.exchange(request()), lambda action: busy, clock)
    assert caught.value.status == 503 and caught.value.retry_after_s == 2.0

    calls: list[str] = []

    def loading_then_ready(action: Send) -> httpx.Response:
        calls.append(action.url)
        return busy if len(calls) <= 2 else answer()

    patient = planner([A, B], clock, retries=2)
    opened, actions = drive(patient.exchange(request()), loading_then_ready, clock)
    assert [action for action in actions if isinstance(action, Pause)] == [Pause(2.0)]
    assert isinstance(opened, Opened)


def test_429_is_not_failed_over_and_is_retried_after_retry_after_only_when_asked() -> None:
    clock = Clock()
    full = error_answer(429, "overloaded", "queue full", **{"Retry-After": "1"})
    plan = planner([A, B], clock)
    with pytest.raises(Unavailable) as caught:
        drive(plan.exchange(request()), lambda action: full, clock)
    assert caught.value.status == 429 and caught.value.retryable

    replies = iter([full, answer()])
    patient = planner([A, B], clock, retries=3)
    _, actions = drive(patient.exchange(request()), lambda action: next(replies), clock)
    assert [type(action).__name__ for action in actions] == ["Send", "Read", "Pause", "Send"]


def test_a_retry_that_would_wait_past_the_deadline_is_not_waited_for() -> None:
    clock = Clock()
    plan = planner([A], clock, retries=5)
    full = error_answer(429, "overloaded", **{"Retry-After": "30"})
    with pytest.raises(Unavailable):
        drive(plan.exchange(request(timeout_s=10.0)), lambda action: full, clock)


@pytest.mark.parametrize(("status", "kind"), [(404, "not_found"), (422, "unprocessable"), (500, "predictor")])
def test_a_definite_answer_is_raised_without_asking_another_node(status: int, kind: str) -> None:
    clock = Clock()
    plan = planner([A, B], clock, retries=3)
    actions: list[Send] = []

    def network(action: Send) -> httpx.Response:
        actions.append(action)
        return error_answer(status, kind)

    with pytest.raises(RequestFailed) as caught:
        drive(plan.exchange(request()), network, clock)
    assert len(actions) == 1
    assert caught.value.status == status and caught.value.kind == kind


def test_the_deadline_bounds_failovers() -> None:
    clock = Clock()
    plan = planner([A, B, C], clock)

    def slow_refusal(action: Send) -> Exception:
        clock.now += 4.0  # a black-holed address: the connect timeout runs out
        return httpx.ConnectTimeout("timed out")

    with pytest.raises(RequestTimeout, match="within 5 s"):
        drive(plan.exchange(request(timeout_s=5.0)), slow_refusal, clock)


def test_a_node_silent_past_the_deadline_is_a_timeout_not_a_failover() -> None:
    clock = Clock()
    plan = planner([A, B], clock)
    actions: list[Send] = []

    def silent(action: Send) -> Exception:
        actions.append(action)
        clock.now += action.timeout.read or 0.0
        return httpx.ReadTimeout("timed out")

    with pytest.raises(RequestTimeout):
        drive(plan.exchange(request(timeout_s=5.0)), silent, clock)
    assert len(actions) == 1  # the request may have run there: no second node after the deadline


def test_an_answer_that_breaks_after_it_started_is_never_sent_again() -> None:
    clock = Clock()
    plan = planner([A, B], clock, retries=3)
    sends: list[Send] = []

    def run() -> None:
        steps = fetch(plan, request())
        reply: object = None
        while not isinstance(action := step(steps, reply), Finished):
            if isinstance(action, Send):
                sends.append(action)
                reply = answer(200, {"big": True})
            else:  # reading the body of that 200
                reply = httpx.ReadError("connection reset mid-body")

    with pytest.raises(StreamBroken, match="mid-answer"):
        run()
    assert len(sends) == 1


def test_refresh_skips_nodes_that_do_not_answer_and_keeps_going_without_a_view() -> None:
    clock = Clock()
    plan = planner([A, B], clock, fresh=False)

    def network(action: Send) -> httpx.Response | Exception:
        if action.url.endswith("/v1/mesh"):
            return refused(action) if action.url.startswith(A) else answer(200, ["not", "a", "view"])
        return answer()

    plan.nodes.mark_good(A)
    opened, actions = drive(plan.exchange(request()), network, clock)
    assert sent_to(actions)[:2] == [f"{A}/v1/mesh", f"{B}/v1/mesh"]
    assert opened.node == B
    assert not plan.nodes.stale(clock.now, plan.options.refresh_interval_s)  # not asked again at once


@pytest.mark.parametrize(
    "options",
    [{"timeout_s": 0}, {"timeout_s": 3601}, {"retries": -1}, {"node_down_s": 0}, {"deadline_grace_s": -1}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientOptions(**options)


def test_the_docs_state_the_option_defaults_of_the_code() -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "client.md").read_text()
    defaults = ClientOptions()
    rows = {
        "timeout": "timeout_s",
        **{name: name for name in ("retries", "refresh_interval_s", "node_down_s")},
    }
    rows["connect_timeout_s"] = "connect_timeout_s"
    for argument, field in rows.items():
        assert f"| `{argument}` | {getattr(defaults, field)!r} |" in page, argument
    for fixed in ("mesh_timeout_s", "deadline_grace_s"):
        assert f"`{fixed}` = {getattr(defaults, fixed)!r}" in page, fixed
    assert f"timeout_s={DISCOVER_TIMEOUT_S!r}" in page


def test_request_arguments_are_checked_and_stream_is_set_in_the_body() -> None:
    with meshnode.MeshClient("10.0.0.1:8470", timeout=5, hint="h") as client:
        request = client._request("a b/c", {"x": 1}, "text/event-stream", stream=True)
        assert request.deployment == "a%20b%2Fc"
        assert request.body == {"x": 1, "stream": True}
        assert (request.timeout_s, request.hint) == (5, "h")
        assert client._request("echo", None, "application/json", hint="other").hint == "other"
        for bad in ({"timeout": 0.0}, {"timeout": 4000.0}):
            with pytest.raises(ValueError, match="timeout"):
                client._request("echo", None, "application/json", **bad)
        with pytest.raises(ValueError, match="deployment"):
            client._request("", None, "application/json")
        assert client.nodes == ["http://10.0.0.1:8470"]


# -- answers and streams ----------------------------------------------------------------------


def opened(status: int = 200, content: bytes = b"", **headers: str) -> Opened:
    return Opened(httpx.Response(status, content=content, headers=headers), A)


def test_a_result_says_what_came_back_and_from_where() -> None:
    headers = {"content-type": "application/json", "X-Mesh-Route": "a,b", "X-Request-Id": "r1"}
    result = read_result(opened(content=b'{"y": 2}', **headers), b'{"y": 2}')
    assert (result.data, result.route, result.request_id, result.node) == ({"y": 2}, ("a", "b"), "r1", A)
    png = read_result(opened(**{"content-type": "image/png"}), b"\x89PNG")
    assert png.data == b"\x89PNG" and png.content_type == "image/png"
    raw = read_result(opened(**headers), b'{"y": 2}', decode=False)
    assert raw.data == b'{"y": 2}'
    with pytest.raises(StreamBroken, match="not valid JSON"):
        read_result(opened(**headers), b"{broken")


def feed(decoder: SseDecoder, text: str) -> list[Any]:
    for line in text.split("\n"):
        decoder.feed(line)
    return list(decoder.chunks)


def test_sse_chunks_are_json_or_text_and_done_ends_the_stream() -> None:
    decoder = SseDecoder()
    text = (
        ': a comment\n\ndata: {"i": 0}\n\ndata: Answer for life is: 1\n\n'
        "data: two\ndata: lines\n\ndata: \n\nevent: progress\ndata: 50\n\n"
        "event: done\ndata: {}\n\n"
    )
    assert feed(decoder, text) == [{"i": 0}, "Answer for life is: 1", "two\nlines", ""]
    assert decoder.done
    decoder.feed('data: {"late": 1}')
    decoder.feed("")
    decoder.feed(None)  # the end after `done` is the normal end
    assert len(decoder.chunks) == 4


def test_an_error_event_breaks_the_stream_with_its_type_and_message() -> None:
    decoder = SseDecoder(request_id="r7", node=A)
    error = '{"error": {"type": "predictor", "message": "stream broke", "request_id": "r7"}}'
    with pytest.raises(StreamBroken) as caught:
        feed(decoder, f'data: {{"i": 0}}\n\nevent: error\ndata: {error}\n\n')
    assert list(decoder.chunks) == [{"i": 0}]
    assert (caught.value.kind, caught.value.message, caught.value.request_id) == (
        "predictor",
        "stream broke",
        "r7",
    )


def test_a_stream_that_ends_without_done_was_cut_off() -> None:
    decoder = SseDecoder(node=A)
    feed(decoder, 'data: {"i": 0}\n\n')
    with pytest.raises(StreamBroken, match="before it was complete") as caught:
        decoder.feed(None)
    assert caught.value.kind == "disconnected"


def test_an_answer_that_is_not_an_event_stream_is_one_chunk() -> None:
    decoder = SseDecoder(whole=True)
    feed(decoder, '{"echo": {"stream": true},\n "x": 1}')
    assert decoder.wants_more()
    decoder.feed(None)
    assert list(decoder.chunks) == [{"echo": {"stream": True}, "x": 1}]
    assert decoder.done
    text = SseDecoder(whole=True)
    feed(text, "one\ntwo")
    text.feed(None)
    assert list(text.chunks) == ["one\ntwo"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, RequestRejected),
        (413, RequestRejected),
        (422, RequestRejected),
        (404, DeploymentNotFound),
        (429, Unavailable),
        (503, Unavailable),
        (504, GatewayTimeout),
        (500, PredictorFailed),
        (409, RequestFailed),
        (502, RequestFailed),
    ],
)
def test_statuses_map_to_the_error_tree(status: int, error_type: type[RequestFailed]) -> None:
    body = b'{"error": {"type": "t", "message": "why", "request_id": "r1"}}'
    error = error_from_answer(status, {"retry-after": "2"}, body, A)
    assert type(error) is error_type
    assert (error.status, error.kind, error.message, error.request_id, error.node) == (
        status,
        "t",
        "why",
        "r1",
        A,
    )
    assert str(error) == f"{status}: why"
    assert error.retryable == (status in (429, 503))
    assert error.retry_after_s == 2.0
    assert isinstance(error, ClientError) and isinstance(error, MeshnodeError)


def test_a_gateway_timeout_is_a_timeout_too() -> None:
    assert issubclass(GatewayTimeout, RequestTimeout) and issubclass(GatewayTimeout, RequestFailed)


def test_an_error_that_is_not_meshnode_json_still_says_something() -> None:
    error = error_from_answer(502, {"x-request-id": "r2"}, b"<html>bad gateway</html>", A)
    assert (error.kind, error.message, error.request_id) == ("http_error", "<html>bad gateway</html>", "r2")
    assert error_from_answer(502, {}, b"", A).message == "Bad Gateway"


def test_retry_after_is_seconds_or_a_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(email.utils.formatdate(now + 5, usegmt=True), now) == pytest.approx(5.0)
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_the_client_names_are_exported_lazily_from_meshnode() -> None:
    for name in (
        "MeshClient",
        "AsyncMeshClient",
        "ClientError",
        "NoNodeAvailable",
        "StreamBroken",
        "Unavailable",
    ):
        assert name in meshnode.__all__
        assert getattr(meshnode, name).__name__ == name


def test_prefer_first_keeps_the_first_seed_first_while_it_answers() -> None:
    nodes = NodeList(["http://a:1", "http://b:1"], random.Random(0), prefer_first=True)
    view = {
        "self": "b",
        "members": [
            {"id": "b", "http": "b:1", "status": "alive"},
            {"id": "c", "http": "c:1", "status": "alive"},
        ],
    }
    nodes.learn(view, "http://b:1", now=0.0)
    assert nodes.order(now=0.0)[0] == "http://a:1"
    nodes.mark_down("http://a:1", now=0.0, for_s=10.0)
    assert nodes.order(now=1.0)[0] != "http://a:1"
