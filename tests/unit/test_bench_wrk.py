"""bench/wrk.py's script holds any JSON body whole: a body of nested lists (``]]``) no longer ends
the Lua long string early (``bench/forwarding.py --body`` with an embedding batch did)."""

from __future__ import annotations

import json

import pytest

from .bench_scripts import load_bench

bench = load_bench("wrk")


@pytest.mark.parametrize(
    "body",
    [
        '{"text": "hello"}',
        json.dumps({"embeddings": [[0.5] * 3] * 2}),
        '{"a": "]]", "b": "]=]", "c": "]==]"}',
    ],
)
def test_the_body_sits_between_brackets_it_does_not_hold(body: str) -> None:
    line = bench.wrk_script(body).splitlines()[1]
    opening = line[len("wrk.body = ") : line.index("[", len("wrk.body = ") + 1) + 1]
    closing = opening.replace("[", "]")
    assert line == f"wrk.body = {opening}{body}{closing}"
    assert closing not in body
