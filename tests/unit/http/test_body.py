"""node/http/body.py: bodies the mesh can carry are parsed; the rest get 400 or 422 saying what is wrong."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from meshnode.errors import BadRequest, PayloadTooLarge, Unprocessable
from meshnode.http import body as body_module
from meshnode.http.body import MAX_DEPTH, _loads, parse_json, parse_json_object, receive_body


def test_an_object_is_parsed_and_an_empty_body_is_an_empty_object() -> None:
    assert parse_json_object(b'{"text": "hi", "n": [1, 2.5, null]}') == {"text": "hi", "n": [1, 2.5, None]}
    assert parse_json_object(b"  ") == {}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param(b'{"x": NaN}', "NaN is not a JSON number", id="nan"),
        pytest.param(b'{"x": Infinity}', "Infinity is not a JSON number", id="infinity"),
        pytest.param(b'{"x": -Infinity}', "-Infinity is not a JSON number", id="minus-infinity"),
        pytest.param(b'{"x": 1e400}', "too large for a double", id="overflowing-float"),
        pytest.param(b'{"x": ', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="recursion"),
    ],
)
def test_what_is_not_json_is_a_400(raw: bytes, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_json_object(raw)
    assert type(refused.value) is BadRequest and refused.value.status == 400
    assert says in refused.value.message


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param(b'{"a": {"b": 18446744073709551616}}', "$.a.b", id="integer-over-2^64"),
        pytest.param(b'{"a": [0, -9223372036854775809]}', "$.a[1]", id="integer-under-2^63"),
        pytest.param(b'{"s": "\\ud800"}', "surrogate", id="lone-surrogate"),
        pytest.param(b'{"\\udfff": 1}', "(a key)", id="surrogate-in-a-key"),
        # A surrogate's UTF-8 bytes: not UTF-8, but json reads them (surrogatepass); msgpack cannot.
        pytest.param(b'{"s": "\xed\xa0\x80"}', "surrogate", id="surrogate-as-bytes"),
        pytest.param(b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "deeper than", id="too-deep"),
        pytest.param(b"[1, 2]", "must be a JSON object, not an array", id="array"),
        pytest.param(b'"text"', "not a string", id="string"),
    ],
)
def test_json_the_mesh_cannot_carry_is_a_422_that_says_where(raw: bytes, says: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        parse_json_object(raw)
    assert refused.value.status == 422
    assert says in refused.value.message


def test_containers_nest_64_deep_and_no_deeper() -> None:
    deepest = json.loads("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH)  # 64 arrays, a number in the last
    assert parse_json(json.dumps(deepest).encode()) == deepest
    many = {"many": [deepest[0][0]] * 100}  # an object, an array, 62 arrays: 64, many brackets
    assert parse_json(json.dumps(many).encode()) == many
    with pytest.raises(Unprocessable, match="deeper than 64"):
        parse_json(json.dumps({"many": [deepest[0]] * 100}).encode())  # 65


@pytest.mark.parametrize(
    ("raw", "long_integer"),
    [
        pytest.param(b'{"v": [0.00012345678901234567, 1.2345678901234567e-05]}', False, id="float-digits"),
        pytest.param(b'{"v": [1e-00000000000000000001, 12345678901234567890.5]}', False, id="float-parts"),
        pytest.param(b'{"n": 1234567890123456789}', True, id="integer"),
        pytest.param(b'{"n": -12345678901234567890}', True, id="negative-integer"),
    ],
)
def test_only_a_long_integer_leaves_orjson_for_json(raw: bytes, long_integer: bool) -> None:
    # orjson reads an integer past 64 bits as a float; a float's many digits it reads as json does.
    assert _loads(raw) == (json.loads(raw), not long_integer)


def test_the_extremes_the_mesh_carries_pass() -> None:
    # json.dumps escapes the emoji as a surrogate pair, "\ud83d\ude00": a pair is fine, alone is not.
    body = {"max": 2**64 - 1, "min": -(2**63), "pair": "\N{GRINNING FACE}", "deep": [[[]]]}
    assert b"\\ud83d\\ude00" in json.dumps(body).encode()
    assert parse_json_object(json.dumps(body).encode()) == body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_whatever_it_accepts_msgpack_carries(body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()
    try:
        parsed = parse_json_object(raw)
    except BadRequest:
        return  # refused with a status and a reason: fine
    msgpack.packb(parsed, use_bin_type=True)  # never raises for an accepted body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"]),
)
def test_the_body_parses_as_json_loads_parses_it_in_every_encoding_json_detects(
    body: dict[str, object], encoding: str
) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode(encoding, "surrogatepass")
    assert parse_json_object(raw) == json.loads(raw)


def _receiver(*messages: Message) -> tuple[Receive, list[Message]]:
    queue = list(messages)
    taken: list[Message] = []

    async def receive() -> Message:
        taken.append(queue.pop(0))
        return taken[-1]

    return receive, taken


def _request(body: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def _never() -> str:
    raise AssertionError("the 413's words were made for a body within the limit")


async def test_a_body_is_received_in_one_message_or_joined_from_several() -> None:
    receive, _ = _receiver(_request(b'{"a": 1}'))
    assert await receive_body(receive, "8", 100, _never) == b'{"a": 1}'
    receive, taken = _receiver(_request(b'{"a"', True), _request(b"", True), _request(b": 1}"))
    assert await receive_body(receive, None, 100, _never) == b'{"a": 1}'
    assert len(taken) == 3


async def test_a_declared_size_over_the_limit_is_a_413_after_the_body_is_read() -> None:
    receive, taken = _receiver(_request(b"x" * 60, True), _request(b"x" * 60))
    with pytest.raises(PayloadTooLarge, match="too big"):
        await receive_body(receive, "120", 100, lambda: "too big")
    assert len(taken) == 2  # drained: the client reads the answer instead of a reset


async def test_a_counted_size_over_the_limit_is_a_413_after_the_body_is_read() -> None:
    receive, taken = _receiver(_request(b"x" * 60, True), _request(b"x" * 60, True), _request(b"x"))
    with pytest.raises(PayloadTooLarge, match="too big"):
        await receive_body(receive, None, 100, lambda: "too big")
    assert len(taken) == 3
    receive, _ = _receiver(_request(b"x" * 101))
    with pytest.raises(PayloadTooLarge):
        await receive_body(receive, None, 100, lambda: "too big")


async def test_a_client_that_leaves_while_sending_is_a_client_disconnect() -> None:
    receive, _ = _receiver(_request(b"{", True), {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        await receive_body(receive, None, 100, _never)


def _as_json_module_reads(raw: bytes) -> object:
    """What parse_json answered when it was json.loads with its hooks alone (the reference)."""
    try:
        value = json.loads(raw, parse_constant=body_module._not_a_number, parse_float=body_module._finite)
    except RecursionError:
        return ("400", "nested")
    except (ValueError, UnicodeDecodeError) as exc:
        return ("400", str(exc))
    try:
        body_module._check(value, "$", 1, "request body")
    except Unprocessable as exc:
        return ("422", exc.message)
    return value


def _as_parse_json_reads(raw: bytes) -> object:
    try:
        return parse_json(raw)
    except Unprocessable as exc:  # a BadRequest too: first
        return ("422", exc.message)
    except BadRequest as exc:
        return ("400", "nested" if "nested too deeply" in exc.message else exc.message.split("JSON: ", 1)[1])


json_texts = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
    st.sampled_from(
        [
            b"NaN",
            b"[1e400]",
            b"-Infinity",
            b"[18446744073709551616]",
            b"[-9223372036854775809]",
            b"1E2",
            b"-0",
            b"[-0.0, 1e-400]",
            b'"\\ud800"',
            b'{"a": 1, "a": 2}',
            b"\xef\xbb\xbf{}",
            b'"\x01"',
            b"[" * 70 + b"]" * 70,
            b"[" * 2000 + b"]" * 2000,
            b" 5 ",
            b'"\xff"',
            b"{",
            b"",
        ]
    ),
)


@given(json_texts, st.data())
def test_the_body_reads_as_json_alone_read_it_values_and_errors_alike(
    raw: bytes, data: st.DataObject
) -> None:
    if raw and data.draw(st.booleans()):  # and a byte changed: broken JSON must break alike
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1 :]
    ours, reference = _as_parse_json_reads(raw), _as_json_module_reads(raw)
    assert ours == reference
    assert repr(ours) == repr(reference)  # 1 and 1.0, 0.0 and -0.0 alike too
