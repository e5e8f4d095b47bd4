"""``GET /v1/models`` and the lookup every OpenAI route makes: which deployment a ``model`` names.

The catalog reads what this node already knows, without asking anyone: the declared deployments
(``serving/deployments.py``'s records and views) and the gossiped replica entries of live members
(``mesh/replica_state.ReplicaEntry``: the kinds each replica's app ``serves``, its loaded ``models``
and routing ``hints``). The index over the entries is rebuilt only when the gossiped view changes
(``view_version``), so a request's lookup is two dictionary reads.

A request's ``model`` is, in this order:

1. a deployment's name (declared, or hosted by some replica): routed to it as is;
2. a model served inside a deployment (in a replica's gossiped ``models`` or ``hints``): routed to
   that deployment with the model name as the routing hint, so the replica that has it warm is
   preferred (``mesh/routing.py``). Several deployments holding it: one that serves the route's
   kind, first by name;
3. anything else: 404 ``model_not_found``.

A deployment whose replicas declare kinds that do not include the route's is refused with 400
saying what it serves. One with no replica entry anywhere yet (scaled to zero, still placing) is
let through: its app decides when a replica starts (a cold start, ``dataplane/forward.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ...mesh.member import Member
from ...mesh.records import Record
from ...mesh.types import Status
from .errors import ModelNotFound, ParamError

__all__ = ["Catalog", "Deployments", "Members", "Target"]

_LIVE = (Status.ALIVE, Status.SUSPECT)
# The OpenAI route each kind is sent by, for messages that tell a user where to go instead.
ROUTES = {
    "embeddings": "/v1/embeddings",
    "images": "/v1/images/generations",
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
}


class Members(Protocol):
    """The gossiped members (the gossip runner)."""

    def members(self) -> Iterable[Member]:
        """Every member, in any state."""
        ...

    @property
    def view_version(self) -> int:
        """Bumped whenever a member or its metadata changes."""
        ...


class Deployments(Protocol):
    """The declared deployments (``serving/deployments.py``)."""

    def views(self) -> list[dict[str, Any]]:
        """Every declared deployment as ``GET /v1/deployments`` shows it."""
        ...

    def record(self, name: str) -> Record | None:
        """The winning record of `name`."""
        ...


@dataclass(frozen=True)
class Target:
    """Where a request goes: a deployment, the hint that steers within it, the name the client used."""

    deployment: str
    hint: str | None
    model: str


@dataclass
class _Hosted:
    """One deployment as its live replicas' entries describe it."""

    serves: set[str]
    models: set[str]


class Catalog:
    """The deployments and models this mesh serves, as this node sees them."""

    def __init__(self, members: Members, deployments: Deployments, owner: str) -> None:
        self._members = members
        self._deployments = deployments
        self._owner = owner  # ``owned_by``: the mesh's id
        self._version = -1
        self._hosted: dict[str, _Hosted] = {}
        self._by_model: dict[str, list[str]] = {}

    def base_url_of(self, id_prefix: str) -> str | None:
        """``scheme://host:port`` of the live member whose id starts with `id_prefix`, if one does."""
        for member in self._members.members():
            if member.status == Status.ALIVE and member.node.startswith(id_prefix) and member.meta.http:
                return f"{'https' if member.meta.tls else 'http'}://{member.meta.http}"
        return None

    def resolve(self, model: str, kind: str) -> Target:
        """The deployment `model` names for a request of `kind`; 404 or 400 saying why not."""
        hosted = self._index()
        if model in hosted or self._declared(model):
            target = Target(model, None, model)
        else:
            holders = self._by_model.get(model)
            if not holders:
                raise ModelNotFound(model)
            fitting = [name for name in holders if kind in hosted[name].serves]
            target = Target((fitting or holders)[0], model, model)
        entry = hosted.get(target.deployment)
        if entry is not None and kind not in entry.serves:
            raise ParamError("model", _refusal(target, kind, entry.serves), code="model_not_supported")
        return target

    def only(self, kind: str) -> str | None:
        """The one deployment serving `kind`, when exactly one does (a request may then omit model)."""
        serving = [name for name, entry in self._index().items() if kind in entry.serves]
        return serving[0] if len(serving) == 1 else None

    def listing(self) -> dict[str, Any]:
        """The ``GET /v1/models`` body: every deployment, with the kinds it serves."""
        hosted = self._index()
        names = {view["name"] for view in self._deployments.views()} | set(hosted)
        return {"object": "list", "data": [self._entry(name, hosted.get(name)) for name in sorted(names)]}

    def describe(self, model: str) -> dict[str, Any]:
        """The ``GET /v1/models/{id}`` body: a deployment, or a model served inside one."""
        hosted = self._index()
        if model in hosted or self._declared(model):
            return self._entry(model, hosted.get(model))
        holders = self._by_model.get(model)
        if not holders:
            raise ModelNotFound(model)
        entry = self._entry(holders[0], hosted[holders[0]])
        return {**entry, "id": model, "deployment": holders[0], "models": [model]}

    def _entry(self, name: str, hosted: _Hosted | None) -> dict[str, Any]:
        record = self._deployments.record(name)
        created = record.wall_ms // 1000 if record is not None and not record.removed else 0
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": self._owner,
            "serves": sorted(hosted.serves) if hosted else [],
            "models": sorted(hosted.models - {name}) if hosted else [],
        }

    def _declared(self, name: str) -> bool:
        record = self._deployments.record(name)
        return record is not None and not record.removed

    def _index(self) -> dict[str, _Hosted]:
        version = self._members.view_version
        if version != self._version:
            hosted: dict[str, _Hosted] = {}
            for member in self._members.members():
                if member.status not in _LIVE:
                    continue
                for name, entry in member.meta.replicas.items():
                    seen = hosted.setdefault(name, _Hosted(set(), set()))
                    seen.serves.update(entry.serves)
                    seen.models.update(entry.models, entry.hints)
            by_model: dict[str, list[str]] = {}
            for name in sorted(hosted):
                for model in hosted[name].models:
                    if model != name:
                        by_model.setdefault(model, []).append(name)
            self._hosted, self._by_model, self._version = hosted, by_model, version
        return self._hosted


def _refusal(target: Target, kind: str, serves: set[str]) -> str:
    named = f"deployment {target.deployment!r}"
    if target.model != target.deployment:
        named = f"model {target.model!r} (in deployment {target.deployment!r})"
    if not serves:
        return (
            f"{named} does not serve {ROUTES[kind]}: its app declares no OpenAI kind "
            f"(Predictor.serves); call it with POST /v1/predict/{target.deployment}"
        )
    where = ", ".join(f"{kind_} ({ROUTES.get(kind_, '?')})" for kind_ in sorted(serves))
    return f"{named} does not serve {ROUTES[kind]}; it serves {where}"
