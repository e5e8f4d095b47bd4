"""The other holders of jobs, reached over the data plane: who is live, and one message to one of them.

Job messages are calls to the reserved name ``JOBS_CHANNEL`` (a deployment name always starts with
a letter or digit, so no deployment can take it), which the agent hands to the job service instead
of a replica (``agent.py``'s ``_serve_local``). They travel like every request between members:
on the authenticated, encrypted data plane, one multiplexed connection per peer. A peer that
does not answer within ``PEER_TIMEOUT_MS`` counts as not answering; callers treat that as "no copy
there" and the job service's tick tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, Protocol

from ..errors import MeshnodeError
from ..mesh.envelope import Call, Envelope, Failure, Reply
from ..mesh.member import Member
from ..mesh.types import NodeId, Status

__all__ = ["ASK_AT_ONCE", "JOBS_CHANNEL", "PEER_TIMEOUT_MS", "CallPeer", "JobPeers", "Members"]

log = logging.getLogger(__name__)

JOBS_CHANNEL = "@jobs"
# A copy is a local sqlite write on the peer: seconds mean the peer is in trouble, not busy.
PEER_TIMEOUT_MS = 5_000
# Questions in flight at once when one goes to many nodes (a listing asks every live node): each
# is a call on that peer's link, and a thousand at once would open a thousand links in one turn.
ASK_AT_ONCE = 64

CallPeer = Callable[[NodeId, str, str, Call], AsyncGenerator[Envelope, None]]


class Members(Protocol):
    """The gossiped view (``GossipRunner``)."""

    def members(self) -> Iterable[Member]:
        """Every member this node knows, itself included."""
        ...

    def member(self, node: NodeId) -> Member | None:
        """One member, or None when unknown."""
        ...

    @property
    def roster_version(self) -> int:
        """Moves when a member comes, goes or changes status or address (not with load)."""
        ...


class JobPeers:
    """The members that can hold jobs, and a job message to one of them."""

    def __init__(self, members: Members, call_peer: CallPeer) -> None:
        self._members = members
        self._call_peer = call_peer
        # (roster version, live nodes): every job's holders are ranked over them, once per job on a
        # pass over a day of ended jobs, so the walk over the members is not repeated per job.
        self._live: tuple[int, tuple[NodeId, ...]] = (-1, ())

    def live(self) -> tuple[NodeId, ...]:
        """Alive members with a data plane: the nodes jobs are placed on."""
        version = self._members.roster_version
        if version != self._live[0]:
            nodes = (m.node for m in self._members.members() if m.status == Status.ALIVE and m.meta.data)
            self._live = (version, tuple(nodes))
        return self._live[1]

    def present(self) -> list[NodeId]:
        """Alive or suspected members: a runner among them keeps its running jobs."""
        return [m.node for m in self._members.members() if m.status in (Status.ALIVE, Status.SUSPECT)]

    def rerun_safe(self, deployment: str) -> bool:
        """False when any replica of `deployment` says its app must not run a job twice."""
        return all(
            entry.rerun_safe
            for member in self._members.members()
            if (entry := member.meta.replicas.get(deployment)) is not None
        )

    def name_of(self, node: NodeId | None) -> str | None:
        """A member's name, or its id when it is no longer known."""
        member = self._member(node)
        return member.meta.name if member is not None else node

    async def ask(self, node: NodeId, body: dict[str, Any]) -> Any:
        """`node`'s answer to a job message, or None when it could not answer."""
        member = self._member(node)
        if member is None or not member.meta.data:
            return None
        call = Call(f"jobs-{secrets.token_hex(8)}", JOBS_CHANNEL, body, None, False, "", PEER_TIMEOUT_MS)
        try:
            # Closed on return, not when collected: until then the link counts the call as
            # outstanding to that peer (routing reads those counts) and keeps its entry.
            async with contextlib.aclosing(
                self._call_peer(node, member.meta.data, member.meta.data_key, call)
            ) as answers:
                async for message in answers:
                    if isinstance(message, Reply):
                        return message.data
                    if isinstance(message, Failure):
                        name, op = member.meta.name, body.get("op")
                        log.debug("jobs: %s refused %s: %s", name, op, message.message)
                        return None
        except MeshnodeError as exc:
            log.debug("jobs: %s did not answer %s: %s", member.meta.name, body.get("op"), exc)
        return None

    async def ask_each(self, nodes: Sequence[NodeId], body: dict[str, Any]) -> list[Any]:
        """Each node's answer to the same message, in the order of `nodes` (None where one could not
        answer), with at most ``ASK_AT_ONCE`` of them asked at a time."""
        answers: list[Any] = [None] * len(nodes)
        taken = iter(range(len(nodes)))

        async def asker() -> None:
            for index in taken:  # shared: each index goes to one asker
                answers[index] = await self.ask(nodes[index], body)

        await asyncio.gather(*(asker() for _ in range(min(ASK_AT_ONCE, len(nodes)))))
        return answers

    def _member(self, node: NodeId | None) -> Member | None:
        # One lookup, not a walk over the members: a listing asks every live node, and at a
        # thousand members a walk per ask was a million comparisons in one turn of the loop.
        return None if node is None else self._members.member(node)
