"""The peer agent: what `meshnode join` runs on every machine.

It wires the shells together, in start order: the node's identity from sqlite (``store``), the
membership socket (``transport``) and the SWIM core running on it (``gossip``), the HTTP API
(``http_api`` on uvicorn, in this same event loop), mDNS (``discovery``) and a metadata refresher
that samples load and gossips it when it changes meaningfully. Nothing here blocks the loop:
accelerator detection imports torch in a subprocess, sqlite writes go to a thread.

Stopping is graceful: the node gossips that it has ``left`` (so peers do not wait for the failure
detector), waits until that news has been sent its full count or a timeout, then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psutil
import uvicorn

from . import __version__
from .config import AgentConfig
from .dataplane.forward import Forwarder, Served
from .dataplane.links import PeerLinks
from .dataplane.server import DataPlaneServer
from .errors import ConfigError, NotReady, join_host_port
from .http.server import http_server, wait_http_started
from .inference.devices import DeviceInfo, detect_cpu, detect_full
from .load import LoadSample, LoadSampler
from .membership.discovery import Advert, Discovery
from .membership.runner import GossipRunner
from .membership.transport import MembershipTransport
from .mesh.effects import MemberChanged
from .mesh.envelope import Call, Envelope
from .mesh.membership import Membership
from .mesh.metadata import NodeMeta
from .mesh.routing import Locality
from .mesh.types import Address, NodeId, Status
from .serving.deployments import Deployments
from .serving.replica import Replica, ReplicaSettings
from .store import NodeStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Agent:
    """One meshnode peer: membership, discovery and the HTTP API in one event loop."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node_id = ""
        self.membership_config = config.membership()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._store: NodeStore | None = None
        # sqlite connections belong to one thread: every store call goes through this one.
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._transport: MembershipTransport | None = None
        self._runner: GossipRunner | None = None
        self._core: Membership | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._discovery: Discovery | None = None
        self._background: list[asyncio.Task[None]] = []
        self._sampler = LoadSampler()
        self._device: DeviceInfo = detect_cpu()
        self._load: LoadSample | None = None
        self._joined = False
        self.http_addr = ""
        self.mesh_addr = ""
        self.data_addr = ""
        self._dataplane: DataPlaneServer | None = None
        self._links = PeerLinks(
            max_frame_bytes=config.max_frame_bytes,
            max_in_flight_per_peer=config.forward_max_in_flight_per_peer,
            connect_timeout_s=config.forward_connect_timeout_s,
        )
        self._forwarder = Forwarder(
            name=config.name,
            locality=lambda: Locality(NodeId(self.node_id), config.region, config.zone),
            members=lambda: self._core.members.values() if self._core is not None else (),
            view_version=lambda: self._core.view_version if self._core is not None else 0,
            local_replica=self._replicas_get,
            links=self._links,
            cold_start=self._wait_for_replica,
        )
        self._replicas: dict[str, Replica] = {}
        self.deployments: Deployments | None = None
        self._models: tuple[str, ...] = ()
        self._hints: tuple[str, ...] = ()
        self._run_dir: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind sockets, start gossip and HTTP, and begin joining."""
        config = self.config
        self._store = await self._in_store_thread(lambda: NodeStore(config.data_dir))
        identity = await self._in_store_thread(self._store.load_identity)
        self.node_id = identity.node_id
        advertise_host = _advertise_host(config.mesh_host, config.interfaces)

        self._transport = MembershipTransport(
            config.mesh_host, config.mesh_port, max_message_bytes=self.membership_config.max_packet_bytes
        )
        mesh_port = self._transport.bind()
        self.mesh_addr = join_host_port(advertise_host, mesh_port)
        self._dataplane = DataPlaneServer(
            config.data_host,
            config.data_port,
            serve_local=self._serve_local,
            queue_of=lambda name: replica.in_flight if (replica := self._replicas.get(name)) else 0,
            max_frame_bytes=config.max_frame_bytes,
            max_in_flight_per_peer=config.serve_max_in_flight_per_peer,
            chunk_bytes=config.forward_chunk_bytes,
        )
        data_port = self._dataplane.bind()
        data_host = config.data_host if config.data_host not in ("0.0.0.0", "::", "") else advertise_host
        self.data_addr = join_host_port(data_host, data_port)

        self._server = http_server(self, config.http_host, config.http_port)
        self._server_task = asyncio.create_task(self._server.serve(), name="http")
        http_port = await wait_http_started(self._server, self._server_task)
        http_host = config.http_host if config.http_host not in ("0.0.0.0", "::", "") else advertise_host
        self.http_addr = join_host_port(http_host, http_port)

        loop = asyncio.get_running_loop()
        self._load = self._sampler.sample()
        self._core = Membership(
            self.membership_config,
            NodeId(self.node_id),
            Address(self.mesh_addr),
            self._meta(),
            rng=random.Random(),
            now=loop.time(),
            incarnation=identity.incarnation,
            seeds=tuple(Address(seed) for seed in config.seeds),
        )
        store = self._store
        self.deployments = Deployments(
            node_id=NodeId(self.node_id),
            pinned=dict(spec.partition("=")[::2] for spec in config.deploy),
            replicas=self._replicas,
            make_replica=self._make_replica,
            core=lambda: self._core,
            carry_out=lambda effects: self._runner.carry_out(effects) if self._runner else None,
            publish=self._publish_meta,
            persist=lambda record: self._in_store_background(lambda: store.save_record(record)),
            forget=lambda names: self._in_store_background(lambda: store.forget_records(names)),
            interval_s=config.placement_interval_s,
            queue_size=config.cold_start_queue_size,
            tombstone_ttl_s=config.deployment_tombstone_ttl_s,
            setup_attempts=config.replica_setup_attempts,
            failed_hold_s=config.replica_failed_hold_s,
            startup_grace_s=config.placement_startup_grace_s,
            unknown_grace_s=config.unknown_deployment_grace_s,
        )
        self._runner = GossipRunner(
            self._core,
            self._transport,
            config.mesh_id,
            on_change=self._on_member_changed,
            on_incarnation=self._persist_incarnation,
            on_record=self.deployments.on_record,
            on_view=self.deployments.on_view,
        )
        self._runner.start()
        self._background.append(asyncio.create_task(self._refresh_meta_forever(), name="meta-refresh"))
        self._background.append(asyncio.create_task(self._detect_devices(), name="detect-devices"))
        if config.mdns:
            await self._start_discovery(advertise_host)
        await self.deployments.start(await self._in_store_thread(store.load_records))
        log.info(
            "node %s (%s) up: http %s, mesh %s, data %s, incarnation %d, event loop %s",
            config.name,
            self.node_id[:8],
            self.http_addr,
            self.mesh_addr,
            self.data_addr,
            identity.incarnation,
            type(loop).__module__.split(".")[0],
        )

    def request_stop(self) -> None:
        """Ask the agent to leave and stop (safe from a signal handler)."""
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Wait until a stop is requested, then stop gracefully."""
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Leave the mesh gracefully, then close everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._discovery is not None:
            await self._discovery.stop()
        if self._core is not None and self._runner is not None:
            self._runner.carry_out(self._core.leave(self._runner.now()))
            await self._wait_leave_announced()
            try:
                async with asyncio.timeout(5.0):
                    await self._runner.stop()
            except TimeoutError:
                log.error("gossip tasks did not stop within 5 s; closing anyway")
        if self.deployments is not None:
            await self.deployments.stop()
        # Drain local replicas after leaving, so peers stop routing here first; peers' requests
        # still running here finish over the data plane, which closes after them.
        await asyncio.gather(*(replica.stop() for replica in self._replicas.values()), return_exceptions=True)
        if self._dataplane is not None:
            await self._dataplane.close()
        self._links.close()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._server_task
        if self._transport is not None:
            self._transport.close()
        if self._store is not None:
            await self._in_store_thread(self._store.close)
        self._store_thread.shutdown(wait=False)
        log.info("node %s stopped", self.node_id[:8])

    # -- serving -------------------------------------------------------------------------

    @property
    def route_name(self) -> str:
        """This node's name in X-Mesh-Route."""
        return self.config.name

    @property
    def request_limits(self) -> tuple[float, int]:
        """(default request timeout in seconds, max request body bytes)."""
        return self.config.request_timeout_s, self.config.max_request_bytes

    async def serve(self, call: Call, hint: str | None = None) -> Served:
        """Commit `call` to the best replica in the mesh (``node/forward.py``)."""
        return await self._forwarder.serve(call, hint)

    def _serve_local(self, call: Call) -> AsyncIterator[Envelope]:
        """A peer's request for a replica here (it never goes on to a third node)."""
        replica = self._replicas.get(call.deployment)
        if replica is None:
            raise NotReady(f"{self.config.name} has no replica of {call.deployment}", retry_after_s=1.0)
        return replica.call(call)

    async def _wait_for_replica(self, deployment: str, deadline: float) -> None:
        if self.deployments is None:
            raise NotReady("the agent is starting", retry_after_s=1.0)
        await self.deployments.wait_for_replica(deployment, deadline)

    def _replicas_get(self, deployment: str) -> Replica | None:
        return self._replicas.get(deployment)

    def replica_states(self) -> dict[str, str]:
        """Deployment name -> this node's replica state."""
        return {name: replica.status for name, replica in self._replicas.items()}

    def _make_replica(self, name: str, app: str, pinned: bool) -> Replica:
        """A replica of `name` on this node (not started yet)."""
        config = self.config
        settings = ReplicaSettings(
            setup_timeout_s=config.replica_setup_timeout_s,
            queue_size=config.replica_queue_size,
            hang_grace_s=config.replica_hang_grace_s,
            restart_initial_s=config.replica_restart_initial_s,
            restart_max_s=config.replica_restart_max_s,
            drain_timeout_s=config.replica_drain_timeout_s,
            max_frame_bytes=config.max_frame_bytes,
        )
        return Replica(
            name,
            app,
            replica_id=f"{name}-{self.node_id[:8]}",
            endpoint=self._replica_endpoint(name),
            data_dir=config.data_dir,
            settings=settings,
            on_change=self._on_replicas_changed,
            pinned=pinned,
        )

    def _replica_endpoint(self, deployment: str) -> str:
        """Where the agent and a replica's worker meet.

        On Linux an abstract socket: it has no file, so an agent killed with -9 leaves nothing
        behind. Elsewhere a socket file in a short temporary folder (ipc paths are limited to about
        100 bytes), removed on a clean stop.
        """
        name = f"meshnode-{self.node_id[:12]}-{os.getpid()}-{deployment}"
        if sys.platform.startswith("linux"):
            return f"ipc://@{name}"
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="meshnode-"))
        return f"ipc://{self._run_dir / deployment}.sock"

    def _on_replicas_changed(self) -> None:
        """Gossip which models this node has ready and its routing hints."""
        models: set[str] = set()
        hints: set[str] = set()
        for name, replica in self._replicas.items():
            if replica.serving:
                models.add(name)
                models.update(replica.models)
                hints.update(replica.hints)
        self._models, self._hints = tuple(sorted(models)), tuple(sorted(hints))
        self._publish_meta()

    def _publish_meta(self) -> None:
        """Gossip this node's metadata now (replicas, waiting requests, models and hints)."""
        if self._core is not None and self._runner is not None:
            self._core.update_meta(self._meta())
            self._runner.wake()

    # -- views for the HTTP API ------------------------------------------------------------

    def mesh_view(self) -> dict[str, Any]:
        """The body of ``GET /v1/mesh``."""
        core = self._core
        if core is None:
            return {"self": self.node_id, "members": []}
        members = []
        for member in core.members.values():
            meta = member.meta
            members.append(
                {
                    "id": member.node,
                    "name": meta.name,
                    "status": member.status.value,
                    "http": meta.http,
                    "mesh": member.addr,
                    "data": meta.data,
                    "region": meta.region,
                    "zone": meta.zone,
                    "device": meta.device,
                    "load": meta.load,
                    "models": list(meta.models),
                    "hints": list(meta.hints),
                    "incarnation": member.incarnation,
                    "replicas": meta.replicas,
                    "speeds": meta.speeds,
                }
            )
        members.sort(key=lambda m: (m["name"], m["id"]))
        return {"self": self.node_id, "members": members}

    def readiness(self) -> tuple[bool, str]:
        """Ready once gossip runs and, when seeds were given, one of them (or anyone) answered."""
        if self._core is None or self._stopped.is_set():
            return False, "starting" if not self._stopped.is_set() else "stopping"
        if self.config.seeds and not self._joined:
            return False, "joining: no seed has answered yet"
        return True, "ready"

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and tests: packets, bytes, drops by reason, members by status."""
        runner, transport, core = self._runner, self._transport, self._core
        by_status = {status.value: 0 for status in Status}
        if core is not None:
            for member in core.members.values():
                by_status[member.status.value] += 1
        dataplane = self._dataplane
        return {
            "routing": dict(self._forwarder.counts),
            "forward_in_flight": {
                (core.members[node].meta.name if core and node in core.members else node): count
                for node, count in self._links.in_flight().items()
            },
            "data_received": dataplane.received if dataplane else 0,
            "data_dropped": {**(dataplane.dropped if dataplane else {}), **_prefixed(self._links.dropped)},
            "received": runner.received if runner else 0,
            "bytes_in": runner.bytes_in if runner else 0,
            "bytes_out": runner.bytes_out if runner else 0,
            "sent": transport.sent if transport else 0,
            "send_dropped": transport.send_dropped if transport else 0,
            "dropped": dict(runner.dropped) if runner else {},
            "members": by_status,
            "deployments": self.deployments.stats() if self.deployments else {"by_name": {}, "actions": {}},
            "incarnation": core.incarnation if core else 0,
            "awareness": core.awareness.score if core else 0,
        }

    # -- internals -------------------------------------------------------------------------

    def _meta(self) -> NodeMeta:
        config = self.config
        return NodeMeta(
            name=config.name,
            http=self.http_addr,
            mesh=self.mesh_addr,
            data=self.data_addr,
            region=config.region,
            zone=config.zone,
            device=self._device.to_wire(),
            load=self._load.to_wire() if self._load else {},
            models=self._models,
            hints=self._hints,
            speeds=self._speeds(),
            replicas={
                **(self.deployments.failed_entries() if self.deployments is not None else {}),
                **{name: replica.gossip_state() for name, replica in self._replicas.items()},
            },
            waiting=dict(self.deployments.waiting) if self.deployments is not None else {},
        ).fit(self.membership_config.max_meta_bytes)

    def _speeds(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        measured = {name: replica.speed.to_wire(now) for name, replica in self._replicas.items()}
        return {name: speed for name, speed in measured.items() if speed}

    def _on_member_changed(self, change: MemberChanged) -> None:
        assert self._core is not None
        member = self._core.members.get(change.node)
        name = member.meta.name if member else "?"
        log.info("member %s (%s): %s -> %s", name, change.node[:8], change.previous, change.current.value)
        if change.current == Status.ALIVE:
            self._joined = True
        elif change.current.gone:
            # Requests outstanding there fail over now, not at their deadline.
            self._links.forget(change.node, f"{name} is {change.current.value}")
            if change.current == Status.LEFT and member is not None and self._transport is not None:
                # A node that left says goodbye for good; a dead one may be reconnected to later.
                self._transport.forget(member.addr)

    async def _in_store_thread(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call)

    def _persist_incarnation(self, incarnation: int) -> None:
        store = self._store
        if store is not None:
            self._in_store_background(lambda: store.save_incarnation(incarnation))

    def _in_store_background(self, call: Callable[[], object]) -> None:
        """A store write that nobody waits for (failures are logged)."""
        task = asyncio.create_task(self._in_store_thread(call))
        task.add_done_callback(_log_failure)

    async def _refresh_meta_forever(self) -> None:
        """Sample load and speeds; gossip them on a meaningful change, at most every meta_min_interval_s."""
        assert self._core is not None and self._runner is not None
        loop = asyncio.get_running_loop()
        published = self._load
        published_speeds = self._speeds()
        last_publish = loop.time()
        while True:
            await asyncio.sleep(self.config.load_sample_interval_s)
            sample = self._sampler.sample(in_flight=sum(r.in_flight for r in self._replicas.values()))
            due = loop.time() - last_publish >= self.membership_config.meta_min_interval_s
            speeds = self._speeds()
            changed = (
                published is None
                or sample.differs_from(published, cpu_points=self.config.load_cpu_change_points)
                or _speeds_moved(published_speeds, speeds)
            )
            if due and changed:
                self._load = published = sample
                published_speeds = speeds
                last_publish = loop.time()
                self._core.update_meta(self._meta())
                self._runner.wake()

    async def _detect_devices(self) -> None:
        """Accelerators need torch: detect them in a subprocess, then gossip the result."""
        device = await detect_full(cache_dir=_machine_cache_dir())
        if device != self._device and self._core is not None and self._runner is not None:
            self._device = device
            self._core.update_meta(self._meta())
            self._runner.wake()

    async def _start_discovery(self, advertise_host: str) -> None:
        interfaces = list(self.config.interfaces) or [advertise_host]
        advert = Advert(
            node_id=self.node_id,
            mesh_id=self.config.mesh_id,
            name=self.config.name,
            mesh_addr=self.mesh_addr,
            http_addr=self.http_addr,
            version=__version__,
        )
        self._discovery = Discovery(interfaces=interfaces, advert=advert, on_found=self._on_found)
        try:
            await self._discovery.start()
        except OSError as exc:
            log.warning("mDNS disabled: %s", exc)
            self._discovery = None

    def _on_found(self, advert: Advert) -> None:
        """mDNS is a hint: join a node we do not already count as live."""
        core, runner = self._core, self._runner
        if core is None or runner is None or core.leaving:
            return
        member = core.members.get(NodeId(advert.node_id))
        if member is None or member.status.gone:
            runner.carry_out(core.join([Address(advert.mesh_addr)], runner.now()))

    async def _wait_leave_announced(self) -> None:
        assert self._core is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leave_timeout_s
        interval = self.membership_config.gossip_interval_s
        while not self._core.leave_announced() and loop.time() < deadline and self._core.has_peers():
            await asyncio.sleep(interval)


def _advertise_host(bind_host: str, interfaces: tuple[str, ...]) -> str:
    """The address peers should use: the bind host, else the first interface, else a local IP."""
    if bind_host not in ("0.0.0.0", "::", "", "*"):
        return bind_host
    if interfaces:
        return interfaces[0]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return "127.0.0.1"


def _machine_cache_dir() -> Path:
    """Per-user cache shared by every agent on this machine ($XDG_CACHE_HOME/meshnode)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshnode"


