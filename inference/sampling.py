"""Choosing the next token from a row of logits: greedy at temperature 0, else nucleus sampling.

Each request brings its own ``torch.Generator``: a seeded request draws the same numbers whatever
else shares its batch, so its text depends on its seed and its logits alone. Those logits are the
same batched or not up to float rounding (padding changes the order of a few additions), so a seeded
request repeats its unbatched text except where two candidates' probabilities differ by less than
that rounding. Temperature divides the logits; ``top_p`` keeps the smallest set of most likely tokens
whose probabilities add up to at least ``top_p`` (Holtzman et al. 2019, "nucleus sampling"), always
at least the single most likely one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["SamplingParams", "choose_token", "nucleus_probabilities"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request picks its tokens: ``temperature`` 0 is greedy; ``seed`` None is unseeded."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """Whether this request takes the most likely token every time (no randomness at all)."""
        return self.temperature == 0.0


def nucleus_probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution to draw from: softmax(logits / temperature), cut to its top_p nucleus."""
    import torch

    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probabilities
    ordered, order = torch.sort(probabilities, descending=True)
    # A token stays when the mass before it is still short of top_p, so the first always stays.
    mass_before = torch.cumsum(ordered, dim=-1) - ordered
    ordered = torch.where(mass_before < top_p, ordered, torch.zeros_like(ordered))
    kept = torch.zeros_like(probabilities).scatter(-1, order, ordered)
    return kept / kept.sum(dim=-1, keepdim=True)


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token id for one row of logits (shape ``[vocab]``)."""
    import torch

    if params.greedy:
        return int(torch.argmax(logits).item())
    probabilities = nucleus_probabilities(logits, params.temperature, params.top_p)
    return int(torch.multinomial(probabilities, 1, generator=generator).item())
