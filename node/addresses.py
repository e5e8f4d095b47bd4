"""Addresses: "host:port" strings, the host this node tells its peers to use, why one cannot be bound.

Peers dial what a node advertises, not what it binds: ``--advertise-mesh`` / ``--advertise-data``
when given (NAT, containers), else an address derived from the bind. Either is refused when peers
could not dial it: a wildcard always, a loopback address when a seed or an interface is on another
machine (peers there would dial themselves).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

import psutil

from .errors import ConfigError

__all__ = [
    "advertise_host",
    "bind_failure",
    "check_advertised",
    "check_derived",
    "is_loopback",
    "join_host_port",
    "listen_tcp",
    "off_machine",
    "parse_host_port",
    "public_host",
]

_WILDCARDS = ("0.0.0.0", "::", "", "*")
# What each bind flag of `meshnode join` is for, as a start-up error names it.
_GIVE_REACHABLE = "give the address they reach this node at"
_BIND_ROLES = {"--http": "the HTTP API", "--mesh": "the mesh socket", "--data": "the data plane"}


def join_host_port(host: str, port: int) -> str:
    """Format an address as "host:port", bracketing IPv6 hosts (the inverse of parse_host_port)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(value: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Parse "HOST:PORT", ":PORT" or "[v6]:PORT"; raise ConfigError with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"port must be a number in 0..65535 in {value!r}")
    return host, int(port_text)


def advertise_host(bind_host: str, interfaces: tuple[str, ...]) -> str:
    """The address peers should use: the bind host, else the first interface, else a local IP."""
    if bind_host not in _WILDCARDS:
        return bind_host
    if interfaces:
        return interfaces[0]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return "127.0.0.1"


def public_host(bind_host: str, advertised: str) -> str:
    """The host peers reach a socket bound to `bind_host` at: itself, or `advertised` for a wildcard."""
    return advertised if bind_host in _WILDCARDS else bind_host


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: 127.0.0.0/8, ::1 (IPv4-mapped too) or localhost."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # a host name: it may resolve anywhere, so it counts as another machine
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def off_machine(seeds: Iterable[str], interfaces: Iterable[str]) -> str | None:
    """The first seed or interface on another machine ("seed 10.0.0.5:8471"), None if all are loopback."""
    for seed in seeds:
        if not is_loopback(seed.rpartition(":")[0]):
            return f"seed {seed}"
    for interface in interfaces:
        if not is_loopback(interface):
            return f"--interface {interface}"
    return None


def check_advertised(flag: str, value: str, *, seeds: Iterable[str], interfaces: Iterable[str]) -> str:
    """`value` of `flag` (an ``--advertise-*`` flag) as "host:port"; ConfigError if peers cannot dial it."""
    try:
        host, port = parse_host_port(value, default_host="")
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc.message}") from exc
    if port == 0:
        raise ConfigError(f"{flag} {value}: an advertised address needs a port in 1..65535")
    if host in _WILDCARDS or _is_unspecified(host):
        shown = host or "an address without a host"
        raise ConfigError(
            f"{flag} {value}: peers cannot dial {shown}; give the address they reach this node at"
        )
    remote = off_machine(seeds, interfaces)
    if is_loopback(host) and remote is not None:
        raise ConfigError(
            f"{flag} {value} is a loopback address, but {remote} is on another machine: peers there "
            f"would dial themselves; {_GIVE_REACHABLE}"
        )
    return join_host_port(host, port)


def check_derived(
    flag: str, bind: str, advertised_host: str, *, seeds: Iterable[str], interfaces: Iterable[str]
) -> None:
    """Refuse a loopback address derived from bind flag `flag` while peers may be on other machines."""
    remote = off_machine(seeds, interfaces)
    if is_loopback(advertised_host) and remote is not None:
        raise ConfigError(
            f"{flag} {bind} would be advertised as {advertised_host}, a loopback address, but {remote} "
            f"is on another machine: peers there would dial themselves; bind {flag} to an address "
            f"they reach, or pass --advertise-{flag.removeprefix('--')} HOST:PORT"
        )


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def bind_failure(flag: str, host: str, port: int, code: int | None, reason: str) -> str:
    """One line for an address of `flag` that cannot be bound: which, why, and what to do.

    `code` is the errno of the failed bind (an ``OSError`` or a ``ZMQError``), None when `host`
    did not resolve; `reason` is the error's own text, for the cases not named here.
    """
    if code is None or code == errno.ENODEV:  # ZeroMQ says ENODEV for a host it cannot resolve
        why = f"{host!r} is neither an address of this machine nor a host name it resolves"
        fix = f"give {flag} one of this machine's addresses (0.0.0.0 for all of them)"
    elif code == errno.EADDRINUSE:
        why = f"port {port} is in use there (another meshnode, or another program)"
        fix = f"stop that program, or give {flag} a free port"
    elif code == errno.EACCES:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        fix = f"give {flag} a port above 1023"
    elif code == errno.EADDRNOTAVAIL:
        why = f"no interface of this machine has the address {host}"
        fix = f"give {flag} one of its addresses (0.0.0.0 for all of them)"
    else:
        why = reason
        fix = f"check {flag}"
    role = _BIND_ROLES.get(flag, "a socket")
    return f"cannot bind {role} on {join_host_port(host, port)} ({flag}): {why}; {fix}"


def listen_tcp(host: str, port: int, flag: str, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port) (port 0: a free one); ConfigError naming `flag` if not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(bind_failure(flag, host, port, None, str(exc))) from exc
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(bind_failure(flag, host, port, exc.errno, str(exc))) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening now, not when the server starts: with SO_REUSEADDR two agents can both bind a
        # port that neither listens on yet, and uvloop's server then takes the second without a word.
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(bind_failure(flag, host, port, exc.errno, str(exc))) from exc
    return sock
