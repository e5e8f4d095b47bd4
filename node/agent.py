"""The peer agent: what `meshnode join` runs on every machine. It builds the parts and connects them.

In the order ``start`` builds them:

1. the node's identity from sqlite (``store.py``);
2. its three sockets, bound before anything else so every address is known (``agent_sockets.py``):
   membership, data plane and HTTP, and the addresses peers are told to dial;
3. the replica table (``serving/replicas.py``), the membership core and the runner that owns it
   (``membership/runner.py``), placement (``serving/deployments.py``), the forwarder and its links
   (``dataplane/``), and this node's gossiped metadata (``membership/self_meta.py``);
4. then it starts them: gossip, HTTP, mDNS (``membership/discovery.py``), placement, and the tasks
   that sample load and detect accelerators.

The agent is not on the request path: HTTP hands requests to the forwarder, the data plane to the
replica table. What it keeps are the few reactions that join parts: a member that died or left
fails its outstanding requests over at once; a winning deployment record is persisted; anything
that changes what this node serves is gossiped. Nothing here blocks the loop: accelerator detection
imports torch in a subprocess, sqlite calls go to one thread of their own.

Stopping is graceful: the node gossips that it has ``left`` (so peers do not wait for the failure
detector), waits until that news has been sent its full count or a timeout, then drains its
replicas while HTTP and the data plane still answer, and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .agent_run import run_agent
from .agent_sockets import bind_sockets, close_opened
from .config import AgentConfig
from .dataplane.forward import Forwarder
from .dataplane.links import PeerLinks
from .dataplane.reverse import ReverseLinks
from .http.app import mesh_body
from .http.events import EventFeed
from .http.model_pull_metrics import ModelPullCollector
from .http.openai.image_store import ImageStore
from .http.predict import PredictLimits
from .http.request_metrics import RequestMeter
from .http.server import http_server, serve_http, tls_context
from .http.stats import Parts
from .inference.devices import detect_cpu
from .load import LoadGossip, LoadSampler
from .membership.runner import GossipRunner
from .membership.seed_watch import watch_seeds
from .membership.self_meta import SelfMeta
from .mesh.effects import MemberChanged
from .mesh.envelope import Call, Envelope
from .mesh.membership import Membership
from .mesh.records import Record
from .mesh.routing import Locality
from .mesh.traffic import Totals
from .mesh.types import Address, NodeId, Status
from .models.node_models import CHANNELS as MODEL_CHANNELS
from .models.node_models import NodeModels
from .serving.deployments import Deployments
from .serving.job_files import JobFiles
from .serving.job_limits import JobLimits
from .serving.job_peers import JOBS_CHANNEL, JobPeers
from .serving.job_store import JobStore
from .serving.job_webhooks import webhook_sender
from .serving.jobs import JobService
from .serving.moderation import Moderator
from .serving.replicas import Replicas
from .store import NodeStore
from .trust.mesh_trust import announce, load_trust
from .trust.rotation import Rotation

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Agent:
    """One meshnode peer. ``start`` builds and starts every part; ``stop`` leaves and closes them."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node_id = ""
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._joined = False
        # sqlite connections belong to one thread: every store call goes through this one.
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._closers: list[Callable[[], object]] = []  # sockets bound so far, for a failed start
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, settle: Callable[[], None] = lambda: None) -> None:
        """Bind sockets, build the parts, `settle` (the heap), start gossip, HTTP, discovery, placement."""
        config = self.config
        loop = asyncio.get_running_loop()
        store = self._store = await self._in_store_thread(lambda: NodeStore(config.data_dir))
        self._closers.append(lambda: self._in_store_thread(store.close))
        identity = await self._in_store_thread(store.load_identity)
        self.node_id = node_id = identity.node_id
        self._trust = trust = await self._in_store_thread(lambda: load_trust(config))
        rotation = Rotation(trust, config.mesh_id, config.data_dir, self._in_store_background)
        membership_config = config.membership()

        # 2. Sockets first: a port in use fails the start before anything runs.
        self._replicas = replicas = Replicas(node_id=node_id, config=config, on_change=self._serving_changed)
        self.sockets = sockets = bind_sockets(
            config, trust, serve_local=self._serve_local, submit_local=replicas.submit_local,
            hand_local=replicas.hand_local if config.serve_worker_lanes else None,
            queue_of=replicas.queue_of, closers=self._closers,
        )  # fmt: skip
        self._transport = sockets.transport
        self._dataplane = dataplane = sockets.dataplane

        # 3. The parts, connected.
        sampler = LoadSampler()
        load = sampler.sample()
        base = sockets.meta(config)
        device = detect_cpu()
        core = Membership(
            membership_config,
            NodeId(node_id),
            Address(sockets.mesh_addr),
            base,
            rng=random.Random(),
            now=loop.time(),
            incarnation=identity.incarnation,
            seeds=tuple(Address(seed) for seed in config.seeds),
        )
        self._runner = runner = GossipRunner(
            core,
            self._transport,
            config.mesh_id,
            trust.keyring,
            on_change=self._on_member_changed,
            on_incarnation=lambda incarnation: self._in_store_background(
                lambda: store.save_incarnation(incarnation)
            ),
            on_record=self._on_record,
            on_key=lambda key: self._in_store_background(lambda: store.save_key(key)),
            on_keyring=rotation.adopt,
            on_view=self._on_view,
        )
        self.deployments = deployments = Deployments(
            node_id=NodeId(node_id),
            config=config,
            pinned=dict(spec.partition("=")[::2] for spec in config.deploy),
            replicas=replicas,
            membership=runner,
            publish=self._serving_changed,
            persist=lambda record: self._in_store_background(lambda: store.save_record(record)),
            forget=lambda names: self._in_store_background(lambda: store.forget_records(names)),
        )
        self._links = PeerLinks.of(config, trust.tokens[0])
        # Links to this node's relays' data ports, while nobody can dial it (docs/edge.md).
        self._reverse = ReverseLinks(
            NodeId(node_id), dataplane, lambda: self._links.token, config.max_frame_bytes
        )
        self._forwarder = Forwarder(
            name=config.name,
            locality=Locality(NodeId(node_id), config.region, config.zone),
            view=runner,
            replicas=replicas,
            links=self._links,
            cold_start=deployments.wait_for_replica,
        )
        self._jobs = JobService(
            me=NodeId(node_id),
            open_store=lambda: JobStore(config.data_dir),
            files=JobFiles(config.data_dir / "job-results"),
            peers=JobPeers(runner, self._forwarder.call_peer),
            serve=self._forwarder.serve,
            known=deployments.known,
            limits=JobLimits.of(config),
            webhooks=webhook_sender(config, rotation, sockets.http_addr),
        )
        # The models held here, pulled and served to peers (docs/models.md); the store is read before
        # the metadata first gossips it. Replicas of a deployment naming a model get it from the pulls.
        self.models = models = NodeModels(
            config,
            me=NodeId(node_id),
            members=runner,
            call_peer=self._forwarder.call_peer,
            publish=self._serving_changed,
        )
        await models.start()
        replicas.use_models(models.pulls, lambda name: _model_of(deployments.record(name)))
        # Requests this node takes from clients, per deployment: /metrics and the gossiped traffic.
        meter = RequestMeter(lambda name: deployments.record(name) is not None)  # bounded labels
        forwarder = self._forwarder
        self._meta = SelfMeta(
            base,
            runner=runner,
            replicas=replicas,
            waiting=deployments.waiting,
            device=device,
            sampler=sampler,
            load=load,
            max_bytes=membership_config.max_meta_bytes,
            traffic=lambda: Totals(meter.totals(), dict(forwarder.sent)),
            store=models.service.gossip,
            pulls=models.pulls.gossip,
        )
        runner.publish_meta(self._meta.build())
        # GET /v1/events, the dashboard
        self._events = EventFeed(
            self.mesh_view, deployments.views, jobs=self._jobs.table.held, keepalive_s=config.sse_keepalive_s
        )
        forwarder.on_failover = self._events.failover
        forwarder.moderation = Moderator(deployments.record)  # each deployment's checks (docs/apps.md)
        rotation.connect(runner, dataplane.keys, self._links, self._serving_changed)
        self._server = http_server(
            node=self,
            deployments=deployments,
            stats=Parts(
                runner, self._transport, dataplane, self._links, forwarder, deployments, self._jobs, replicas
            ).stats,
            serve=self._forwarder.serve,
            limits=PredictLimits(config.request_timeout_s, config.max_request_bytes, config.sse_keepalive_s),
            keys=runner,
            rotation=rotation,
            members=runner,
            mesh_id=config.mesh_id,
            images=await ImageStore.of_node(config, node_id),
            jobs=self._jobs,
            events=self._events,
            meter=meter,
            insecure=config.insecure_http,
            tls=tls_context(config.tls_cert, config.tls_key),  # a bad file fails the start here
            models=models.service,
            pulls=models.pulls,
            collectors=(ModelPullCollector(models.pulls, models.chunks),),
        )

        # 4. Running. A full collection stalls the loop (50-70 ms, 4x that on a busy machine): done
        # now, it delays no peer's probe (after, it made a restarted node look dead at once).
        settle()
        self._closers.clear()
        await self._jobs.start()  # its copies loaded before any peer can send it more
        self._http_task = await serve_http(self._server, sockets.http_socket)
        runner.start()  # last: what starting costs (imports, a first thread) delays no probe
        self._background += [
            asyncio.create_task(
                self._meta.refresh_forever(config.load_sample_interval_s, LoadGossip.of(config)),
                name="meta-refresh",
            ),
            asyncio.create_task(self._meta.detect_devices(), name="detect-devices"),
            asyncio.create_task(watch_seeds(config, runner), name="seed-watch"),
        ]
        self._discovery = await sockets.start_mdns(config, node_id, runner)
        for key in await self._in_store_thread(store.load_keys):
            runner.merge_key(key)
        if trust.saved_ring is not None:  # gossiped on, so nodes that missed the rotation catch up
            runner.merge_keyring(trust.saved_ring)
        await deployments.start(await self._in_store_thread(store.load_records))
        log.info(
            "node %s (%s) up: %s, incarnation %d, event loop %s",
            config.name,
            node_id[:8],
            sockets.describe(),
            identity.incarnation,
            type(loop).__module__.split(".")[0],
        )
        announce(trust, config, sockets.mesh_addr, sockets.http_addr)

    async def close_after_failed_start(self) -> None:
        """Close what a start that raised had opened (sockets, the store)."""
        await close_opened(self._closers)
        self._store_thread.shutdown(wait=False)

    def request_stop(self) -> None:
        """Ask the agent to leave and stop (safe from a signal handler)."""
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Wait until a stop is requested, then stop gracefully."""
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Leave the mesh gracefully, then close everything."""
        if self._stopping:
            return
        self._stopping = True
        if self._discovery is not None:
            await self._discovery.stop()
        self._runner.leave()
        await self._wait_leave_announced()
        try:
            async with asyncio.timeout(5.0):
                await self._runner.stop()
        except TimeoutError:
            log.error("gossip tasks did not stop within 5 s; closing anyway")
        await self.deployments.stop()
        await self._jobs.stop()
        await self.models.close()  # what each pull fetched stays for the next start
        # Drain local replicas after leaving, so peers stop routing here first; peers' requests
        # still running here finish over the data plane, which closes after them.
        await self._replicas.stop_all()
        self._reverse.close()
        await self._dataplane.close()
        self._links.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._events.close()  # open event streams would hold uvicorn's shutdown
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self._http_task
        self._transport.close()
        await self._in_store_thread(self._store.close)
        self._store_thread.shutdown(wait=False)
        log.info("node %s stopped", self.node_id[:8])

    # -- what the HTTP API reads (``http/app.py``'s MeshView) -------------------------------

    def mesh_view(self) -> dict[str, Any]:
        """The body of ``GET /v1/mesh``."""
        return mesh_body(self.node_id, self._runner.members())

    def readiness(self) -> tuple[bool, str]:
        """Ready once gossip runs and, when seeds were given, one of them (or anyone) answered."""
        if self._stopping:
            return False, "stopping"
        if self.config.seeds and not self._joined:
            return False, "joining: no seed has answered yet"
        return True, "ready"

    # -- reactions that join parts ---------------------------------------------------------

    def _serving_changed(self) -> None:
        """What this node serves changed (a replica, a sit-out, requests waiting): gossip it."""
        self._meta.publish()

    def _on_record(self, record: Record) -> None:
        self.deployments.on_record(record)

    def _on_view(self) -> None:
        self.deployments.on_view()
        self._forwarder.view_changed()
        self._reverse.sync(self._runner.relaying.relays, self._runner.core.members)

    def _serve_local(self, call: Call) -> AsyncIterator[Envelope]:
        """A peer's call: job copies to the job service, store changes to the models, the rest to replicas."""
        if call.deployment == JOBS_CHANNEL:
            return self._jobs.table.serve_peer(call)
        if call.deployment in MODEL_CHANNELS:
            return self.models.serve_peer(call)
        return self._replicas.serve_local(call)

    def _on_member_changed(self, change: MemberChanged) -> None:
        member = self._runner.member(change.node)
        name = member.meta.name if member else "?"
        log.info("member %s (%s): %s -> %s", name, change.node[:8], change.previous, change.current.value)
        self._events.member_changed(change.node, change.previous, change.current)
        # Job holders and runners move with who is alive, not with metadata.
        self._jobs.sync.on_member(change.node, change.previous, change.current)
        if change.current == Status.ALIVE:
            self._joined = True
        elif change.current == Status.LEFT:
            self._links.retire(change.node)  # it drains: what it runs is answered, nothing new goes
            if member is not None:  # it said goodbye for good; a dead one may be reconnected to
                self._transport.forget(member.addr)
        elif change.current.gone:  # requests outstanding there fail over now, not at their deadline
            self._links.forget(change.node, f"{name} is {change.current.value}")

    # -- internals -------------------------------------------------------------------------

    async def _wait_leave_announced(self) -> None:
        loop = asyncio.get_running_loop()
        core = self._runner.core
        deadline = loop.time() + self.config.leave_timeout_s
        while not core.leave_announced() and loop.time() < deadline and core.has_peers():
            await asyncio.sleep(core.config.gossip_interval_s)

    async def _in_store_thread(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call)

    def _in_store_background(self, call: Callable[[], object]) -> None:
        """A store write that nobody waits for (failures are logged)."""
        task = asyncio.create_task(self._in_store_thread(call))
        task.add_done_callback(_log_failure)


def _model_of(record: Record | None) -> str | None:
    """The model of the mesh's stores a deployment names, if it names one."""
    return record.spec.model if record is not None and record.spec is not None else None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed: %s", task.exception())


__all__ = ["Agent", "run_agent"]
