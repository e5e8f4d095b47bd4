"""A predictor's outcome as the envelope that answers its ``Call``: a ``Reply`` or a ``Failure``.

- ``reply``: the return value, honouring the client's ``Accept`` (a file in an acceptable type, an
  image converted, or ``NotAcceptable``); a ``Path`` nobody asked for as a file travels as base64
  in JSON; anything else must be a value msgpack carries (``plain`` turns paths, tuples, numpy
  arrays and tensors into such values).
- ``failure``: an exception raised while answering, as the ``Failure`` the agent turns into an
  HTTP status (``invalid_request`` 422, ``not_acceptable`` 406, ``moderation_unavailable`` 503,
  ``predictor`` 500 with the exception's type and text, never its traceback, which goes to the log).
- ``refusal``: the answer to a call its moderation refused: the category, never the text.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import traceback
from pathlib import Path
from typing import Any

from ..mesh.envelope import Call, Failure, Reply
from ..mesh.moderation import refusal_message
from .moderation import ModerationUnavailable
from .negotiation import NotAcceptable, choose, convert_image
from .predictor import InvalidRequest

__all__ = ["JSON", "failure", "plain", "refusal", "reply"]

log = logging.getLogger("meshnode.worker")

JSON = "application/json"
# Types ``plain`` leaves as they are (exact types: a subclass such as a numpy float is converted).
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def failure(call: Call, exc: Exception) -> Failure:
    """The answer to `call` when answering it raised `exc` (a predictor's own error is logged)."""
    rid = call.request_id
    match exc:
        case ModerationUnavailable():
            return Failure(rid, "moderation_unavailable", str(exc)[:1000], False)
        case InvalidRequest():
            return Failure(rid, "invalid_request", str(exc)[:1000], False)
        case NotAcceptable():
            return Failure(rid, "not_acceptable", str(exc)[:1000], False)
    log.error("predictor failed on %s:\n%s", rid, traceback.format_exc())
    return Failure(rid, "predictor", safe_message(exc), False)


def reply(call: Call, result: Any) -> Reply:
    """Turn a predictor's return value into the final envelope, honouring the client's Accept
    (``negotiation.py``: a file in an acceptable type, an image converted, or NotAcceptable)."""
    if isinstance(result, str | Path) and _wants_file(call.accept) and Path(result).is_file():
        path = Path(result)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        target = choose(call.accept, content_type)  # NotAcceptable: a 406 for the client
        data = path.read_bytes()
        return Reply(call.request_id, data if target == content_type else convert_image(data, target), target)
    if isinstance(result, Path):
        # A file the client did not ask for as a file: base64 in JSON, so it still arrives.
        content_type = mimetypes.guess_type(result.name)[0] or "application/octet-stream"
        encoded = base64.b64encode(result.read_bytes()).decode("ascii")
        return Reply(call.request_id, {"content_type": content_type, "base64": encoded}, JSON)
    if isinstance(result, bytes | bytearray):
        return Reply(call.request_id, bytes(result), "application/octet-stream")
    return Reply(call.request_id, plain(result), JSON)


def refusal(call: Call, category: str) -> Failure:
    """The answer to a call its moderation refused: the category, never the text, and no retry."""
    return Failure(call.request_id, "moderation", refusal_message(category), False)


def _wants_file(accept: str) -> bool:
    accepted = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    return any(kind not in ("application/json", "text/event-stream", "*/*", "") for kind in accepted)


def plain(value: Any) -> Any:
    """Values msgpack can carry: paths become strings, tuples lists; anything else must be JSON-able."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, list):
        # A list of plain numbers or strings (an embedding, token ids) is kept as it is, checked in
        # one pass: walked item by item, 384 floats took 72 µs of the worker's loop.
        return value if _SCALARS.issuperset(map(type, value)) else [plain(v) for v in value]
    if isinstance(value, dict):
        if _SCALARS.issuperset(map(type, value.values())) and all(type(k) is str for k in value):
            return value
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and torch tensors
        return value.tolist()
    return value


def safe_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:1000]
