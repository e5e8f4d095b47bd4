"""node/http/body.py: bodies the mesh can carry are parsed; the rest get 400 or 422 saying what is wrong."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.errors import BadRequest, Unprocessable
from meshnode.http.body import MAX_DEPTH, parse_json_object


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
