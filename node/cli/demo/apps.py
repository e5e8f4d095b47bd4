"""The demo's apps and sample traffic: echo, stream, embeddings, the tiny text-to-image model and
the tiny chat model.

``plan`` spreads the five deployments over the demo's agents (pinned with ``--deploy``); ``wait_ready``
waits until each answers (telling ``progress`` which are ready so far), and ``run_samples`` sends
each a sample request, printing the answer and the node that served it (the ``X-Mesh-Route``
header): similarity of related and unrelated sentences, a stream as it arrives, a PNG saved to disk,
and a chat completion streamed through the ``openai`` SDK (``chat.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from .chat import chat_sample

APPS: tuple[tuple[str, str], ...] = (
    ("echo", "meshnode.apps.echo:Echo"),
    ("chat", "meshnode.apps.text_generation:TextGeneration"),
    ("stream", "meshnode.apps.stream:Stream"),
    ("embeddings", "meshnode.apps.embeddings:Embeddings"),
    ("t2i", "meshnode.apps.text_to_image:TextToImage"),
)
READY_TIMEOUT_S = 300.0  # first start builds the tiny pipeline and loads MiniLM on a small CPU
SENTENCES = (
    "A cat sits on the mat.",
    "A kitten is sitting on a rug.",
    "The stock market fell sharply today.",
)


class DemoAppError(Exception):
    """A demo app did not become ready or answered badly."""


def plan(nodes: int) -> dict[int, list[str]]:
    """Which agent pins which app, as `--deploy NAME=APP` arguments.

    echo runs on every node but the first (from three nodes up), so the first forwards every echo
    request and killing any other one leaves a replica; the other apps go round robin, starting at
    the second node, so that chat (first of them) is off the first node: the samples enter at the
    first node, and the chat sample shows a hop.
    """
    assignment: dict[int, list[str]] = {index: [] for index in range(nodes)}
    (echo_name, echo_app), *others = APPS
    for index in range(1 if nodes >= 3 else 0, nodes):
        assignment[index].append(f"{echo_name}={echo_app}")
    for position, (name, app) in enumerate(others, start=1):
        assignment[position % nodes].append(f"{name}={app}")
    return assignment


def run_samples(urls: Sequence[str], image_path: Path, say: Callable[[str], Any]) -> None:
    """Show one request to each demo app (once ``wait_ready``) and where it was served.

    Samples go to the first node whatever it hosts: any node serves any request.
    """
    with httpx.Client(timeout=60.0) as client:
        hosts = dict.fromkeys((name for name, _ in APPS), urls[0])
        _echo(client, hosts["echo"], say)
        _stream(client, hosts["stream"], say)
        _embeddings(client, hosts["embeddings"], say)
        _image(client, hosts["t2i"], image_path, say)
    chat_sample(urls[0], "chat", say)


def wait_ready(
    urls: Sequence[str], say: Callable[[str], Any], progress: Callable[[str], Any] = lambda _: None
) -> dict[str, str]:
    """Deployment name -> URL of the node that serves it, once each answers a warm-up request."""
    with httpx.Client(timeout=60.0) as client:
        return _wait_ready(client, urls, say, progress)


def _wait_ready(
    client: httpx.Client, urls: Sequence[str], say: Callable[[str], Any], progress: Callable[[str], Any]
) -> dict[str, str]:
    say("loading apps (first start builds the tiny diffusion and language models, loads MiniLM)...")
    deadline = time.monotonic() + READY_TIMEOUT_S
    hosts: dict[str, str] = {}
    warmups = {
        "echo": {},
        "stream": {"interval_s": 0},
        "embeddings": {"input": "warm"},
        "t2i": {"prompt": "warm"},
        "chat": {"prompt": "warm", "max_tokens": 1},
    }
    while len(hosts) < len(APPS):
        waiting = [name for name, _ in APPS if name not in hosts]
        progress(
            f"loading apps: ready {', '.join(sorted(hosts)) or 'none yet'}; waiting for {', '.join(waiting)}"
        )
        for name, _ in APPS:
            if name in hosts:
                continue
            for url in urls:
                try:
                    response = client.post(f"{url}/v1/predict/{name}", json=warmups[name])
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    hosts[name] = url
                    break
        if time.monotonic() > deadline:
            missing = sorted({name for name, _ in APPS} - set(hosts))
            raise DemoAppError(f"apps not ready after {READY_TIMEOUT_S:g} s: {', '.join(missing)}")
        if len(hosts) < len(APPS):
            time.sleep(0.5)  # model loading takes seconds; poll gently
    return hosts


def _served_by(response: httpx.Response) -> str:
    return response.headers.get("X-Mesh-Route", "?")


def _echo(client: httpx.Client, url: str, say: Callable[[str], Any]) -> None:
    response = client.post(f"{url}/v1/predict/echo", json={"hello": "mesh"})
    say(f"\necho        -> {json.dumps(response.json())}   [served by {_served_by(response)}]")


def _stream(client: httpx.Client, url: str, say: Callable[[str], Any]) -> None:
    body = {"text": "meshnode", "stream": True, "interval_s": 0.3}
    headers = {"Accept": "text/event-stream"}
    with client.stream("POST", f"{url}/v1/predict/stream", json=body, headers=headers) as response:
        say(f"stream      -> (pieces as they arrive)   [served by {_served_by(response)}]")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and not event:
                say(f"               {line[5:].strip()}")


def _embeddings(client: httpx.Client, url: str, say: Callable[[str], Any]) -> None:
    response = client.post(f"{url}/v1/predict/embeddings", json={"input": list(SENTENCES)})
    if response.status_code != 200:
        raise DemoAppError(f"embeddings answered {response.status_code}: {response.text[:200]}")
    vectors = [item["embedding"] for item in response.json()["data"]]
    related, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    say(f"embeddings  -> dim {len(vectors[0])}   [served by {_served_by(response)}]")
    say(f"               similarity({SENTENCES[0]!r}, {SENTENCES[1]!r}) = {related:.3f}")
    say(f"               similarity({SENTENCES[0]!r}, {SENTENCES[2]!r}) = {unrelated:.3f}")


def _image(client: httpx.Client, url: str, path: Path, say: Callable[[str], Any]) -> None:
    body = {"prompt": "a lighthouse at dusk", "seed": 7, "steps": 4, "height": 64, "width": 64}
    response = client.post(f"{url}/v1/predict/t2i", json=body, headers={"Accept": "image/png"})
    if response.status_code != 200 or response.headers.get("content-type") != "image/png":
        raise DemoAppError(f"t2i answered {response.status_code}: {response.text[:200]}")
    path.write_bytes(response.content)
    say(f"t2i         -> {path} ({len(response.content)} bytes PNG)   [served by {_served_by(response)}]")


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
