"""The nodes a client may send to, best first: what ``/v1/mesh`` says is alive, then the seeds.

Pure logic (no sockets, no clocks: ``now`` comes in as an argument), shared by ``MeshClient`` and
``AsyncMeshClient``; only ``default_interfaces`` looks at the machine (its interface addresses).

- The seeds (URLs given by the user or found by mDNS) are never forgotten: when every node the mesh
  named is gone, the client starts over from them.
- A refresh replaces the learned nodes with the members of one node's ``/v1/mesh`` view whose status
  is ``alive``, then those that are ``suspect`` (they may be alive; SWIM is not sure yet). ``dead``
  and ``left`` members are dropped.
- The node that answered last is preferred, so a client's requests reuse one connection; the others
  come in random order, so many clients spread over the mesh instead of herding on one node.
- A node that did not answer is marked down for a while and put last: still tried when nothing else
  is left, since "down" is only a guess (a restarting node answers again within seconds).
- A member's URL is ``https://`` when the view says it serves TLS (``"tls": true``), ``http://``
  when it says not; a view from a node that predates the flag lends every member its own scheme.
  A view that came over HTTPS never yields a plain-HTTP member: a client that reached the mesh
  over TLS does not send its requests and keys in clear to a node that would take them so.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import psutil

__all__ = ["NodeList", "default_interfaces", "members_from_view", "node_url"]

_LOOPBACK = "127.0.0.1"


def node_url(address: str, *, scheme: str = "http") -> str:
    """A node's base URL from ``"host:port"`` or a URL (``http://host:port[/prefix]``), no trailing slash."""
    text = address.strip()
    if not text:
        raise ValueError("a node address must not be empty")
    if text.lstrip(":").isdigit():
        # Taken as a host name, a bare port would send the request off this machine to "8470".
        raise ValueError(f"{address!r} is a port, not a node: give host:port, such as 127.0.0.1:8470")
    if "://" not in text:
        text = f"{scheme}://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) node address: {address!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a node address has no query or fragment: {address!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def members_from_view(view: object, answered_by: str) -> tuple[list[str], list[str]] | None:
    """Base URLs of a ``/v1/mesh`` body's ``(alive, suspect)`` members; None if the body is malformed.

    ``answered_by`` is the URL the view came from: it stands for the node itself, which may advertise
    an unspecified address (``0.0.0.0``); its scheme is the members' when the view does not say theirs.
    """
    if not isinstance(view, Mapping) or not isinstance(view.get("members"), list):
        return None
    scheme = urlsplit(answered_by).scheme or "http"
    alive: list[str] = []
    suspect: list[str] = []
    for member in view["members"]:
        if not isinstance(member, Mapping) or member.get("status") not in ("alive", "suspect"):
            continue
        url = answered_by if member.get("id") == view.get("self") else _member_url(member, scheme)
        if url is not None and not (scheme == "https" and url.startswith("http://")):
            (alive if member["status"] == "alive" else suspect).append(url)
    return _unique(alive), _unique(suspect)


class NodeList:
    """Seeds, the nodes learned from the mesh, which answered last and which are down (until when)."""

    def __init__(self, seeds: Iterable[str], rng: random.Random, *, prefer_first: bool = False) -> None:
        """Start from ``seeds`` (URLs or ``"host:port"``); at least one is needed.

        With ``prefer_first`` the first seed is used while it answers (``meshnode predict --node``:
        the user named the node to enter by), instead of a random live node.
        """
        self._seeds = _unique(node_url(seed) for seed in seeds)
        if not self._seeds:
            raise ValueError("the client needs at least one node address (or MeshClient.discover())")
        self._rng = rng
        self._alive: list[str] = []
        self._suspect: list[str] = []
        self._down_until: dict[str, float] = {}
        self._preferred: str | None = self._seeds[0] if prefer_first else None
        self._refreshed_at: float | None = None

    @property
    def seeds(self) -> list[str]:
        """The URLs the client was given."""
        return list(self._seeds)

    @property
    def known(self) -> list[str]:
        """Every node the client may send to: alive, then suspect, then the seeds not among them."""
        return _unique([*self._alive, *self._suspect, *self._seeds])

    @property
    def preferred(self) -> str | None:
        """The node that answered last, if it has not failed since."""
        return self._preferred

    def order(self, now: float) -> list[str]:
        """The nodes to try, best first: preferred, alive (shuffled), suspect, seeds; down ones last."""
        alive = list(self._alive)
        self._rng.shuffle(alive)
        preferred = [self._preferred] if self._preferred is not None else []
        candidates = _unique([*preferred, *alive, *self._suspect, *self._seeds])
        up = [node for node in candidates if self._down_until.get(node, 0.0) <= now]
        down = [node for node in candidates if self._down_until.get(node, 0.0) > now]
        down.sort(key=self._down_until.__getitem__)
        return up + down

    def learn(self, view: object, answered_by: str, now: float) -> bool:
        """Take the members of a ``/v1/mesh`` body; False (and nothing changed) if it is malformed."""
        members = members_from_view(view, answered_by)
        if members is None:
            return False
        self._alive, self._suspect = members
        self._refreshed_at = now
        return True

    def stale(self, now: float, interval_s: float) -> bool:
        """Whether the mesh should be asked for its members again."""
        return self._refreshed_at is None or now - self._refreshed_at >= interval_s

    def postpone_refresh(self, now: float) -> None:
        """No node gave a view: go on with the nodes known until the next refresh is due."""
        self._refreshed_at = now

    def invalidate(self) -> None:
        """Ask the mesh again before the next request (a node failed: the views have news)."""
        self._refreshed_at = None

    def mark_good(self, node: str) -> None:
        """``node`` answered: prefer it from now on."""
        self._down_until.pop(node, None)
        self._preferred = node

    def mark_down(self, node: str, now: float, for_s: float) -> None:
        """``node`` did not answer (or asked us to go away): try it last for ``for_s`` seconds."""
        self._down_until[node] = max(self._down_until.get(node, 0.0), now + for_s)
        if self._preferred == node:
            self._preferred = None


def default_interfaces() -> list[str]:
    """Where ``discover()`` browses unless told: the address an agent started with defaults announces on.

    That is this machine's first non-loopback IPv4 address (the agent's default advertised address),
    or 127.0.0.1 on a machine without one. Never every interface: mDNS sent out of every network card
    reaches networks the user did not mean (docs/membership.md, "Discovery").
    """
    addresses = (
        address.address
        for entries in psutil.net_if_addrs().values()
        for address in entries
        if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback
    )
    return [next(addresses, _LOOPBACK)]


def _member_url(member: Mapping[str, Any], default_scheme: str) -> str | None:
    address = member.get("http")
    if not isinstance(address, str) or _unspecified_host(address):
        return None
    tls = member.get("tls")
    scheme = default_scheme if not isinstance(tls, bool) else "https" if tls else "http"
    try:
        return node_url(address, scheme=scheme)
    except ValueError:
        return None


def _unspecified_host(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return not host


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