def _speeds_moved(before: dict[str, Any], after: dict[str, Any], factor: float = 1.25) -> bool:
    """Whether a replica's measured service time is new or moved by more than `factor` either way."""
    for name, speed in after.items():
        old = before.get(name, {}).get("service_ms")
        new = speed.get("service_ms")
        if not old or not new or not 1 / factor <= new / old <= factor:
            return True
    return False


def _prefixed(counts: dict[str, int]) -> dict[str, int]:
    """Drops on our outbound links, told apart from the inbound ones."""
    return {f"reply_{reason}": count for reason, count in counts.items()}


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed: %s", task.exception())


def run_agent(config: AgentConfig) -> int:
    """Run an agent until SIGINT or SIGTERM, then leave gracefully. Returns the exit code."""

    async def main() -> int:
        agent = Agent(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, agent.request_stop)
        try:
            await agent.start()
        except ConfigError as exc:
            log.error("%s", exc)
            await agent.stop()
            return 2
        await agent.wait_stopped()
        return 0

    return _run_event_loop(main(), config.uvloop)


def _run_event_loop(main: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    """Run the agent on uvloop when installed and wanted (less CPU per request), else on asyncio."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.debug("uvloop is not installed; using the asyncio event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


__all__ = ["Agent", "run_agent"]
