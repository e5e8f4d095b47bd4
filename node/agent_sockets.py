"""Where a node is reached: its three sockets, bound before anything else runs, and what peers are told.

``bind_sockets`` binds membership (``membership/transport.py``), the data plane
(``dataplane/server.py``) and HTTP (``http/server.py``) in that order, so a port in use fails the
start before any part runs. Each socket's closer goes onto the agent's list as soon as the socket
exists, and ``close_opened`` closes them if a later step of the start fails.

Peers are told ``--advertise-mesh`` / ``--advertise-data`` when given (NAT, containers; checked in
``AgentConfig``), else an address derived from the bind: the bind host, or for a wildcard the first
``--interface`` or a local IP, with the bound port. A derived loopback address is refused before
anything is bound while a seed or an interface is on another machine (``addresses.check_derived``).
``BoundSockets`` carries these addresses into the node's gossiped metadata (``meta``) and its mDNS
announcement (``start_mdns``, which also joins the nodes mDNS finds).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from . import __version__
from .addresses import advertise_host, check_derived, join_host_port, parse_host_port, public_host
from .config import AgentConfig
from .dataplane.server import DataPlaneServer, HandLocal, QueueOf, ServeLocal, SubmitLocal
from .http.server import bind_http
from .membership.discovery import Advert, Discovery, start_discovery
from .membership.runner import GossipRunner
from .membership.transport import MembershipTransport
from .mesh.metadata import NodeMeta
from .mesh.types import Address, NodeId
from .trust.keyring import SEAL_OVERHEAD_BYTES
from .trust.mesh_trust import MeshTrust

__all__ = ["BoundSockets", "bind_sockets", "close_opened"]


@dataclass(frozen=True)
class BoundSockets:
    """What ``bind_sockets`` bound, and the address of each that peers are told to dial."""

    transport: MembershipTransport
    dataplane: DataPlaneServer
    http_socket: socket.socket
    # Where mDNS announces: the --interface addresses, else this machine's address derived from
    # --mesh (never an --advertise-* address, which may belong to a NAT router or the container host).
    mdns_interfaces: tuple[str, ...]
    # "host:port" of the gossip socket as peers dial it: the core's own address, NodeMeta.mesh.
    mesh_addr: str
    # "host:port" of the data plane as peers dial it: NodeMeta.data.
    data_addr: str
    # "host:port" of the HTTP API: NodeMeta.http.
    http_addr: str

    def meta(self, config: AgentConfig) -> NodeMeta:
        """This node's gossiped metadata before load and devices: names, labels, advertised addresses."""
        return NodeMeta(
            name=config.name,
            http=self.http_addr,
            mesh=self.mesh_addr,
            data=self.data_addr,
            data_key=self.dataplane.public_key,
            region=config.region,
            zone=config.zone,
            tls=config.tls_cert is not None,
        )

    def describe(self) -> str:
        """The advertised addresses, as the start-up log line shows them."""
        return f"http {self.http_addr}, mesh {self.mesh_addr}, data {self.data_addr}"

    async def start_mdns(self, config: AgentConfig, node_id: str, runner: GossipRunner) -> Discovery | None:
        """Announce the advertised mesh address by mDNS (as gossip does) and join whom it finds."""
        if not config.mdns:
            return None

        def found(advert: Advert) -> None:  # only a hint: join a node not already counted as live
            member = runner.member(NodeId(advert.node_id))
            if member is None or member.status.gone:
                runner.join([Address(advert.mesh_addr)])

        tls = config.tls_cert is not None
        advert = Advert(
            node_id, config.mesh_id, config.name, self.mesh_addr, self.http_addr, __version__, tls=tls
        )
        return await start_discovery(list(self.mdns_interfaces), advert, found)


def bind_sockets(
    config: AgentConfig,
    trust: MeshTrust,
    *,
    serve_local: ServeLocal,
    submit_local: SubmitLocal,
    hand_local: HandLocal | None,
    queue_of: QueueOf,
    closers: list[Callable[[], object]],
) -> BoundSockets:
    """Bind gossip, data plane and HTTP; ConfigError (and nothing bound) for an undialable address."""
    host = advertise_host(config.mesh_host, config.interfaces)
    data_host = public_host(config.data_host, host)
    for flag, given, bind_host, bind_port, derived in (
        ("--mesh", config.advertise_mesh, config.mesh_host, config.mesh_port, host),
        ("--data", config.advertise_data, config.data_host, config.data_port, data_host),
    ):
        if not given:
            bind = join_host_port(bind_host, bind_port)
            check_derived(flag, bind, derived, seeds=config.seeds, interfaces=config.interfaces)

    transport = MembershipTransport(
        config.mesh_host,
        config.mesh_port,
        max_message_bytes=config.membership().max_packet_bytes + SEAL_OVERHEAD_BYTES,
    )
    closers.append(transport.close)
    mesh_port = transport.bind()
    dataplane = DataPlaneServer(
        config.data_host,
        config.data_port,
        serve_local=serve_local,
        submit_local=submit_local,
        hand_local=hand_local,
        queue_of=queue_of,
        max_frame_bytes=config.max_frame_bytes,
        max_in_flight_per_peer=config.serve_max_in_flight_per_peer,
        chunk_bytes=config.forward_chunk_bytes,
        keys=trust.server_keys,
        tokens=trust.tokens,
    )
    closers.append(dataplane.close)
    data_port = dataplane.bind()
    http_socket = bind_http(config.http_host, config.http_port)
    closers.append(http_socket.close)
    return BoundSockets(
        transport=transport,
        dataplane=dataplane,
        http_socket=http_socket,
        mdns_interfaces=config.interfaces or (host,),
        mesh_addr=_advertised(config.advertise_mesh) or join_host_port(host, mesh_port),
        data_addr=_advertised(config.advertise_data) or join_host_port(data_host, data_port),
        http_addr=join_host_port(public_host(config.http_host, host), http_socket.getsockname()[1]),
    )


def _advertised(value: str) -> str:
    """An --advertise-* address in the form peers parse (IPv6 bracketed); "" when not given."""
    return join_host_port(*parse_host_port(value)) if value else ""


async def close_opened(closers: list[Callable[[], object]]) -> None:
    """Close what a failed start opened, newest first (a closer may return an awaitable)."""
    for close in reversed(closers):
        result = close()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
