"""node/http/reply.py: a Reply's answer has the bytes and headers starlette's responses would send."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from meshnode.http.reply import json_bytes, reply_answer

NAMED = (("X-Mesh-Route", "n1,n2"), ("X-Mesh-Attempts", "2"))
RAW = ((b"x-mesh-route", b"n1,n2"), (b"x-mesh-attempts", b"2"), (b"x-request-id", b"abc"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


async def sent(app: Response | object) -> list[Message]:
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async def receive() -> Message:
        raise AssertionError("an answer reads nothing")

    await app({"type": "http"}, receive, send)  # type: ignore[operator]
    return messages


def starlette_bytes(response: Response) -> Response:
    response.headers["X-Request-Id"] = "abc"
    return response


@given(json_values)
async def test_json_data_is_sent_as_the_json_json_response_sends(data: object) -> None:
    expected = starlette_bytes(JSONResponse(data, headers=dict(NAMED)))
    ours, theirs = await sent(reply_answer(data, None, RAW)), await sent(expected)
    assert json.loads(ours[1]["body"]) == json.loads(theirs[1]["body"])
    assert ours[1]["body"].decode() == ours[1]["body"].decode("utf-8")  # UTF-8, no escapes needed
    assert set(ours[0]["headers"]) - set(theirs[0]["headers"]) <= {
        (b"content-length", str(len(ours[1]["body"])).encode())
    }
    assert len(ours[0]["headers"]) == len(theirs[0]["headers"])
    assert ours[0]["status"] == theirs[0]["status"] == 200


@pytest.mark.parametrize(
    "data",
    [
        {"text": "hello", "n": [1, 2.5, None, True], "ü": "✓"},
        {1: "a key that is not a string"},
        [2**64 - 1, -(2**63), 0.1, 1e16, 5e-324],
        {"s": "a string with null in it", "none": None},
    ],
)
async def test_what_json_response_sends_byte_for_byte_parses_the_same(data: object) -> None:
    ours, theirs = await sent(reply_answer(data, None, RAW)), await sent(JSONResponse(data))
    assert json.loads(ours[1]["body"]) == json.loads(theirs[1]["body"])


@pytest.mark.parametrize("content_type", ["image/png", "text/plain", "text/csv; charset=latin-1", None])
async def test_bytes_are_sent_as_they_are_with_the_type_the_predictor_gave(content_type: str | None) -> None:
    expected = starlette_bytes(Response(b"\x89PNG...", media_type=content_type, headers=dict(NAMED)))
    ours, theirs = await sent(reply_answer(b"\x89PNG...", content_type, RAW)), await sent(expected)
    assert ours[1] == theirs[1]
    assert sorted(ours[0]["headers"]) == sorted(theirs[0]["headers"])


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_or_infinity_in_an_answer_is_refused_as_json_response_refuses_it(number: float) -> None:
    with pytest.raises(ValueError):
        JSONResponse({"x": number})
    with pytest.raises(ValueError):
        reply_answer({"x": [number]}, None, RAW)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "place",
    [
        pytest.param(lambda x: {"vector": [0.5] * 383 + [x], "usage": None}, id="in-a-list-of-floats"),
        pytest.param(lambda x: {"rows": [[1, "a", None, (0.5, {"deep": [x]})]]}, id="deep-in-mixed-values"),
        pytest.param(lambda x: (None, x), id="in-a-tuple"),
    ],
)
def test_nan_or_infinity_is_found_wherever_it_is_among_nulls(
    number: float, place: Callable[[float], object]
) -> None:
    with pytest.raises(ValueError):
        reply_answer(place(number), None, RAW)
    fine = place(0.25)
    assert json.loads(json_bytes(fine)) == json.loads(json.dumps(fine))


def test_values_of_types_it_does_not_look_into_are_rendered_by_json_dumps() -> None:
    class Mapping(dict[str, object]):
        pass

    with pytest.raises(ValueError):
        json_bytes({"a": None, "b": Mapping(x=math.nan)})
    assert json.loads(json_bytes({"a": None, "b": Mapping(x=1.5)})) == {"a": None, "b": {"x": 1.5}}


async def test_what_is_left_of_the_call_runs_after_the_answer_left() -> None:
    messages: list[Message] = []
    seen_when_finishing: list[int] = []

    async def rest() -> AsyncIterator[object]:
        seen_when_finishing.append(len(messages))  # the bookkeeping after the call's Reply
        return
        yield

    async def send(message: Message) -> None:
        messages.append(message)

    answer = reply_answer({"x": 1}, None, RAW)
    answer.then = rest()
    await answer({"type": "http"}, _nothing_to_read, send)
    assert seen_when_finishing == [2]  # the start and the whole body were sent first


async def test_a_failure_after_the_answer_left_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def rest() -> AsyncIterator[object]:
        raise RuntimeError("bookkeeping broke")
        yield

    answer = reply_answer("ok", None, RAW)
    answer.then = rest()
    messages = await sent(answer)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert "finishing a call after its answer was sent" in caplog.text


async def _nothing_to_read() -> Message:
    raise AssertionError("an answer reads nothing")
