"""``ModelPulls``: getting a model this node lacks from the peers that hold it, one pull per model.

``await pulls.ensure(name)`` returns the model held here, at once when the store has it; otherwise
it pulls it, and every other caller asking for the same name meanwhile (a replica, ``meshnode models
pull``, the HTTP route) awaits that same pull (single flight; a caller that goes away never cancels
it). How a pull goes:

1. Holders: the alive members whose gossiped ``NodeMeta.store`` lists the name; when they disagree
   on its digest, the digest most of them hold wins (``mesh/pull_plan.choose_holders``). None:
   ``ModelUnavailable`` (503, retryable).
2. The manifest, from the first holder that sends one whose own digest is the one it announces and
   whose short form is the gossiped one; checked strictly (``Manifest.from_wire``), since it comes
   from the network.
3. The partial folder (``partial.py``) keyed by that digest: chunks a previous try left there
   (this node crashed, or every holder was lost) are hashed again and kept.
4. Chunks from every holder in parallel, ``model_pull_chunks_per_peer`` outstanding at each
   (``mesh/pull_plan.PullPlan`` decides who gets which), each after its bytes passed this node's
   ``Throttle`` (``model_pull_bytes_per_s``, shared by all pulls). Every chunk is checked against
   its sha256 before it is written: a bad one is refused, counted, and asked again from another
   holder when there is one. A holder that fails (no answer within ``model_pull_chunk_timeout_s``,
   connection lost, gone from the view) is set aside and its chunks go back to the queue; holders
   that appear meanwhile join.
5. ``ModelStore.install`` checks every file is there at its size (its bytes were all checked, chunk by
   chunk) and renames the folder into place; the store's
   change and the pulls in progress (``gossip``, for ``NodeMeta.pulls``) are gossiped through
   ``on_change``.

All file work (hashing, writing, resuming, installing) runs in `executor`'s threads.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial as bind
from typing import Any, TypeVar

from ..errors import BadRequest, MeshnodeError, ModelUnavailable
from ..mesh.model_manifest import check_name, short
from ..mesh.pull_plan import Ask, PullPlan, choose_holders
from ..mesh.types import NodeId
from ..serving.job_peers import CallPeer
from .partial import PartialFolder
from .pull_peers import Lost, Members, PullPeers
from .store import ModelStore, StoredModel
from .throttle import Throttle

__all__ = ["ModelPulls", "ModelUnavailable", "PullProgress"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Progress is gossiped (NodeMeta.pulls) when it moved by this share of the model's bytes.
GOSSIP_STEP = 0.05
# Why the last pull of a name failed, for this many names (the most recent ones).
MAX_FAILURES_KEPT = 256


@dataclass(frozen=True)
class PullProgress:
    """How far one pull is: the digest (short until the manifest came), bytes held, holders in use."""

    digest: str
    done_bytes: int
    total_bytes: int
    peers: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        """A JSON-ready dict (the pull routes' answer)."""
        return {
            "digest": self.digest,
            "done": self.done_bytes,
            "total": self.total_bytes,
            "peers": list(self.peers),
        }


@dataclass
class _Pull:
    """The state of one running pull, as ``progress`` reports it."""

    digest: str
    total: int
    done: int = 0
    peers: tuple[str, ...] = ()
    gossiped: float = 0.0  # the share of bytes last gossiped


@dataclass(frozen=True)
class _Bad:
    """A chunk whose bytes did not match its hash (refused)."""

    why: str


class ModelPulls:
    """This node's pulls of models from peers (see the module docstring)."""

    def __init__(
        self,
        *,
        me: NodeId,
        store: ModelStore,
        members: Members,
        call_peer: CallPeer,
        throttle: Throttle,
        per_peer: int,
        chunk_timeout_s: float,
        on_change: Callable[[], None] = lambda: None,
        executor: Executor | None = None,
    ) -> None:
        self._store = store
        self._peers = PullPeers(me, members, call_peer, executor)
        self.throttle = throttle
        self._per_peer = max(1, per_peer)
        self._chunk_timeout_ms = max(1, int(chunk_timeout_s * 1000))
        self._on_change = on_change
        self._executor = executor
        self._tasks: dict[str, asyncio.Task[StoredModel]] = {}
        self._pulls: dict[str, _Pull] = {}
        self._digests: dict[str, asyncio.Task[StoredModel]] = {}  # full digest -> the pull filling it
        self._failures: collections.OrderedDict[str, str] = collections.OrderedDict()
        # For /metrics: bytes and chunks pulled, chunks refused and resumed, pulls by outcome.
        self.counts: collections.Counter[str] = collections.Counter()

    # -- what callers use -----------------------------------------------------------------------

    async def ensure(self, name: str) -> StoredModel:
        """The model `name`, held here; pulled first when it is not (ModelUnavailable if it cannot be)."""
        held = self._store.get(_checked(name))
        if held is not None:
            return held
        return await asyncio.shield(self.begin(name))

    def held(self, name: str) -> StoredModel | None:
        """The model held here under `name`, if any."""
        return self._store.get(name)

    def begin(self, name: str) -> asyncio.Task[StoredModel]:
        """The pull of `name`: the one running, or a new one (for callers that do not wait)."""
        task = self._tasks.get(_checked(name))
        if task is None:
            task = asyncio.create_task(self._run(name), name=f"pull-{name}")
            self._tasks[name] = task
            task.add_done_callback(bind(self._ended, name))
        else:
            self.counts["joined"] += 1
        return task

    def running(self) -> int:
        """Pulls running now."""
        return len(self._tasks)

    def progress(self, name: str) -> PullProgress | None:
        """How far the pull of `name` is; None when none runs."""
        pull = self._pulls.get(name)
        if pull is None:
            return None
        return PullProgress(pull.digest, pull.done, pull.total, pull.peers)

    def active(self) -> dict[str, PullProgress]:
        """Every pull running, by model name."""
        return {name: progress for name in self._pulls if (progress := self.progress(name)) is not None}

    def gossip(self) -> dict[str, dict[str, Any]]:
        """What ``NodeMeta.pulls`` carries: name -> {"digest": short digest, "done", "total"}."""
        return {
            name: {"digest": short(pull.digest), "done": pull.done, "total": pull.total}
            for name, pull in sorted(self._pulls.items())
        }

    def failure(self, name: str) -> str | None:
        """Why the last pull of `name` failed, while no later one succeeded or runs."""
        return None if name in self._tasks else self._failures.get(name)

    def gossiped_anywhere(self, name: str) -> bool:
        """Whether any member (alive or not) gossips that it holds `name`: else nobody ever did."""
        return self._peers.gossiped_anywhere(name)

    async def close(self) -> None:
        """Stop every pull (what each fetched stays in its partial folder for the next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one pull -------------------------------------------------------------------------------

    async def _run(self, name: str) -> StoredModel:
        try:
            model = await self._pull(name)
        except asyncio.CancelledError:
            raise
        except MeshnodeError as exc:
            self._failed(name, exc.message)
            raise
        except (OSError, ValueError) as exc:  # this node's disk, or a folder that does not check out
            self._failed(name, str(exc))
            raise ModelUnavailable(f"pulling {name} failed on this node: {exc}") from exc
        self.counts["completed"] += 1
        self._failures.pop(name, None)
        log.info("model %s (%s) pulled and installed", name, model.digest[:16])
        return model

    async def _pull(self, name: str) -> StoredModel:
        held = self._store.get(name)
        if held is not None:  # added or pulled meanwhile
            return held
        chosen = choose_holders(self._peers.holders(name))
        if chosen is None:
            raise ModelUnavailable(
                f"no live node of the mesh holds a model named {name!r}", retry_after_s=5.0
            )
        wanted, holders = chosen
        pull = self._pulls[name] = _Pull(wanted, self._peers.gossiped_bytes(name, wanted))
        self._on_change()
        manifest = await self._peers.manifest(name, wanted, holders)
        if isinstance(manifest, str):
            raise ModelUnavailable(f"no holder of {name} sent its manifest ({manifest})", retry_after_s=5.0)
        digest = manifest.digest
        while (other := self._digests.get(digest)) is not None:  # the same content under another name
            await asyncio.wait({other})
        self._digests[digest] = self._tasks[name]
        try:
            folder = PartialFolder(self._store.partial_dir(digest), manifest)
            done = await self._thread(folder.resume)
            pull.digest, pull.total = digest, manifest.total_bytes
            pull.done = sum(folder.chunk(index).length for index in done)
            self.counts["chunks_resumed"] += len(done)
            await self._thread(_check_space, folder, pull.total - pull.done)
            log.info(
                "pulling model %s (%s, %d bytes) from %s; %d of %d chunks already here",
                name, digest[:16], pull.total, self._peers.names(holders), len(done), manifest.chunk_count,
            )  # fmt: skip
            plan = PullPlan(manifest.chunk_count, done, holders, per_holder=self._per_peer)
            await self._transfer(name, wanted, pull, plan, folder)
            try:
                model = await self._thread(
                    bind(self._store.install, chunks_checked=True), name, manifest, folder.folder
                )
            except ValueError:
                await self._thread(folder.discard)  # every chunk was checked: the disk changed under us
                raise
            await self._thread(folder.forget_record)
            return model
        finally:
            del self._digests[digest]

    async def _transfer(
        self, name: str, wanted: str, pull: _Pull, plan: PullPlan, folder: PartialFolder
    ) -> None:
        """Fetch every chunk the plan says, until it is finished; ModelUnavailable when it is stuck."""
        tasks: dict[asyncio.Task[Lost | _Bad | None], Ask] = {}
        try:
            while not plan.finished:
                alive = self._peers.holders(name)
                for holder in plan.holders:
                    if alive.get(holder) != wanted:
                        plan.failed(holder, "no longer holds it alive in this node's view")
                plan.add_holders(node for node, digest in alive.items() if digest == wanted)
                for ask in plan.next_asks():
                    tasks[asyncio.create_task(self._fetch(ask, folder))] = ask
                if not tasks:
                    raise ModelUnavailable(f"cannot pull {name}: {plan.stuck()}", retry_after_s=5.0)
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    ask = tasks.pop(task)
                    self._account(name, plan, pull, ask, task.result(), folder)
                pull.peers = self._peers.names(plan.in_use())
                if pull.total and pull.done / pull.total - pull.gossiped >= GOSSIP_STEP:
                    pull.gossiped = pull.done / pull.total
                    self._on_change()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _account(
        self,
        name: str,
        plan: PullPlan,
        pull: _Pull,
        ask: Ask,
        verdict: Lost | _Bad | None,
        folder: PartialFolder,
    ) -> None:
        """Tell the plan (and the counters) how one chunk request ended."""
        match verdict:
            case None:
                if not plan.received(ask):
                    return
                length = folder.chunk(ask.chunk).length
                pull.done += length
                self.counts["bytes"] += length
                self.counts["chunks_fetched"] += 1
            case _Bad(why):
                plan.refused(ask)
                self.counts["chunks_refused"] += 1
                log.warning(
                    "model %s: refused a chunk from %s: %s", name, self._peers.names([ask.holder])[0], why
                )
            case Lost(why):
                if ask.holder not in plan.aside:
                    log.warning(
                        "model %s: setting %s aside: %s", name, self._peers.names([ask.holder])[0], why
                    )
                plan.failed(ask.holder, why)

    async def _fetch(self, ask: Ask, folder: PartialFolder) -> Lost | _Bad | None:
        """One chunk from one holder, checked and written: None, or why not."""
        chunk = folder.chunk(ask.chunk)
        await self.throttle.take(chunk.length)
        body = {
            "op": "chunk",
            "digest": folder.manifest.digest,
            "file": chunk.file_index,
            "chunk": chunk.chunk_index,
        }
        answer = await self._peers.ask(ask.holder, body, self._chunk_timeout_ms, bulk=True)
        if isinstance(answer, Lost):
            return answer
        where = f"chunk {chunk.chunk_index} of {folder.manifest.files[chunk.file_index].path}"
        if not all(isinstance(piece, bytes | memoryview) for piece in answer):
            return _Bad(f"{where} came as {[type(piece).__name__ for piece in answer]}, not bytes")
        if not await self._thread(folder.write, ask.chunk, answer):
            return _Bad(f"{where} ({sum(map(len, answer))} bytes) does not match its sha256")
        return None

    # -- internals ------------------------------------------------------------------------------

    def _failed(self, name: str, why: str) -> None:
        self.counts["failed"] += 1
        self._failures[name] = why
        self._failures.move_to_end(name)
        while len(self._failures) > MAX_FAILURES_KEPT:
            self._failures.popitem(last=False)
        log.warning("pull of model %s failed: %s", name, why)

    def _ended(self, name: str, task: asyncio.Task[StoredModel]) -> None:
        self._tasks.pop(name, None)
        self._pulls.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone away
        self._on_change()

    async def _thread(self, call: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)


def _checked(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _check_space(folder: PartialFolder, needed: int) -> None:
    free = shutil.disk_usage(folder.folder).free
    if free < needed:
        raise ModelUnavailable(f"needs {needed} more bytes on this node's disk, which has {free} free")
