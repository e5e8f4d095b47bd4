"""The fields every membership message is built from, each checked as the wire format requires.

Shared by ``wire.py`` and the modules that define messages of their own (``load_news.py``); each
raises ``ValueError``, which the packet decoder turns into a ``malformed`` packet.
"""

from __future__ import annotations

import re

from .bounds import in_range
from .types import Address, NodeId

__all__ = ["MAX_ADDRESS_CHARS", "MAX_ID_CHARS", "address", "counter", "flag", "node_id"]

MAX_ID_CHARS = 64
MAX_ADDRESS_CHARS = 270

_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def counter(value: object, maximum: int) -> int:
    """An integer in [0, `maximum`] (never a bool)."""
    if not in_range(value, maximum):
        raise ValueError(f"counters must be integers in [0, {maximum}]")
    return value


def flag(value: object) -> bool:
    """A boolean."""
    if not isinstance(value, bool):
        raise ValueError("flags must be booleans")
    return value


def node_id(value: object) -> NodeId:
    """1-64 characters of [A-Za-z0-9_.-]."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ValueError("node ids must be 1-64 characters of [A-Za-z0-9_.-]")
    return NodeId(value)


def address(value: object) -> Address:
    """ "host:port" (IPv6 as "[::1]:port") with a valid port."""
    if not isinstance(value, str) or not 3 <= len(value) <= MAX_ADDRESS_CHARS:
        raise ValueError("addresses must be 'host:port' strings")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad address {value!r}")
    return Address(value)
