"""The worker's moderation: a call's section refuses before the predictor runs, or refuses its answer."""

from __future__ import annotations

from typing import Any

from meshnode.inference.progress import report_progress
from meshnode.inference.worker import Worker
from meshnode.mesh.envelope import Call, Chunk, Failure, Progress, Reply
from meshnode.mesh.moderation import Moderation, category_in
from tests.unit.inference.test_worker import Sent

SECTION = Moderation.from_wire({"blocklist": [{"category": "banned_term", "terms": ["napalm"]}]}).to_wire()


class Checked:
    """Echoes; its output check refuses answers that say "unsafe", and it reports progress with a preview."""

    def __init__(self) -> None:
        self.ran: list[dict[str, Any]] = []

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        self.ran.append(request)
        report_progress(1, 1, b"\xff\xd8\xff preview")
        return {"said": request.get("say", "")}

    async def async_predict(self, request: dict[str, Any]) -> Any:
        for word in ("fine", "unsafe", "never sent"):
            yield word

    def check_output(self, result: Any) -> str | None:
        return "nsfw" if "unsafe" in str(result) else None


def moderated(rid: str, body: dict[str, Any], *, stream: bool = False, section: Any = SECTION) -> Call:
    return Call(rid, "dep", body, None, stream, "", 10_000, progress=True, moderation=section)


async def test_a_blocked_prompt_is_refused_before_the_predictor_runs() -> None:
    app, sent = Checked(), Sent()
    worker = Worker(app, "r1", sent)
    worker.handle(moderated("q1", {"prompt": "N-A-P-A-L-M"}))
    failure = await sent.final("q1")
    assert isinstance(failure, Failure) and failure.kind == "moderation" and not failure.retryable
    assert category_in(failure.message) == "banned_term" and "napalm" not in failure.message.lower()
    assert app.ran == []
    worker.handle(moderated("q2", {"prompt": "a nap under a palm tree"}))
    assert isinstance(await sent.final("q2"), Reply)
    worker.close()


async def test_an_answer_the_app_flags_never_leaves_and_previews_are_dropped() -> None:
    app, sent = Checked(), Sent()
    worker = Worker(app, "r1", sent)
    worker.handle(moderated("q1", {"say": "unsafe"}))
    failure = await sent.final("q1")
    assert isinstance(failure, Failure) and category_in(failure.message) == "nsfw"
    assert not any(isinstance(m, Reply) for m in sent.of("q1"))
    assert [m.preview for m in sent.of("q1") if isinstance(m, Progress)] == [None]
    # Without a section, nothing is checked and the preview goes out.
    worker.handle(Call("q2", "dep", {"say": "unsafe"}, None, False, "", 10_000, progress=True))
    assert await sent.final("q2") == Reply("q2", {"said": "unsafe"}, "application/json")
    assert [m.preview for m in sent.of("q2") if isinstance(m, Progress)] == [b"\xff\xd8\xff preview"]
    worker.close()


async def test_a_stream_ends_at_the_first_piece_the_app_flags() -> None:
    sent = Sent()
    worker = Worker(Checked(), "r1", sent)
    worker.handle(moderated("s1", {"prompt": "hello"}, stream=True))
    await sent.final("s1")
    messages = sent.of("s1")
    assert messages[0] == Chunk("s1", 0, "fine")
    assert isinstance(messages[-1], Failure) and category_in(messages[-1].message) == "nsfw"
    assert not any(isinstance(m, Chunk) and m.data != "fine" for m in messages)
    worker.close()


async def test_a_section_with_check_output_off_passes_answers() -> None:
    sent = Sent()
    worker = Worker(Checked(), "r1", sent)
    worker.handle(moderated("q1", {"say": "unsafe"}, section={**SECTION, "check_output": False}))
    assert isinstance(await sent.final("q1"), Reply)
    worker.close()
