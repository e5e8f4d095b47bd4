"""SSE streams of a real agent say ``: keep-alive`` while a slow predictor thinks (issue 16).

One agent started with ``--set sse_keepalive_s=0.25`` serves ``apps/stream.py`` (pieces
``interval_s`` apart) and the OpenAI test app ``Words`` (``hold-after:`` waits seconds after its
first word). A predict stream and a chat completion stream must carry comments in their quiet
spells, every piece still in order; the newline-delimited predict stream (no comments in that
format) carries none; the OpenAI SDK reads the commented stream as usual.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

openai = pytest.importorskip("openai", reason="the test extra installs the OpenAI SDK")

KEEPALIVE_S = 0.25
WORDS_APP = Path(__file__).parent / "openai_apps.py"
ARGS = [
    *("--deploy", "stream=meshnode.apps.stream:Stream"),
    *("--deploy", f"words={WORDS_APP}:Words"),
    *("--set", f"sse_keepalive_s={KEEPALIVE_S}"),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with Mesh(tmp_path_factory.mktemp("keepalive"), 1, extra_args={0: ARGS}) as mesh:
        agent = mesh.agents[0]
        for name in ("stream", "words"):
            wait_for(
                lambda name=name: agent.get(f"/v1/deployments/{name}").json().get("ready") == 1,
                120,
                0.2,
                agent.describe,
            )
        yield agent


def timed_chunks(response: httpx.Response) -> list[tuple[float, bytes]]:
    """Each SSE message or comment (up to its blank line) with when it arrived."""
    messages, buffer = [], b""
    for raw in response.iter_raw():
        buffer += raw
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            messages.append((time.monotonic(), message))
    return messages


def test_a_predict_stream_says_keep_alive_between_slow_pieces(agent: AgentProcess) -> None:
    body = {"text": "life", "stream": True, "interval_s": 1.0}
    headers = {"Accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{agent.url}/v1/predict/stream", json=body, headers=headers, timeout=30, trust_env=False
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = timed_chunks(response)
    kinds = [b"comment" if m.startswith(b":") else m.split(b"\n")[0] for _, m in messages]
    data = [m for _, m in messages if m.startswith(b"data:")]
    assert len(data) == 5 and messages[-1][1].startswith(b"event: done"), kinds
    assert not messages[0][1].startswith(b":"), "the first piece comes first, without waiting"
    comments = [at for at, m in messages if m == b": keep-alive"]
    # Four gaps of 1 s hold about twelve comments at 0.25 s; a busy machine may fit fewer.
    assert len(comments) >= 4, kinds
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(messages)]
    assert max(gaps) < 0.9, f"no quiet spell of a second: {gaps}"


def test_a_newline_delimited_stream_has_no_comments(agent: AgentProcess) -> None:
    body = {"text": "life", "stream": True, "interval_s": 0.4}
    with httpx.stream(
        "POST", f"{agent.url}/v1/predict/stream", json=body, timeout=30, trust_env=False
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert len(lines) == 5 and not any(line.startswith(":") for line in lines), lines


def test_a_chat_stream_says_keep_alive_while_the_model_thinks(agent: AgentProcess, tmp_path: Path) -> None:
    # Words writes its pid to the hold-after path, then waits three seconds after the first word.
    prompt = f"one hold-after:{tmp_path / 'pid'} two"
    messages = [{"role": "user", "content": prompt}]
    body = {"model": "words", "messages": messages, "stream": True, "max_tokens": 4}
    with httpx.stream(
        "POST", f"{agent.url}/v1/chat/completions", json=body, timeout=30, trust_env=False
    ) as response:
        assert response.status_code == 200, response.read()
        events = [m for _, m in timed_chunks(response)]
    assert events.count(b": keep-alive") >= 6, events
    assert events[-1] == b"data: [DONE]", events[-1]
    first_word = next(i for i, m in enumerate(events) if b'"content":"one"' in m)
    assert events[first_word + 1] == b": keep-alive", "the hold comes after the first word"

    # The SDK skips the comments and reads every word.
    with openai.OpenAI(base_url=f"{agent.url}/v1", api_key="unused-on-loopback", max_retries=0) as sdk:
        chunks = sdk.chat.completions.create(model="words", messages=messages, stream=True, max_tokens=4)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "one two one two", text


def test_the_mesh_feed_says_keep_alive_at_the_same_interval(agent: AgentProcess) -> None:
    # Between its snapshots (every 3 s) an idle mesh says nothing else: the comments fill the gap.
    comments = 0
    with httpx.stream("GET", f"{agent.url}/v1/events", timeout=30, trust_env=False) as response:
        assert response.status_code == 200
        started, buffer = time.monotonic(), b""
        for raw in response.iter_raw():
            buffer += raw
            comments = buffer.count(b": keep-alive\n\n")
            if comments >= 3 or time.monotonic() - started > 20:
                break
    assert comments >= 3
