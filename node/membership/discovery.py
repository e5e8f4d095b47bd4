"""Finding other nodes on the LAN by mDNS (python-zeroconf, asyncio API).

Each agent registers one ``_meshnode._tcp.local.`` service whose TXT record carries its node id, mesh
id, ports and version (and ``tls=1`` when its HTTP port serves HTTPS), and browses for the others. A
found node is only a hint handed to the caller (``on_found``), who joins it through SWIM:
python-zeroconf keeps PTR records for at least 1125 s, so a node killed with -9 stays "present" in
mDNS long after it is gone, and liveness is SWIM's job alone.
That is why there is no removal callback.

Interfaces are always explicit: zeroconf's default (every interface) would send our multicast out of
the machine's real network card, including from tests that mean to stay on 127.0.0.1.

Questions are sent as QM (multicast replies) rather than zeroconf's default first QU question: several
agents on one machine share UDP port 5353 through SO_REUSEPORT, and the kernel hands a unicast reply
to one of those sockets at random, often not the one that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psutil
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..addresses import join_host_port

__all__ = ["SERVICE_TYPE", "Advert", "Discovery", "browse_once", "start_discovery"]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_meshnode._tcp.local."

# How long one resolution (SRV, TXT and address records) may take before we give up on that event;
# the next announcement or update of the service tries again.
_RESOLVE_TIMEOUT_MS = 3000
# DNS labels are at most 63 bytes; the instance name is one label.
_MAX_LABEL_BYTES = 63
# A TXT entry is at most 255 bytes including "key=".
_MAX_TXT_VALUE_BYTES = 200


@dataclass(frozen=True)
class Advert:
    """What one node says about itself over mDNS."""

    node_id: str
    mesh_id: str
    name: str
    mesh_addr: str  # "host:port" of the gossip socket
    http_addr: str  # "host:port" of the HTTP API
    version: str
    tls: bool = False  # the HTTP API serves HTTPS (TXT "tls=1"; absent from older nodes: plain HTTP)

    @property
    def http_url(self) -> str:
        """Base URL of the node's HTTP API."""
        return f"{'https' if self.tls else 'http'}://{self.http_addr}"


class Discovery:
    """Advertises this node and reports other nodes of the same mesh as they appear or change."""

    def __init__(self, *, interfaces: list[str], advert: Advert, on_found: Callable[[Advert], None]) -> None:
        """Prepare discovery on the given interface addresses; nothing is sent until ``start``."""
        if not interfaces:
            raise ValueError("mDNS needs at least one explicit interface address")
        self._interfaces = list(interfaces)
        self._advert = advert
        self._on_found = on_found
        self._watcher: _Watcher | None = None
        self._info: AsyncServiceInfo | None = None
        self._announcing: Awaitable[object] | None = None

    async def start(self) -> None:
        """Open zeroconf on the interfaces, start browsing and register our service."""
        if self._watcher is not None:
            raise RuntimeError("discovery is already started")
        watcher = _Watcher(self._interfaces, self._accept)
        self._watcher = watcher
        try:
            await watcher.start()
            self._info = _service_info(self._advert, self._interfaces)
            # Awaiting registration covers the name probe (~0.75 s); the announcements that follow run
            # in the background so the agent's startup is not held up by them.
            self._announcing = await watcher.zeroconf.async_register_service(
                self._info, allow_name_change=True
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Send goodbyes and close zeroconf; never raises."""
        announcing, self._announcing = self._announcing, None
        if isinstance(announcing, asyncio.Future) and not announcing.done():
            announcing.cancel()
            with contextlib.suppress(BaseException):
                await announcing
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()

    def _accept(self, advert: Advert) -> None:
        if advert.node_id == self._advert.node_id or advert.mesh_id != self._advert.mesh_id:
            return
        self._on_found(advert)


async def start_discovery(
    interfaces: list[str], advert: Advert, on_found: Callable[[Advert], None]
) -> Discovery | None:
    """Advertise and browse on `interfaces`; None (with a warning) when they cannot carry mDNS."""
    discovery = Discovery(interfaces=interfaces, advert=advert, on_found=on_found)
    try:
        await discovery.start()
    except OSError as exc:
        logger.warning("mDNS disabled: %s", exc)
        return None
    return discovery


async def browse_once(interfaces: list[str], mesh_id: str | None, timeout_s: float) -> list[Advert]:
    """Browse for ``timeout_s`` seconds and return the nodes seen (of ``mesh_id``, or of any mesh)."""
    if not interfaces:
        raise ValueError("mDNS needs at least one explicit interface address")
    found: dict[str, Advert] = {}

    def accept(advert: Advert) -> None:
        if mesh_id is None or advert.mesh_id == mesh_id:
            found[advert.node_id] = advert

    watcher = _Watcher(list(interfaces), accept)
    try:
        await watcher.start()
        # Nothing says when every node has answered, so browsing simply runs for the time asked.
        await asyncio.sleep(timeout_s)
    finally:
        await watcher.stop()
    return sorted(found.values(), key=lambda advert: (advert.name, advert.node_id))


class _Watcher:
    """One zeroconf instance and a browser that resolves every meshnode service it hears of."""

    def __init__(self, interfaces: list[str], on_advert: Callable[[Advert], None]) -> None:
        self._interfaces = interfaces
        self._on_advert = on_advert
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def zeroconf(self) -> AsyncZeroconf:
        if self._zeroconf is None:
            raise RuntimeError("discovery is not started")
        return self._zeroconf

    async def start(self) -> None:
        missing = [ip for ip in self._interfaces if ip not in _local_addresses()]
        if missing:
            # Checked before zeroconf, whose constructor leaks its socket when an address is
            # wrong and whose message ("No such device") does not say which one.
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"cannot start mDNS: {', '.join(missing)} is not an address of this machine",
            )
        try:
            self._zeroconf = AsyncZeroconf(
                interfaces=self._interfaces, ip_version=_ip_version(self._interfaces)
            )
        except OSError as exc:
            # zeroconf's own message ("No such device") does not say which address was wrong.
            raise OSError(
                exc.errno, f"cannot start mDNS on interfaces {self._interfaces}: {exc.strerror}"
            ) from exc
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf,
            SERVICE_TYPE,
            handlers=[self._on_state_change],
            question_type=DNSQuestionType.QM,
        )

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._resolving)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        browser, self._browser = self._browser, None
        zeroconf, self._zeroconf = self._zeroconf, None
        try:
            if browser is not None:
                await browser.async_cancel()
            if zeroconf is not None:
                # Also unregisters our service, sending the goodbye packets.
                await zeroconf.async_close()
        except Exception:
            logger.debug("error while closing zeroconf", exc_info=True)

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # Called by the browser inside the event loop: must not block, so resolution is a task.
        if self._stopped or state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, service_type, name))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, _RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM):
            logger.debug("mDNS service %s did not resolve in time", name)
            return
        advert = _advert_from_info(info)
        if advert is None or self._stopped:
            return
        try:
            self._on_advert(advert)
        except Exception:
            # A failing callback must not kill discovery for every later node.
            logger.exception("discovery callback failed for %s", advert)


def _local_addresses() -> set[str]:
    """Every IP address configured on this machine's interfaces (in this network namespace)."""
    return {
        address.address.split("%")[0]
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }


def _ip_version(interfaces: list[str]) -> IPVersion:
    versions = set()
    for interface in interfaces:
        try:
            versions.add(ipaddress.ip_address(interface).version)
        except ValueError:
            versions.add(6)  # zeroconf only takes names and indexes for IPv6 interfaces
    if versions == {4}:
        return IPVersion.V4Only
    if versions == {6}:
        return IPVersion.V6Only
    return IPVersion.All


def _service_info(advert: Advert, interfaces: list[str]) -> AsyncServiceInfo:
    host, mesh_port = _split_host_port(advert.mesh_addr)
    if mesh_port is None:
        raise ValueError(f"mesh address {advert.mesh_addr!r} is not host:port")
    addresses = _advertised_addresses(host, interfaces)
    short_id = advert.node_id[:8]
    label = _truncate_utf8(_label_safe(advert.name), _MAX_LABEL_BYTES - len(short_id) - 1)
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{label}-{short_id}.{SERVICE_TYPE}",
        port=mesh_port,
        properties={
            "id": advert.node_id,
            "mesh": advert.mesh_id,
            "http": advert.http_addr,
            "mesh_port": str(mesh_port),
            "version": advert.version,
            "name": _truncate_utf8(advert.name, _MAX_TXT_VALUE_BYTES),
            **({"tls": "1"} if advert.tls else {}),
        },
        # Host names must be unique per node, even for several nodes on one machine.
        server=f"meshnode-{advert.node_id[:16]}.local.",
        addresses=addresses,
    )


