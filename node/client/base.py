"""The core shared by ``MeshClient`` and ``AsyncMeshClient``: every client method, once, as a plan.

``ClientBase`` checks arguments, turns a call into a ``PredictRequest`` and holds the plan of each
public method (``_predict`` for ``predict``, ``_deploy`` for ``deploy``, ``_submit`` for ``submit``
from ``job_plans.py``...): a generator of the steps of ``steps.py`` that chooses nodes and fails over
(``Planner``, ``exchange.py``) and decodes what came back (``answers.py``, ``job_view.py``). The
faces (``sync.py``, ``aio.py``) add a driver that carries those steps out with their HTTP client,
and each public method is one line handing its plan to that driver. Also here: turning what mDNS
found into seed URLs, and writing a downloaded file.
"""

from __future__ import annotations

import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote

from .. import __version__
from .answers import SSE_TYPE, Result, fetch
from .errors import ClientError, NoNodeAvailable
from .exchange import JSON_TYPE, MAX_TIMEOUT_S, ClientOptions, Opened, Planner, PredictRequest
from .job_plans import JobPlans
from .nodes import NodeList, default_interfaces
from .steps import Save, Steps
from .tls import Verify, ssl_verify

if TYPE_CHECKING:
    from ..membership.discovery import Advert

__all__ = [
    "DISCOVER_TIMEOUT_S",
    "AsyncClosing",
    "Body",
    "CallOptions",
    "ClientBase",
    "Closing",
    "DeploymentSpec",
    "FileOptions",
    "SavePath",
    "discover_seeds",
    "save_file",
]

DriverT = TypeVar("DriverT")

# Long enough for the mDNS answers of every node on a quiet LAN to arrive (browsing always takes it).
DISCOVER_TIMEOUT_S = 2.0
# The mesh is reached directly: proxies from the environment are ignored (a LAN proxy would see
# every request), and a node never redirects.
# The API key clients send unless given one (`api_key=`, `--api-key`).
API_KEY_ENV = "MESHNODE_API_KEY"
HTTP_SETTINGS: dict[str, Any] = {
    "trust_env": False,
    "follow_redirects": False,
    "headers": {"User-Agent": f"meshnode-client/{__version__}"},
}
_DEFAULTS = ClientOptions()

#: A request body: a JSON object (None sends ``{}``).
Body = Mapping[str, Any] | None
#: Where a download is written (None: nowhere, only returned).
SavePath = str | os.PathLike[str] | None
#: What ``download`` asks for unless told.
DEFAULT_FILE_TYPE = "image/png"


class CallOptions(TypedDict, total=False):
    """The keyword arguments every request method takes."""

    #: Routing hint sent as X-Mesh-Hint (default: the client's ``hint``).
    hint: str | None
    #: Seconds this request may take in all (default: the client's ``timeout``).
    timeout: float | None
    #: X-Request-Id to send (default: the node gives the request an id).
    request_id: str | None


class FileOptions(CallOptions, total=False):
    """``download``'s keyword arguments."""

    #: The media type to ask for (Accept), e.g. "image/png" (the default) or "audio/wav".
    accept: str


class Closing(ABC):
    """``with`` support for an object with ``close()``."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClosing(ABC):
    """``async with`` support for an object with ``aclose()``."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the object holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class DeploymentSpec(TypedDict, total=False):
    """The optional fields of a deployment spec (docs/deployments.md); ``app`` is an argument."""

    min_replicas: int
    max_replicas: int
    resources: Mapping[str, Any]  # device_kinds, min_memory_gb, accelerator
    autoscaling: Mapping[str, Any]  # target_concurrency, window_s, scale_up_delay_s, ...
    backups: int
    spread: str  # "zone" or "region"
    model: str  # a model of the mesh's stores, pulled by the nodes placed to host it


def _deployment_path(name: str) -> str:
    if not name:
        raise ValueError("deployment name must not be empty")
    return f"/v1/deployments/{quote(name, safe='')}"


