"""A tiny causal language model with random weights, built offline, and the loader for any causal LM.

Nothing can be fetched from a model hub here, yet text generation (tokenizer, chat template, KV cache,
sampling, streaming) should run end to end in tests and demos. ``build_tiny_lm`` makes a real
transformers ``LlamaForCausalLM`` from a config alone: 2 layers, width 64, 4 heads, a context of
``TINY_CONTEXT_TOKENS``. Its tokenizer is built in memory with the ``tokenizers`` library: one token per
character of printable ASCII and newline, plus ``<s>``, ``</s>``, ``<pad>`` and ``<unk>`` (any other
character), wrapped in ``PreTrainedTokenizerFast`` so ``save_pretrained``/``from_pretrained`` work. Every
id decodes to whole characters, so any generated sequence is valid text. The weights are random from a
fixed seed (drawn wider than usual, so greedy output varies instead of repeating one letter): its text is
gibberish, but the same seed gives the same files (about 0.5 MB) and the same prompt the same text.

The chat template: the tokenizer's own where it has one (real checkpoints ship theirs), else
``DEFAULT_CHAT_TEMPLATE``, which writes each message as ``role: content`` on its own line after the
tokenizer's bos token and, for a reply, ends with ``assistant:``. The tiny tokenizer is saved with it.

``load_causal_lm`` is the same code that loads real checkpoint folders (``AutoModelForCausalLM`` and
``AutoTokenizer``), always with ``local_files_only=True``: it never reaches the network.
"""

from __future__ import annotations

import shutil
import string
import uuid
from pathlib import Path
from typing import Any

from .runtime_torch import torch_device_and_dtype

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "TINY_CONTEXT_TOKENS",
    "build_tiny_lm",
    "chat_template_of",
    "ensure_tiny_lm",
    "load_causal_lm",
]

# Positions the tiny model has embeddings for: its prompt plus its completion must fit in them.
TINY_CONTEXT_TOKENS = 2048

# Plain "role: content" lines: readable, and made of characters every tokenizer can encode.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_BOS, _EOS, _PAD, _UNK = "<s>", "</s>", "<pad>", "<unk>"
# string.printable minus the vertical whitespace other than "\n" ("\r", "\x0b", "\x0c").
_CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]


def build_tiny_lm(directory: Path, *, seed: int = 0) -> Path:
    """Build the tiny random-weight causal LM from ``seed`` and save it to ``directory``; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _quiet()
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=TINY_CONTEXT_TOKENS,
        # Wider than the usual 0.02: with tiny random weights that gives peaked, varied next tokens,
        # so greedy text is not one letter repeated (which would make stop strings untestable).
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def ensure_tiny_lm(folder: Path, *, seed: int = 0) -> Path:
    """``folder``, holding the tiny LM: built there on first use, safely when processes race."""
    if (folder / "config.json").exists():
        return folder
    # Build beside the target and rename: two replicas sharing a data dir must never load a
    # half-written folder. The loser of a race deletes its copy and uses the winner's.
    scratch = folder.with_name(f".{folder.name}-{uuid.uuid4().hex}")
    build_tiny_lm(scratch, seed=seed)
    try:
        scratch.rename(folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (folder / "config.json").exists():
            raise
    return folder


def load_causal_lm(source: str | Path) -> tuple[Any, Any]:
    """The causal LM and its tokenizer from a ``save_pretrained`` folder, offline, on the best device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    device, dtype = torch_device_and_dtype()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    # Any: transformers' stubs type .to() as a decorator wrapper that mypy cannot follow.
    model: Any = AutoModelForCausalLM.from_pretrained(str(source), local_files_only=True, dtype=dtype)
    model = model.to(device).eval()
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return model, tokenizer


def chat_template_of(tokenizer: Any) -> str:
    """The template a chat prompt is written with: the tokenizer's own, else the documented default."""
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) and template else DEFAULT_CHAT_TEMPLATE


def build_tiny_tokenizer() -> Any:
    """The tiny model's character-level tokenizer, built in memory (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    specials = [_BOS, _EOS, _PAD, _UNK]
    vocab = {token: index for index, token in enumerate([*specials, *_CHARACTERS])}
    # BPE with no merges and no pre-tokenizer splits the whole text into single characters, spaces and
    # newlines included; a character outside the vocabulary becomes <unk>.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=_UNK))
    core.add_special_tokens(specials)
    # Fuse joins the pieces as they are; the default decoder would put spaces between characters.
    core.decoder = decoders.Fuse()
    # A raw prompt starts with <s>, as the chat template's output does.
    core.post_processor = processors.TemplateProcessing(
        single=f"{_BOS} $A", pair=f"{_BOS} $A $B", special_tokens=[(_BOS, vocab[_BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_PAD,
        unk_token=_UNK,
        model_max_length=TINY_CONTEXT_TOKENS,
        # Left padding: a batch's prompts end in the same column, where generation continues.
        padding_side="left",
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def _quiet() -> None:
    from transformers.utils import logging as transformers_logging

    # Progress bars for a 0.5 MB model are noise in worker logs and command output.
    transformers_logging.disable_progress_bar()
