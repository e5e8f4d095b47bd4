r"""Which regular expressions a moderation blocklist accepts: the ones that cannot blow up.

Python's ``re`` backtracks, and a pattern such as ``(a+)+b`` takes exponential time on ``aaaa...``.
Rather than a timeout (a thread cannot be stopped, and a search holds the GIL), a pattern is parsed
with the standard library's own parser when the spec is declared and refused when it has:
backreferences, conditional groups or lookarounds; ``^``/``$`` anchors (the text is searched in
windows, ``moderation_checks``); a repeat inside a repeat (``(a+)+``); a repeat of an alternation
(``(a|ab)*``); more than 6 repeats; or repeats that together can take more than 1,200 combinations
of lengths (a repeat without an upper bound counts as ``PATTERN_SPAN``, the longest match in a
window; a repeat of spaces counts as 2, since normalised text has single spaces). ``\w+x`` and
``kill\s+\w+`` pass, ``\w+\s*\w+`` does not (write ``\w{1,20} \w{1,20}``).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

__all__ = ["safe_pattern"]

MAX_PATTERN_REPEATS = 6
# The product over a pattern's repeats of how many lengths each can take (a repeat without an upper
# bound counts as PATTERN_SPAN, the longest a match can be in a search window): how far a search may
# backtrack from each position. Measured on two cores: 1,200 keeps a search of 20,000 characters of
# the worst text under half a second (``\w+x`` on "aaaa...": 321 lengths, 0.07 s).
MAX_PATTERN_COST = 1_200
PATTERN_SPAN = 320

_parser: Any = importlib.import_module("re._parser")  # the stdlib's own parser (no public name)
_constants: Any = importlib.import_module("re._constants")
_REPEATS = {_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT}
_REFUSED = {
    _constants.GROUPREF: "backreferences",
    _constants.GROUPREF_EXISTS: "conditional groups",
    _constants.ASSERT: "lookarounds",
    _constants.ASSERT_NOT: "lookarounds",
}
_ANCHORS = {
    _constants.AT_BEGINNING,
    _constants.AT_BEGINNING_STRING,
    _constants.AT_END,
    _constants.AT_END_STRING,
}


def safe_pattern(pattern: str) -> str | None:
    """Why `pattern` is refused (it does not compile, or could backtrack without bound); None if safe."""
    try:
        parsed = _parser.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"does not compile: {exc}"
    if parsed.state.groups > 10:
        return "has more than 9 groups"
    repeats = [0, 1]  # how many, and the product of their spans (the backtracking per start)
    problem = _walk(list(parsed), inside_repeat=False, repeats=repeats)
    if problem is None and repeats[0] > MAX_PATTERN_REPEATS:
        problem = f"has {repeats[0]} repeats; at most {MAX_PATTERN_REPEATS}"
    if problem is None and repeats[1] > MAX_PATTERN_COST:
        problem = (
            "could backtrack too much: its repeats together span too many ways (use bounded "
            "repeats such as \\w{1,20}, and at most one unbounded * or +)"
        )
    return problem


def _walk(items: list[tuple[Any, Any]], *, inside_repeat: bool, repeats: list[int]) -> str | None:
    for op, arg in items:
        if op in _REFUSED:
            return f"uses {_REFUSED[op]}, which are not allowed"
        if op is _constants.AT and arg in _ANCHORS:
            return "uses ^ or $ (text is searched in windows): leave them out"
        children: list[list[tuple[Any, Any]]] = []
        if op in _REPEATS:
            if inside_repeat:
                return "has a repeat inside a repeat, which can backtrack without bound"
            repeats[0] += 1
            body = list(arg[2])
            # Normalised text has single spaces between words: a repeat of spaces matches one.
            repeats[1] *= 2 if _spaces_only(body) else min(arg[1], PATTERN_SPAN) + 1
            if any(child_op is _constants.BRANCH for child_op, _ in _flatten(body)):
                return "repeats an alternation, which can backtrack without bound"
            problem = _walk(body, inside_repeat=True, repeats=repeats)
            if problem is not None:
                return problem
            continue
        if op is _constants.SUBPATTERN:
            children = [list(arg[3])]
        elif op is _constants.ATOMIC_GROUP:
            children = [list(arg)]
        elif op is _constants.BRANCH:
            children = [list(branch) for branch in arg[1]]
        for child in children:
            problem = _walk(child, inside_repeat=inside_repeat, repeats=repeats)
            if problem is not None:
                return problem
    return None


def _spaces_only(body: list[tuple[Any, Any]]) -> bool:
    space = (_constants.LITERAL, ord(" "))
    if len(body) != 1:
        return False
    op, arg = body[0]
    if body[0] == space:
        return True
    whitespace = {space, (_constants.CATEGORY, _constants.CATEGORY_SPACE)}
    return op is _constants.IN and all(item in whitespace for item in arg)


def _flatten(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every item in `items` and in its groups (not inside nested repeats, refused anyway)."""
    found = []
    for op, arg in items:
        found.append((op, arg))
        if op is _constants.SUBPATTERN:
            found += _flatten(list(arg[3]))
        elif op is _constants.ATOMIC_GROUP:
            found += _flatten(list(arg))
    return found
