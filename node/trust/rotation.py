"""Token rotation on this node: the ring it holds, kept on disk, and every part moved to a new ring.

A rotation is three gossiped steps (``mesh/keyring_record.py``), each made on any node by an admin
(``POST /v1/keyring``, or ``meshnode token rotate``, which runs all three and waits between them):

1. ``install`` a new token: every node now opens packets sealed with it, and admits data-plane
   clients holding it, while still sealing and connecting with the old one;
2. ``use`` it: every node seals and connects with the new token; the old one still opens;
3. ``remove`` the old one: only the new token opens anything.

Each node gossips the fingerprints of the tokens it holds (``NodeMeta.key_ids``), so the command waits
for every live member to reach a step before taking the next: no packet is ever sealed with a key
some live member cannot open, so nothing is dropped and nobody is suspected. A node that was down
through a whole rotation has only the old token: it rejoins with ``--token NEW``.

Each adopted ring is kept in ``<data_dir>/keyring`` (mode 0600), so a restart comes back with it; a
token file this node manages (its data dir's or the meshnode home's) is rewritten with the new
primary, so nodes started later on this machine join with no flags.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..dataplane.links import PeerLinks
from ..errors import ConfigError
from ..membership.runner import GossipRunner
from ..mesh.keyring_record import KeyringRecord, check_ring
from .keyring import Keyring, key_id
from .sealed import ServerKeys
from .token import TokenSource, write_token_file

if TYPE_CHECKING:
    from .mesh_trust import MeshTrust

__all__ = ["RING_FILE", "Rotation", "load_ring", "next_ring", "ring_at_start", "save_ring"]

log = logging.getLogger(__name__)

RING_FILE = "keyring"
Background = Callable[[Callable[[], object]], None]
# Token files written by meshnode itself; others (a flag, a mounted secret) are the operator's.
_MANAGED = (TokenSource.DATA_DIR, TokenSource.HOME, TokenSource.CREATED)


def next_ring(tokens: Sequence[str], op: str, *, token: str | None, key: str | None) -> tuple[str, ...]:
    """The ring after one rotation step; ValueError (never echoing a token) if the step is wrong."""
    ids = [key_id(held).hex() for held in tokens]
    match op:
        case "install" if token is not None:
            return check_ring([*tokens, token]) if token not in tokens else tuple(tokens)
        case "use" if key in ids:
            chosen = tokens[ids.index(key)]
            return (chosen, *(held for held in tokens if held != chosen))
        case "remove" if key in ids:
            if ids.index(key) == 0:
                raise ValueError("the primary token cannot be removed: make another primary first (use)")
            return tuple(held for held, held_id in zip(tokens, ids, strict=True) if held_id != key)
        case "install":
            raise ValueError("install needs the new token")
        case "use" | "remove":
            raise ValueError(f"no token with key id {key!r} is installed")
    raise ValueError("op is install, use or remove")


def load_ring(data_dir: Path) -> KeyringRecord | None:
    """The ring this node adopted last, or None (never rotated, or the file is unusable: logged)."""
    path = data_dir / RING_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return KeyringRecord.from_wire([raw["stamp"], raw["origin"], raw["tokens"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the keyring file %s: %s", path, exc)
        return None


def save_ring(data_dir: Path, record: KeyringRecord) -> None:
    """Keep `record` in the data dir, readable by this user only."""
    body = {"stamp": record.stamp, "origin": record.origin, "tokens": list(record.tokens)}
    write_token_file(data_dir / RING_FILE, json.dumps(body))


class Rotation:
    """Moves this node's parts to each keyring gossip brings, keeps it, and makes rotation steps."""

    def __init__(self, trust: MeshTrust, mesh_id: str, data_dir: Path, in_background: Background) -> None:
        self.tokens = trust.tokens
        self._mesh_id = mesh_id
        self._data_dir = data_dir
        self._token = trust.token
        self._in_background = in_background  # file writes, off the event loop
        self._parts: _Parts | None = None

    def connect(
        self, runner: GossipRunner, admit: ServerKeys, links: PeerLinks, publish: Callable[[], None]
    ) -> None:
        """The parts a new ring goes to: gossip, the data plane both ways, the gossiped metadata."""
        self._parts = _Parts(runner, admit, links, publish)

    def step(self, op: str, *, token: str | None = None, key: str | None = None) -> tuple[str, ...]:
        """Make one rotation step from this node (ValueError if it is wrong); the new ring."""
        assert self._parts is not None, "connect() first"
        tokens = next_ring(self.tokens, op, token=token, key=key)
        if tokens != self.tokens:
            self._parts.runner.write_keyring(tokens)  # adopted here through the KeyringChanged effect
        return tokens

    def adopt(self, record: KeyringRecord) -> None:
        """A newer ring won: seal, open, admit and connect with it from now on, and keep it."""
        if record.tokens == self.tokens or self._parts is None:
            return
        self.tokens = tokens = record.tokens
        parts = self._parts
        parts.runner.keyring = ring = Keyring(tokens, self._mesh_id)
        parts.admit.allow(tokens)
        parts.links.token = tokens[0]  # links made from now on; live ones stay up
        parts.publish()  # the new key ids, so a rotation sees this node caught up
        log.info("mesh keyring changed: %s (primary first)", ", ".join(ring.key_ids))
        self._in_background(lambda: self._keep(record))

    def _keep(self, record: KeyringRecord) -> None:
        save_ring(self._data_dir, record)
        if self._token.source in _MANAGED and self._token.path is not None:
            write_token_file(self._token.path, record.tokens[0])
        else:
            log.warning(
                "the mesh's primary token changed: update the token this node is started with "
                "(%s), or it will not rejoin once the old one is removed",
                self._token.source.value,
            )


@dataclass(frozen=True)
class _Parts:
    runner: GossipRunner
    admit: ServerKeys
    links: PeerLinks
    publish: Callable[[], None]


def ring_at_start(configured: str, saved: KeyringRecord | None) -> tuple[str, ...]:
    """The tokens to start with: the ring a rotation left here, else the configured token.

    The saved ring is newer than any token in a flag or unit file that was not updated after a
    rotation, so it wins; a configured token it lacks is still accepted (it opens, never seals).
    """
    if saved is None:
        return (configured,)
    if configured in saved.tokens:
        return saved.tokens
    log.warning(
        "the token this node was started with is not in the keyring a rotation left in its data dir; "
        "using that keyring (delete its `keyring` file to start over with the given token)"
    )
    try:
        return check_ring([*saved.tokens, configured])
    except ValueError as exc:
        raise ConfigError(f"the saved keyring and the given token do not fit together: {exc}") from exc