def _advertised_addresses(host: str, interfaces: list[str]) -> list[str]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and not address.is_unspecified:
        return [str(address)]
    # Bound to every address (0.0.0.0) or given a host name: peers reach us on the interfaces we
    # announce on.
    literal = []
    for interface in interfaces:
        with contextlib.suppress(ValueError):
            literal.append(str(ipaddress.ip_address(interface)))
    if not literal:
        raise ValueError(f"cannot tell which address to advertise for mesh host {host!r}")
    return literal


def _advert_from_info(info: AsyncServiceInfo) -> Advert | None:
    try:
        fields = {
            key: _txt(info.properties, key) for key in ("id", "mesh", "http", "mesh_port", "version", "name")
        }
    except (KeyError, UnicodeDecodeError) as exc:
        logger.debug("ignoring mDNS service %s with malformed TXT record: %r", info.name, exc)
        return None
    mesh_port = _port(fields["mesh_port"])
    http_host, http_port = _split_host_port(fields["http"])
    if mesh_port is None or http_port is None or not fields["id"] or not fields["mesh"]:
        logger.debug("ignoring mDNS service %s with bad TXT values: %r", info.name, fields)
        return None
    address = next(
        iter(info.parsed_addresses(IPVersion.V4Only) + info.parsed_addresses(IPVersion.V6Only)), None
    )
    if address is None:
        logger.debug("ignoring mDNS service %s without an address", info.name)
        return None
    if _is_unspecified(http_host):
        # A node listening on every address advertises 0.0.0.0; the address it announced from works.
        http_host = address
    return Advert(
        node_id=fields["id"],
        mesh_id=fields["mesh"],
        name=fields["name"],
        mesh_addr=join_host_port(address, mesh_port),
        http_addr=join_host_port(http_host, http_port),
        version=fields["version"],
        tls=info.properties.get(b"tls") == b"1",
    )


def _txt(properties: dict[bytes, bytes | None], key: str) -> str:
    value = properties[key.encode()]
    if value is None:
        raise KeyError(f"{key} has no value")
    return value.decode("utf-8")


def _split_host_port(address: str) -> tuple[str, int | None]:
    """Split "host:port" or "[v6]:port"; the host comes back without brackets."""
    host, separator, port = address.rpartition(":")
    if not separator:
        return address, None
    return host.removeprefix("[").removesuffix("]"), _port(port)


def _port(text: str) -> int | None:
    if not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _label_safe(name: str) -> str:
    # Dots would split the instance label; keep names readable in avahi-browse and friends.
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "node"


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
