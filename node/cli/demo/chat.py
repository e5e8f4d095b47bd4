"""The demo's chat sample: the ``openai`` SDK, pointed at one node, streams a chat completion that
another node generates (a hop), token by token as the model produces them.

The tiny offline language model has random weights, so its words are noise; the point is the path.
Point ``MESHNODE_LM_MODEL`` at a real checkpoint folder and the same call chats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

__all__ = ["CHAT_MESSAGES", "chat_sample"]

CHAT_MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three things a mesh of machines can serve."},
]
MAX_TOKENS = 24


def chat_sample(url: str, deployment: str, say: Callable[[str], Any]) -> None:
    """Stream one chat completion through the node at `url` with the openai SDK, as it arrives."""
    from openai import OpenAI  # the demo's one outside client; installed with meshnode[torch]

    # Loopback needs no API key; the SDK insists on one, so any placeholder does.
    client = OpenAI(base_url=f"{url}/v1", api_key="loopback-needs-no-key", max_retries=2)
    raw = client.chat.completions.with_raw_response.create(
        model=deployment, messages=CHAT_MESSAGES, max_tokens=MAX_TOKENS, stream=True, seed=7
    )
    route = raw.headers.get("X-Mesh-Route", "?")
    say(f"chat        -> openai SDK, stream=True, entering {url}   [route {route}]")
    began = time.monotonic()
    first_s: float | None = None
    pieces = 0
    text = []
    for chunk in cast("Iterable[ChatCompletionChunk]", raw.parse()):
        for choice in chunk.choices:
            delta = choice.delta.content or ""
            if delta:
                first_s = first_s if first_s is not None else time.monotonic() - began
                pieces += 1
                text.append(delta)
    total_s = time.monotonic() - began
    say(f"               {''.join(text)!r}")
    say(
        f"               {pieces} pieces, first after {1000 * (first_s or total_s):.0f} ms, "
        f"all in {1000 * total_s:.0f} ms (tiny random-weight model: noise by design)"
    )
