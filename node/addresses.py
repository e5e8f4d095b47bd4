"""Addresses: "host:port" strings, and which host this node tells its peers to use."""

from __future__ import annotations

import socket

import psutil

from .errors import ConfigError

__all__ = ["advertise_host", "join_host_port", "parse_host_port", "public_host"]

_WILDCARDS = ("0.0.0.0", "::", "", "*")


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
