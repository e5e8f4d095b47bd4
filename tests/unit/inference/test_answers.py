"""plain: a predictor's result as values msgpack carries, the common shapes without a walk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meshnode.inference.answers import plain


def test_a_list_of_plain_values_is_kept_as_it_is() -> None:
    vector = [0.25] * 384
    assert plain(vector) is vector
    mixed = [1, 2.5, "a", True, None, b"raw"]
    assert plain(mixed) is mixed
    flat = {"echo": "hi", "n": 3}
    assert plain(flat) is flat


def test_anything_else_is_converted_all_the_way_down() -> None:
    array = np.arange(3, dtype=np.float32)
    result = {"path": Path("/tmp/x.png"), 7: (1, 2), "rows": [array, [np.float64(0.5)]], "ok": [1.0]}
    assert plain(result) == {"path": "/tmp/x.png", "7": [1, 2], "rows": [[0.0, 1.0, 2.0], [0.5]], "ok": [1.0]}
    converted = plain([np.float32(1.5), 2.0])
    assert converted == [1.5, 2.0] and type(converted[0]) is float
