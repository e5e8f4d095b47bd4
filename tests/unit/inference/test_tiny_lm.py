"""The tiny offline causal LM: built from a seed, saved, loaded back offline with its chat template."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from meshnode.inference.tiny_lm import (
    DEFAULT_CHAT_TEMPLATE,
    build_tiny_lm,
    build_tiny_tokenizer,
    chat_template_of,
    ensure_tiny_lm,
    load_causal_lm,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def loaded(tiny: Path) -> tuple[Any, Any]:
    return load_causal_lm(tiny)


def test_the_tokenizer_round_trips_printable_text_one_token_per_character() -> None:
    tokenizer = build_tiny_tokenizer()
    text = "Hello, world!\n\tx = [1, 2] ~ {}"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_a_character_outside_the_vocabulary_becomes_unk() -> None:
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer("aé", add_special_tokens=False)["input_ids"]
    assert ids[1] == tokenizer.unk_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a"


def test_any_id_sequence_decodes_to_valid_text() -> None:
    tokenizer = build_tiny_tokenizer()
    ids = [random.Random(3).randrange(len(tokenizer)) for _ in range(500)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert "\ufffd" not in text
    text.encode("utf-8")


def test_the_default_chat_template_writes_role_lines_and_a_reply_prompt(loaded: tuple[Any, Any]) -> None:
    _, tokenizer = loaded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s>system: Be brief.\nuser: Hi\nassistant:"


def test_the_same_seed_builds_the_same_weights(tiny: Path, tmp_path: Path) -> None:
    again = build_tiny_lm(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()


def test_the_loaded_model_has_the_tiny_config_and_special_tokens(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    assert model.config.num_hidden_layers == 2
    assert model.config.hidden_size == 64
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert not model.training


def test_a_checkpoint_with_its_own_template_keeps_it_and_one_without_gets_the_default(
    tiny: Path, tmp_path: Path
) -> None:
    import shutil

    own = tmp_path / "own"
    shutil.copytree(tiny, own)
    (own / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    _, tokenizer = load_causal_lm(own)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "[x]"

    bare = tmp_path / "bare"
    shutil.copytree(tiny, bare)
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    _, tokenizer = load_causal_lm(bare)
    assert chat_template_of(tokenizer) == DEFAULT_CHAT_TEMPLATE


def test_ensure_builds_once_and_then_reuses(tmp_path: Path) -> None:
    folder = ensure_tiny_lm(tmp_path / "models" / "tiny-lm")
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert ensure_tiny_lm(folder) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-lm"]  # no scratch folder left
