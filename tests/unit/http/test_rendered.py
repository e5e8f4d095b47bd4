"""JSON list bodies kept piece by piece (``http/rendered.py``): rendered once, again only on change."""

from __future__ import annotations

import asyncio
import json
import time

from meshnode.http.rendered import SLICE_S, RenderedList


class Counting:
    """A render function that notes which pieces it rendered."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, inputs: tuple[str, int]) -> bytes:
        self.calls.append(inputs[0])
        return json.dumps({"name": inputs[0], "value": inputs[1]}, separators=(",", ":")).encode()


def pieces(values: dict[str, int]) -> list[tuple[str, tuple[str, int]]]:
    return [(name, (name, value)) for name, value in values.items()]


def expected(values: dict[str, int]) -> list[dict[str, object]]:
    return [{"name": name, "value": value} for name, value in values.items()]


async def test_only_changed_pieces_are_rendered_again_and_the_body_follows_every_change() -> None:
    render = Counting()
    listed = RenderedList(b'{"items":[', b"]}", render)
    values = {f"p{index}": index for index in range(10)}
    assert json.loads(await listed.body(pieces(values))) == {"items": expected(values)}
    assert len(render.calls) == 10
    render.calls.clear()
    assert json.loads(await listed.body(pieces(values))) == {"items": expected(values)}
    assert render.calls == []  # an unchanged poll renders nothing
    values["p3"] = 33
    del values["p5"]
    values["new"] = 7
    assert json.loads(await listed.body(pieces(values))) == {"items": expected(values)}
    assert sorted(render.calls) == ["new", "p3"]
    assert json.loads(await listed.body([])) == {"items": []}


async def test_a_long_render_yields_to_the_event_loop_between_slices() -> None:
    events: list[str] = []

    def slow(inputs: tuple[str, int]) -> bytes:
        events.append("render")
        time.sleep(SLICE_S / 3)  # three pieces fill a slice
        return str(inputs[1]).encode()

    async def other_work() -> None:
        while len(events) < 30:
            events.append("other")
            await asyncio.sleep(0)

    listed = RenderedList(b"[", b"]", slow)
    values = {f"p{index}": index for index in range(20)}
    body, _ = await asyncio.gather(listed.body(pieces(values)), other_work())
    assert json.loads(body) == list(range(20))
    assert listed.slices >= 4
    first, last = events.index("render"), len(events) - events[::-1].index("render") - 1
    longest = max(len(run) for run in "".join("r" if e == "render" else "o" for e in events).split("o"))
    assert "other" in events[first:last]  # the loop ran other work while the body rendered
    assert longest <= 4  # a slice is about three pieces, never the whole render


async def test_polls_at_once_render_each_piece_once_and_each_answers_its_own_snapshot() -> None:
    render = Counting()
    listed = RenderedList(b"[", b"]", render)
    first = {f"p{index}": index for index in range(50)}
    second = {**first, "p7": 700}
    bodies = await asyncio.gather(listed.body(pieces(first)), listed.body(pieces(second)))
    assert [json.loads(body) for body in bodies] == [expected(first), expected(second)]
    assert len(render.calls) == 51  # the second poll waited, then rendered only p7
    assert await listed.body(pieces(first)) == bodies[0]  # p7's kept JSON is 700's: rendered again
    assert render.calls[-1] == "p7"


async def test_equal_inputs_that_are_other_objects_reuse_the_kept_piece() -> None:
    render = Counting()
    listed = RenderedList(b"[", b"]", render)
    await listed.body([("a", ("a", 1000))])
    await listed.body([("a", ("a", int("1000")))])  # an equal value, another object
    assert render.calls == ["a"]
