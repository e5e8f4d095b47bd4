"""How client commands reach a node over HTTP: one set of access flags and one request helper.

``node_option`` is ``--node URL``, checked before any request leaves (``params.NodeURL``: ``--node
8470`` is a usage error, not a host named 8470). ``access_options`` adds ``--ca-cert``
(``params.py``) and ``--api-key`` (env ``MESHNODE_API_KEY``) to a command and hands it one
``NodeAccess``; ``request_node`` sends one request with them and turns every failure (unreachable, a
certificate, an HTTP error) into one ``Error:`` line.

Commands built on the Python client (``predict``, ``jobs``) take ``entry_options`` instead: ``--node
URL`` repeatable (the first is entered by while it answers, the others are fallbacks), or
``--discover`` by mDNS on ``--interface`` for ``--mesh-id``, with the access flags; they receive one
``MeshEntry``, whose ``client()`` makes the ``MeshClient``.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click
import httpx

from ..client.base import API_KEY_ENV, DISCOVER_TIMEOUT_S
from ..client.errors import error_fields
from ..client.sync import MeshClient
from ..client.tls import describe_failure
from ..config import DEFAULT_NODE_URL
from .params import IPAddress, NodeURL, agent_default, ca_cert_option

__all__ = [
    "MeshEntry",
    "NodeAccess",
    "access_options",
    "discover_options",
    "entry_options",
    "error_message",
    "node_option",
    "request_node",
]

#: ``--node URL``: the node a command talks to (any node will do).
node_option = click.option(
    "--node",
    "node_url",
    type=NodeURL(),
    default=DEFAULT_NODE_URL,
    show_default=True,
    help="Any node's HTTP address (https://HOST:PORT for a node with a certificate).",
)

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class NodeAccess:
    """What a command presents to a node: the CA it trusts, and the API key it sends."""

    ca_cert: ssl.SSLContext | None = None
    api_key: str | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """For httpx and the Python client."""
        return True if self.ca_cert is None else self.ca_cert

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header, when there is a key."""
        return {} if self.api_key is None else {"Authorization": f"Bearer {self.api_key}"}


def access_options(command: _F) -> _F:
    """``--ca-cert`` and ``--api-key`` on `command`, which receives them as ``access: NodeAccess``."""

    @functools.wraps(command)
    def wrapper(*args: Any, ca_cert: ssl.SSLContext | None, api_key: str | None, **kwargs: Any) -> Any:
        if api_key is not None and (not api_key.strip() or not api_key.isprintable()):
            raise click.BadParameter("must be a meshnode API key", param_hint="--api-key")
        access = NodeAccess(ca_cert, None if api_key is None else api_key.strip())
        return command(*args, access=access, **kwargs)

    key_option = click.option(
        "--api-key",
        "api_key",
        envvar=API_KEY_ENV,
        show_envvar=True,
        default=None,
        help="API key for nodes on other machines (loopback needs none).",
    )
    return ca_cert_option(key_option(wrapper))  # type: ignore[return-value]


@dataclass(frozen=True)
class MeshEntry:
    """Where a client command enters the mesh: the ``--node`` URLs, or mDNS (``--discover``)."""

    nodes: tuple[str, ...]
    discover: bool
    interfaces: tuple[str, ...]
    mesh_id: str
    access: NodeAccess

    def client(self, **options: Any) -> MeshClient:
        """A ``MeshClient`` entering here, with the command's key and CA; ``options`` as its own."""
        options = {"verify": self.access.verify, "api_key": self.access.api_key, **options}
        if self.discover:
            return MeshClient.discover(
                self.interfaces, mesh_id=self.mesh_id, timeout_s=DISCOVER_TIMEOUT_S, **options
            )
        try:
            # The request enters the mesh at the first --node while it answers; the rest are fallbacks.
            return MeshClient(self.nodes or [DEFAULT_NODE_URL], prefer_first=True, **options)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--node") from exc


def entry_options(command: _F) -> _F:
    """``--node`` (repeatable), the access flags and ``--discover`` on `command`: ``mesh: MeshEntry``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        nodes: tuple[str, ...],
        access: NodeAccess,
        discover: bool,
        interfaces: tuple[str, ...],
        mesh_id: str,
        **kwargs: Any,
    ) -> Any:
        if discover and nodes:
            raise click.UsageError("--discover and --node do not go together")
        return command(*args, mesh=MeshEntry(nodes, discover, interfaces, mesh_id, access), **kwargs)

    decorators = [
        click.option(
            "--node",
            "nodes",
            type=NodeURL(),
            multiple=True,
            show_default=DEFAULT_NODE_URL,
            help="A node to send to (https://HOST:PORT for a node with a certificate); repeatable.",
        ),
        access_options,
        discover_options,
    ]
    decorated: Any = wrapper
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return cast(_F, decorated)


def discover_options(command: _F) -> _F:
    """``--discover``, ``--interface`` (repeatable) and ``--mesh-id``: finding a node by mDNS."""
    decorators = [
        click.option("--discover", is_flag=True, help="Find the mesh by mDNS instead of --node."),
        click.option(
            "--interface",
            "interfaces",
            type=IPAddress(),
            multiple=True,
            help="Interface address to browse mDNS on (with --discover; default: the LAN address).",
        ),
        click.option(
            "--mesh-id", default=agent_default("mesh_id"), show_default=True, help="Mesh to discover."
        ),
    ]
    decorated: Any = command
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return cast(_F, decorated)


def request_node(
    method: str, node_url: str, path: str, access: NodeAccess, *, timeout_s: float, **kwargs: Any
) -> httpx.Response:
    """One request to the node at `node_url`; a ClickException for anything but a success."""
    base = node_url.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    try:
        response = httpx.request(
            method, f"{base}{path}", timeout=timeout_s, verify=access.verify, headers=access.headers, **kwargs
        )
    except httpx.RequestError as exc:
        raise click.ClickException(
            f"cannot reach a meshnode at {base}: {describe_failure(exc, base)}"
        ) from exc
    except httpx.InvalidURL as exc:
        raise click.BadParameter(str(exc), param_hint="--node") from exc
    if response.status_code >= 400:
        hint = " (give one with --api-key or $MESHNODE_API_KEY)" if response.status_code == 401 else ""
        raise click.ClickException(
            f"{method} {path} answered {response.status_code}: {error_message(response)}{hint}"
        )
    return response


def error_message(response: httpx.Response) -> str:
    """The message of a meshnode JSON error, or the start of the body."""
    return error_fields(response.content, response.headers, response.status_code)[1]
