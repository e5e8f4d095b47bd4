"""From token ids to the text a client sees: incremental detokenization, then stop strings.

Both are pure state machines fed one token (or one piece of text) at a time, so a stream can send
each piece the moment it is final and never take anything back:

- ``IncrementalDetokenizer`` turns ids into text deltas. Decoding one id at a time is wrong for most
  tokenizers (a character may span several byte-level tokens; SentencePiece drops the space that
  starts a piece decoded alone), so it decodes a short window of recent ids and emits what the
  newest id added to it, holding the delta back while it ends in U+FFFD, the mark of a character
  still missing bytes (the method of Hugging Face's text-generation-inference and vLLM).
- ``StopMatcher`` cuts the text before the first stop string. Text that could be the start of a stop
  string (a suffix of what came so far that is a prefix of one of them) is held back until the next
  piece shows whether the stop string follows; everything before it is final. So a stop string split
  across tokens is never emitted, even in part, and the emitted pieces always join to the final text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["IncrementalDetokenizer", "StopMatcher"]

Decode = Callable[[Sequence[int]], str]

# A decoder's placeholder for bytes that do not (yet) form a character.
_INCOMPLETE = "\ufffd"


@dataclass(slots=True)
class IncrementalDetokenizer:
    """Text deltas from token ids, fed one id at a time; ``decode`` must skip special tokens."""

    decode: Decode
    ids: list[int] = field(default_factory=list)
    # ids[prefix:read] decode to text already emitted; ids[prefix:] is the window decoded each time.
    prefix: int = 0
    read: int = 0

    def push(self, token_id: int) -> str:
        """The text ``token_id`` completes ("" while it leaves a character unfinished)."""
        self.ids.append(token_id)
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith(_INCOMPLETE):
            return ""
        # Slide the window so each decode costs a few tokens, not the whole completion.
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """What is left when generation ends: held bytes decode as U+FFFD rather than vanish."""
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


@dataclass(slots=True)
class StopMatcher:
    """Cuts generated text before the first of ``stops``; holds back what may begin one."""

    stops: tuple[str, ...]
    held: str = ""
    stopped: bool = False

    def push(self, text: str) -> str:
        """The part of ``held + text`` that is final; sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        pending = self.held + text
        cut = min((i for i in (pending.find(s) for s in self.stops if s) if i >= 0), default=-1)
        if cut >= 0:
            self.held, self.stopped = "", True
            return pending[:cut]
        keep = _longest_stop_prefix_suffix(pending, self.stops)
        self.held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        """Generation ended without a stop string: what was held back is final after all."""
        held, self.held = self.held, ""
        return "" if self.stopped else held


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:length]):
                best = length
                break
    return best
