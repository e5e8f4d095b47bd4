"""``ModelService``: the agent's shell around its ``ModelStore``, for HTTP, gossip and peers.

It runs every store call in a thread (file I/O never blocks the event loop), gossips the store after
every change (``publish``), answers ``GET /v1/models/store`` from the gossiped view, and removes a
model mesh-wide: on this node directly, on every other holder by a call on the data plane.

Removal messages are calls to the reserved name ``MODEL_STORE_CHANNEL`` (no deployment name starts
with "@"), served by ``serve_peer``: one op, ``remove`` with a model name checked like any name from
the network, so a peer can only ever name a folder inside this node's store. They travel like every
request between members, on the authenticated, encrypted data plane; the HTTP route that
starts them needs an ``admin`` key from another machine.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from ..errors import MeshnodeError, NotFound
from ..mesh.envelope import Call, Envelope, Failure, Reply
from ..mesh.member import Member
from ..mesh.model_manifest import check_name
from ..mesh.types import NodeId, Status
from ..serving.job_peers import CallPeer
from .store import ModelStore, StoredModel
from .views import local_view, store_view

__all__ = ["MODEL_STORE_CHANNEL", "PEER_TIMEOUT_MS", "ModelService"]

log = logging.getLogger(__name__)

MODEL_STORE_CHANNEL = "@model-store"
# A removal renames a folder away and deletes its files: seconds for a large model on a slow disk.
PEER_TIMEOUT_MS = 30_000


class Members(Protocol):
    """The gossiped view (``GossipRunner``)."""

    def members(self) -> Iterable[Member]:
        """Every member this node knows, itself included."""
        ...


class ModelService:
    """This node's store as the rest of the agent sees it."""

    def __init__(
        self,
        store: ModelStore,
        *,
        me: NodeId,
        members: Members,
        call_peer: CallPeer,
        publish: Callable[[], None],
    ) -> None:
        self.store = store
        self._me = me
        self._members = members
        self._call_peer = call_peer
        self._publish = publish

    async def scan(self) -> dict[str, Any]:
        """Re-read the store's folder and gossip it: this node's models and the folders skipped."""
        await asyncio.to_thread(self.store.scan)
        self._publish()
        return {"local": local_view(self.store.models()), "skipped": dict(self.store.skipped)}

    def gossip(self) -> dict[str, dict[str, Any]]:
        """What ``NodeMeta.store`` carries for this node."""
        return self.store.gossip()

    def view(self) -> dict[str, Any]:
        """The body of ``GET /v1/models/store``."""
        return store_view(self._members.members(), self.store.models())

    def get(self, name: str) -> StoredModel | None:
        """The model held here under `name`, if any."""
        return self.store.get(name)

    async def remove_here(self, name: str) -> bool:
        """Delete `name` from this node's store and gossip the change; False when not held."""
        removed = await asyncio.to_thread(self.store.remove, name)
        if removed:
            log.info("model store: removed %s", name)
            self._publish()
        return removed

    async def remove(self, name: str, node: str | None = None) -> dict[str, Any]:
        """Delete `name` from every present node that holds it (or only from the node named `node`).

        ValueError for a bad name; NotFound when no such node, or no node holds it.
        """
        check_name(name)
        holders = self._holders(name)
        if node is not None:
            if not any(m.meta.name == node for m in self._present()):
                raise NotFound(f"no node named {node!r} in the mesh")
            holders = [m for m in holders if m.meta.name == node]
        if not holders:
            if node is None:
                raise NotFound(f"no node in the mesh holds a model named {name!r}")
            raise NotFound(f"node {node!r} holds no model named {name!r}")
        outcomes = await asyncio.gather(*(self._remove_on(member, name) for member in holders))
        removed = [m.meta.name for m, error in zip(holders, outcomes, strict=True) if error is None]
        failed = [
            {"node": m.meta.name, "error": error}
            for m, error in zip(holders, outcomes, strict=True)
            if error is not None
        ]
        return {"name": name, "removed": removed, "failed": failed}

    async def serve_peer(self, call: Call) -> AsyncIterator[Envelope]:
        """Answer a peer's store message (``MODEL_STORE_CHANNEL``)."""
        body = call.body
        try:
            if body.get("op") != "remove":
                raise ValueError(f"unknown model store op {body.get('op')!r}")
            removed = await self.remove_here(check_name(body.get("name")))
        except (OSError, ValueError) as exc:
            yield Failure(call.request_id, "bad_request", f"model store message refused: {exc}", False)
            return
        yield Reply(call.request_id, {"removed": removed}, "application/json")

    def _present(self) -> list[Member]:
        present = [m for m in self._members.members() if m.status in (Status.ALIVE, Status.SUSPECT)]
        return sorted(present, key=lambda m: (m.meta.name, m.node))

    def _holders(self, name: str) -> list[Member]:
        """Present members whose gossip says they hold `name`; this node by its own store."""
        return [
            m
            for m in self._present()
            if (self.store.get(name) is not None if m.node == self._me else name in m.meta.store)
        ]

    async def _remove_on(self, member: Member, name: str) -> str | None:
        """None when `member` no longer holds `name`, else why it could not be removed there."""
        if member.node == self._me:
            try:
                await self.remove_here(name)
            except OSError as exc:
                return f"cannot delete it here: {exc.strerror}"
            return None
        call = Call(
            f"store-{secrets.token_hex(8)}",
            MODEL_STORE_CHANNEL,
            {"op": "remove", "name": name},
            None,
            False,
            "",
            PEER_TIMEOUT_MS,
        )
        try:
            async for message in self._call_peer(member.node, member.meta.data, member.meta.data_key, call):
                if isinstance(message, Reply):
                    return None
                if isinstance(message, Failure):
                    return message.message
        except MeshnodeError as exc:
            return f"did not answer: {exc}"
        return "did not answer"