class ClientBase(JobPlans, ABC, Generic[DriverT]):
    """Options, nodes and the plan of every method; subclasses add the driver that does the I/O.

    The plans of the jobs methods come from ``JobPlans`` (``job_plans.py``).
    """

    def __init__(
        self,
        nodes: str | Iterable[str],
        *,
        timeout: float = _DEFAULTS.timeout_s,
        hint: str | None = None,
        retries: int = _DEFAULTS.retries,
        refresh_interval_s: float = _DEFAULTS.refresh_interval_s,
        node_down_s: float = _DEFAULTS.node_down_s,
        connect_timeout_s: float = _DEFAULTS.connect_timeout_s,
        prefer_first: bool = False,
        verify: Verify = True,
        api_key: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Send to the mesh that ``nodes`` (URLs or ``"host:port"``) belong to; see docs/client.md.

        ``verify`` says which HTTPS certificates to trust (``tls.py``): True (public CAs, or the file
        in ``$MESHNODE_CA_CERT``), a CA file's path, an ``ssl.SSLContext``, or False (none checked).
        ``api_key`` (default ``$MESHNODE_API_KEY``) goes with every request as
        ``Authorization: Bearer KEY``; nodes ask for one from clients on other machines.
        """
        self.options = ClientOptions(
            timeout_s=timeout,
            retries=retries,
            refresh_interval_s=refresh_interval_s,
            node_down_s=node_down_s,
            connect_timeout_s=connect_timeout_s,
        )
        #: The routing hint (X-Mesh-Hint) sent with every request that names none.
        self.hint = hint
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        nodes_list = NodeList(seeds, rng or random.Random(), prefer_first=prefer_first)
        self._planner = Planner(nodes_list, self.options, clock)
        self._clock = clock
        #: What the face's httpx client verifies certificates with (a CA file is read once, here).
        self._verify = ssl_verify(verify)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        if key is not None and (not key.isprintable() or not key.strip() or len(key) > 256):
            raise ValueError("api_key must be a short printable string (a meshnode API key)")
        headers = dict(HTTP_SETTINGS["headers"])
        if key is not None:
            headers["Authorization"] = f"Bearer {key.strip()}"
        #: What the face's httpx client is made with: timeouts, limits, headers (the key included).
        self._http_settings: dict[str, Any] = {**HTTP_SETTINGS, "headers": headers, "verify": self._verify}
        self._driver: DriverT = self._open_driver()

    @abstractmethod
    def _open_driver(self) -> DriverT:
        """What carries out this client's plans, with an HTTP client of its own (sync or async)."""

    @property
    def nodes(self) -> list[str]:
        """Every node this client may send to, as far as it knows: alive, suspect, then the seeds."""
        return self._planner.nodes.known

    @property
    def seeds(self) -> list[str]:
        """The node URLs the client was created with (or that mDNS found)."""
        return self._planner.nodes.seeds

    @property
    def last_node(self) -> str | None:
        """The node that answered last (requests go there first), if it has not failed since."""
        return self._planner.nodes.preferred

    def _request(
        self,
        deployment: str,
        body: Body,
        accept: str,
        *,
        stream: bool = False,
        **options: Unpack[CallOptions],
    ) -> PredictRequest:
        if not deployment:
            raise ValueError("deployment must not be empty")
        payload = dict(body or {})
        if stream:
            payload["stream"] = True
        timeout = options.get("timeout")
        timeout_s = self.options.timeout_s if timeout is None else timeout
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, not {timeout_s!r}")
        hint = options.get("hint")
        return PredictRequest(
            deployment=quote(deployment, safe=""),
            body=payload,
            accept=accept,
            timeout_s=timeout_s,
            hint=self.hint if hint is None else hint,
            request_id=options.get("request_id"),
        )

    # The plan of each public method, which the faces hand to their driver; docs/client.md says what
    # each method does.

    def _call(
        self, deployment: str, body: Body, accept: str = JSON_TYPE, **options: Unpack[CallOptions]
    ) -> Steps[Result]:
        return fetch(self._planner, self._request(deployment, body, accept, **options))

    def _predict(self, deployment: str, body: Body, **options: Unpack[CallOptions]) -> Steps[Any]:
        result = yield from self._call(deployment, body, **options)
        return result.data

    def _stream(self, deployment: str, body: Body, **options: Unpack[CallOptions]) -> Steps[Opened]:
        """Up to the first bytes of the answer, which the face's stream then reads chunk by chunk."""
        return self._planner.exchange(self._request(deployment, body, SSE_TYPE, stream=True, **options))

    def _download(
        self,
        deployment: str,
        body: Body,
        path: SavePath,
        *,
        accept: str = DEFAULT_FILE_TYPE,
        **options: Unpack[CallOptions],
    ) -> Steps[bytes]:
        request = self._request(deployment, body, accept, **options)
        result = yield from fetch(self._planner, request, decode=False)
        content: bytes = result.data
        if path is not None:
            yield Save(path, content)
        return content

    def _deploy(self, name: str, app: str, spec: Mapping[str, Any]) -> Steps[dict[str, Any]]:
        body = {"app": app, **{key: value for key, value in spec.items() if value is not None}}
        path = _deployment_path(name)
        view: dict[str, Any] = yield from self._planner.control("PUT", path, body, self._refresh_deadline())
        return view

    def _undeploy(self, name: str) -> Steps[None]:
        path = _deployment_path(name)
        yield from self._planner.control("DELETE", path, None, self._refresh_deadline())

    def _deployments(self) -> Steps[list[dict[str, Any]]]:
        body = yield from self._planner.control("GET", "/v1/deployments", None, self._refresh_deadline())
        listed: list[dict[str, Any]] = body["deployments"]
        return listed

    def _refresh(self) -> Steps[list[str]]:
        yield from self._planner.refresh(self._refresh_deadline())
        return self.nodes

    def _refresh_deadline(self) -> float:
        return self._clock() + self.options.timeout_s

    def __repr__(self) -> str:
        return f"<{type(self).__name__} nodes={self.nodes}>"


async def discover_seeds(
    interfaces: Sequence[str] | None, mesh_id: str | None, timeout_s: float
) -> list[str]:
    """Browse mDNS on ``interfaces`` (default: the one an agent with defaults announces on) for nodes."""
    from ..membership.discovery import browse_once

    chosen = list(interfaces) if interfaces else default_interfaces()
    adverts = await browse_once(chosen, mesh_id, timeout_s)
    return discovered_seeds(adverts, mesh_id, chosen, timeout_s)


def discovered_seeds(
    adverts: Sequence[Advert],
    mesh_id: str | None,
    interfaces: Sequence[str],
    timeout_s: float = DISCOVER_TIMEOUT_S,
) -> list[str]:
    """The base URLs (https:// for TLS nodes) of the nodes mDNS found, of one mesh, or why not."""
    meshes = sorted({advert.mesh_id for advert in adverts if mesh_id is None or advert.mesh_id == mesh_id})
    where = f"on {', '.join(interfaces)}"
    if not meshes:
        named = "no meshnode" if mesh_id is None else f"no node of mesh {mesh_id!r}"
        # Said in full because discovery is the fallback of a user who named no node: what was
        # tried, and the ways out (mDNS does not cross routers, and many networks drop it).
        raise NoNodeAvailable(
            f"{named} answered mDNS {where} within {timeout_s:g} s. Name a node instead: "
            'MeshClient(["http://HOST:8470"]), or --node URL on the command line; any node of the '
            "mesh serves as a seed. Or browse where the nodes announce: interfaces=[IP] (--interface IP)"
        )
    if len(meshes) > 1:
        raise ClientError(
            f"nodes of several meshes answered mDNS {where} ({', '.join(meshes)}): pass mesh_id"
        )
    return [advert.http_url for advert in adverts if advert.mesh_id == meshes[0]]


def save_file(path: str | os.PathLike[str], content: bytes) -> None:
    """Write a downloaded file whole or not at all (a partial file never takes the name)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.part")
    try:
        partial.write_bytes(content)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
