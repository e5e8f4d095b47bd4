"""The holders of a model as a pull sees them: who gossips it, one ``@models`` call, its manifest.

``PullPeers`` reads the gossiped view for the alive members whose ``NodeMeta.store`` lists a model
(never this node), and sends one message on the ``MODELS_CHANNEL`` (``chunk_server.py``) to one of
them over the data plane, as ``serving/job_peers.py`` does for jobs. An answer that does not come
is a ``Lost`` with the reason, never an exception: the pull sets that holder aside and goes on.

A manifest from a holder is checked before it is used (``checked_manifest``): it must be of the name
asked, parse strictly (``Manifest.from_wire``: it comes from the network), hash to the digest the
holder sent with it, and that digest must start with the short one gossip carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import MeshnodeError
from ..mesh.envelope import ACCEPT_BULK, Call, Chunk, Failure, Reply
from ..mesh.member import Member
from ..mesh.model_manifest import Manifest, ManifestError, is_digest, is_short, short
from ..mesh.types import NodeId, Status
from ..serving.job_peers import CallPeer
from .chunk_server import MODELS_CHANNEL

__all__ = ["MANIFEST_TIMEOUT_MS", "Lost", "Members", "PullPeers", "checked_manifest"]

log = logging.getLogger(__name__)

# A manifest is one small message (at most ~10 MB): a holder that takes longer is in trouble.
MANIFEST_TIMEOUT_MS = 10_000


class Members(Protocol):
    """The gossiped view (``GossipRunner``)."""

    def members(self) -> Iterable[Member]:
        """Every member this node knows, itself included."""
        ...


@dataclass(frozen=True)
class Lost:
    """A holder that could not answer (the pull sets it aside), and why."""

    why: str


class PullPeers:
    """The members holding models, and one ``@models`` message to one of them."""

    def __init__(self, me: NodeId, members: Members, call_peer: CallPeer, executor: Executor | None) -> None:
        self._me = me
        self._members = members
        self._call_peer = call_peer
        self._executor = executor

    def holders(self, name: str) -> dict[str, str]:
        """Alive members with a data plane that gossip `name`: node -> short digest."""
        held = {}
        for member in self._members.members():
            if member.node == self._me or member.status != Status.ALIVE or not member.meta.data:
                continue
            entry = member.meta.store.get(name)
            if isinstance(entry, dict) and is_short(entry.get("digest")):
                held[str(member.node)] = entry["digest"]
        return held

    def gossiped_anywhere(self, name: str) -> bool:
        """Whether any member (alive or not) gossips that it holds `name`: else nobody ever did."""
        return any(name in member.meta.store for member in self._members.members())

    def gossiped_bytes(self, name: str, digest: str) -> int:
        """The size holders of `name` with short `digest` gossip (0 when none says)."""
        for member in self._members.members():
            entry = member.meta.store.get(name)
            if (
                isinstance(entry, dict)
                and entry.get("digest") == digest
                and isinstance(entry.get("bytes"), int)
            ):
                return max(0, int(entry["bytes"]))
        return 0

    def names(self, nodes: Iterable[str]) -> tuple[str, ...]:
        """The members' names (a node no longer known: the start of its id)."""
        known = {m.node: m.meta.name for m in self._members.members()}
        return tuple(known.get(NodeId(node), node[:8]) for node in nodes)

    async def ask(self, node: str, body: dict[str, Any], timeout_ms: int, *, bulk: bool = False) -> Any:
        """`node`'s answer to one ``@models`` message, or ``Lost`` saying why there is none.

        With `bulk` (``ACCEPT_BULK``: on the bulk link, behind serving traffic), a bytes answer comes
        as the list of pieces it travelled in.
        """
        member = next((m for m in self._members.members() if m.node == node), None)
        if member is None or member.status.gone or not member.meta.data:
            return Lost("is not in the mesh any more")
        accept = ACCEPT_BULK if bulk else ""
        call = Call(f"models-{secrets.token_hex(8)}", MODELS_CHANNEL, body, None, False, accept, timeout_ms)
        received: list[Any] = []
        try:
            # Closed on return, not when collected: until then the link counts the call as
            # outstanding to that peer (routing reads those counts) and keeps its entry.
            async with contextlib.aclosing(
                self._call_peer(member.node, member.meta.data, member.meta.data_key, call)
            ) as answers:
                async for message in answers:
                    if isinstance(message, Chunk) and bulk:
                        received.append(message.data)
                    if isinstance(message, Reply):
                        return [*received, message.data] if bulk else message.data
                    if isinstance(message, Failure):
                        return Lost(f"{message.kind}: {message.message}")
        except MeshnodeError as exc:
            return Lost(exc.message)
        return Lost("the call ended without an answer")

    async def manifest(self, name: str, wanted: str, holders: Iterable[str]) -> Manifest | str:
        """The manifest of `name` from the first holder whose answer checks out; else why none did."""
        reasons = []
        for holder in holders:
            answer = await self.ask(holder, {"op": "manifest", "name": name}, MANIFEST_TIMEOUT_MS)
            who = self.names([holder])[0]
            if isinstance(answer, Lost):
                reasons.append(f"{who}: {answer.why}")
                continue
            try:
                # Parsing and hashing ~10 MB of manifest is real work: not on the event loop.
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, checked_manifest, answer, name, wanted)
            except ManifestError as exc:
                log.warning("model %s: %s sent a manifest that does not check out: %s", name, who, exc)
                reasons.append(f"{who}: {exc}")
        return "; ".join(reasons)


def checked_manifest(answer: Any, name: str, wanted: str) -> Manifest:
    """A holder's manifest answer, checked: its name, its digest against the manifest and gossip."""
    if not isinstance(answer, dict) or answer.get("name") != name or not is_digest(answer.get("digest")):
        raise ManifestError("the answer is not a manifest of that name with a digest")
    manifest = Manifest.from_wire(answer.get("manifest"))
    if manifest.digest != answer["digest"]:
        raise ManifestError("its digest is not the sha256 of its manifest")
    if short(manifest.digest) != wanted:
        raise ManifestError(f"it holds {short(manifest.digest)} now, not the gossiped {wanted}")
    return manifest
