"""Deployment specs: what a user declares once, on any node, for the whole mesh.

A spec is validated in one place, here, whether it arrives as a ``PUT /v1/deployments/{name}`` body
or as bytes on the membership socket: a node's table only ever holds specs that passed, and a bad
one is refused with a ``SpecError`` naming the field and the reason (422 at the HTTP edge).

Defaults and where they come from (Ray Serve's autoscaling config and FedML's deployment knobs):

- ``target_concurrency`` 2: requests in flight per replica the autoscaler aims for (Ray Serve's
  ``target_ongoing_requests`` default).
- ``window_s`` 10: demand is averaged over this window before it moves ``desired``, so one burst does
  not start a replica.
- ``scale_up_delay_s`` 5 and ``scale_down_delay_s`` 60: demand must call for more (fewer) replicas
  this long before the change. Starting is cheap to undo, stopping a warm model is not, so down is
  slower (Ray Serve uses 30 s and 600 s for replicas that take minutes to load).
- ``idle_timeout_s`` 300: with ``min_replicas`` 0, a deployment with no request for this long scales
  to zero; the next request waits for a cold start (``node/serving/cold_start.py``).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .moderation import Moderation, ModerationSpecError
from .validated import ValidatedMemo

__all__ = [
    "Autoscaling",
    "DeploymentSpec",
    "Resources",
    "SpecError",
    "check_name",
]

MAX_REPLICAS = 1000
MAX_APP_CHARS = 512
MAX_DEVICE_KINDS = 16
# Long enough for an hour-long model download; anything larger is a typo.
MAX_DELAY_S = 86_400.0
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
DEVICE_KINDS = ("cpu", "cuda", "mps", "rocm", "xpu")
Spread = Literal["zone", "region"]


# Validated specs kept by their msgpack bytes (``DeploymentSpec.from_wire``).
_PARSED_KEPT = 4096
_PARSED: ValidatedMemo[DeploymentSpec] = ValidatedMemo(_PARSED_KEPT)


class SpecError(ValueError):
    """A deployment spec that cannot be accepted: ``field`` says where (dotted), the message why."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class Resources:
    """What a node must have to host a replica."""

    # Device kinds allowed ("cpu", "cuda", "mps", ...); empty allows every kind.
    device_kinds: tuple[str, ...] = ()
    # Memory the node must have in total (GB, 1e9 bytes); 0: no minimum.
    min_memory_gb: float = 0.0
    # Whether the node must have at least one accelerator (GPU, MPS).
    accelerator: bool = False
    # Whether the node must have a container runtime (docker or podman): the app runs in a custom
    # image. Set by the node that takes the declaration when the app's config.yaml says so.
    container: bool = False


@dataclass(frozen=True)
class Autoscaling:
    """How `desired` follows demand (see the module docstring for the defaults' reasons)."""

    target_concurrency: float = 2.0
    window_s: float = 10.0
    scale_up_delay_s: float = 5.0
    scale_down_delay_s: float = 60.0
    idle_timeout_s: float = 300.0
    # Load the next replica as a warm backup when the demand's trend says the autoscaler will soon
    # want it (``prewarm.py``). Off by default: it holds a loaded model on an idle node.
    prewarm: bool = False
    # How far ahead the trend is extrapolated, at least (longer when replicas were seen taking
    # longer to load): the autoscaler's default window, a CPU model's load time or so.
    prewarm_horizon_s: float = 10.0


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as declared: its app, replica bounds, needs, scaling and spreading."""

    app: str
    min_replicas: int = 1
    max_replicas: int = 1
    resources: Resources = field(default_factory=Resources)
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    # Nodes next in rank after the hosts that load the model and wait warm, not routed to, so a
    # failover needs no model load.
    backups: int = 0
    # Spread replicas over distinct zones (or regions) first, when enough are eligible.
    spread: Spread | None = None
    # A model of the mesh's model stores (``meshnode models``) the app serves: a node placed to host a
    # replica pulls it from the peers that hold it first, and its app finds it in MESHNODE_MODEL_DIR.
    model: str | None = None
    # What its prompts and outputs are checked against (``moderation.py``); None: nothing is.
    moderation: Moderation | None = None

    @property
    def scales_to_zero(self) -> bool:
        """Whether the deployment may have no replica while idle."""
        return self.min_replicas == 0

    @functools.cached_property
    def wire(self) -> dict[str, Any]:
        """``to_wire()`` built once per spec and shared: read it, never change it.

        Every push-pull carries every record, and ``dataclasses.asdict`` on 1,000 specs took ~30 ms
        of the event loop per exchange; a spec is frozen, so its wire form never changes.
        """
        return self.to_wire()

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-ready dict of the caller's own (what ``PUT /v1/deployments/{name}`` takes)."""
        wire = asdict(self)
        wire["resources"]["device_kinds"] = list(self.resources.device_kinds)
        _omit_defaults(wire["autoscaling"])
        if not self.resources.container:
            # Left out when false: a spec without it reads the same to nodes that predate it.
            del wire["resources"]["container"]
        if self.model is None:
            del wire["model"]  # as for container: a spec without a model reads the same everywhere
        del wire["moderation"]  # asdict's copy; the section writes its own, and only when set
        if self.moderation is not None:
            wire["moderation"] = self.moderation.to_wire()
        return wire

    @classmethod
    def from_wire(cls, raw: object) -> DeploymentSpec:
        """Validate a decoded body strictly; raise SpecError naming the first bad field.

        Every push-pull carries every record, so results are kept by their msgpack bytes, as
        ``NodeMeta.from_wire`` keeps metadata: bytes equal to ones that passed give the same spec.
        """
        return _PARSED.of(raw, cls._validated)

    @classmethod
    def _validated(cls, raw: object) -> DeploymentSpec:
        body = _map(raw, "spec")
        _no_unknown(body, cls, "")
        app = body.get("app")
        if not isinstance(app, str) or not app.strip():
            raise SpecError("app", "required: an app reference such as apps/echo.py:Echo")
        if len(app) > MAX_APP_CHARS:
            raise SpecError("app", f"longer than {MAX_APP_CHARS} characters")
        min_replicas = _int(body, "min_replicas", 1, 0, MAX_REPLICAS)
        max_replicas = _int(body, "max_replicas", max(min_replicas, 1), 0, MAX_REPLICAS)
        if max_replicas < min_replicas:
            raise SpecError("max_replicas", f"{max_replicas} is below min_replicas {min_replicas}")
        spread = body.get("spread")
        if spread not in (None, "zone", "region"):
            raise SpecError("spread", "must be null, 'zone' or 'region'")
        return cls(
            app=app.strip(),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            resources=_resources(body.get("resources", {})),
            autoscaling=_autoscaling(body.get("autoscaling", {})),
            backups=_int(body, "backups", 0, 0, MAX_REPLICAS),
            spread=spread,
            model=_model(body.get("model")),
            moderation=_moderation(body.get("moderation")),
        )


def check_name(name: object) -> str:
    """A valid deployment name, or SpecError: 1-64 of [A-Za-z0-9_.-], starting alphanumeric."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SpecError("name", "must be 1-64 of A-Z a-z 0-9 _ . - and start with a letter or digit")
    return name


def _model(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not NAME_PATTERN.fullmatch(raw):
        raise SpecError(
            "model", "must be a model's name: 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return raw


def _moderation(raw: object) -> Moderation | None:
    if raw is None:
        return None
    try:
        return Moderation.from_wire(raw)
    except ModerationSpecError as exc:
        raise SpecError(f"moderation.{exc.field}".rstrip("."), exc.reason) from None


def _resources(raw: object) -> Resources:
    body = _map(raw, "resources")
    _no_unknown(body, Resources, "resources.")
    kinds = body.get("device_kinds", [])
    if not isinstance(kinds, list | tuple) or len(kinds) > MAX_DEVICE_KINDS:
        raise SpecError("resources.device_kinds", f"must be a list of at most {MAX_DEVICE_KINDS} kinds")
    for kind in kinds:
        if kind not in DEVICE_KINDS:
            raise SpecError("resources.device_kinds", f"{kind!r} is not one of {', '.join(DEVICE_KINDS)}")
    flags = {}
    for key in ("accelerator", "container"):
        flags[key] = body.get(key, False)
        if not isinstance(flags[key], bool):
            raise SpecError(f"resources.{key}", "must be true or false")
    return Resources(
        device_kinds=tuple(sorted(set(kinds))),
        min_memory_gb=_float(body, "min_memory_gb", 0.0, 0.0, 1e6, prefix="resources."),
        **flags,
    )


def _autoscaling(raw: object) -> Autoscaling:
    body = _map(raw, "autoscaling")
    _no_unknown(body, Autoscaling, "autoscaling.")
    defaults = Autoscaling()
    target = _float(body, "target_concurrency", defaults.target_concurrency, 0.01, 1e6, prefix="autoscaling.")
    return Autoscaling(
        target_concurrency=target,
        window_s=_float(body, "window_s", defaults.window_s, 0.1, MAX_DELAY_S, prefix="autoscaling."),
        scale_up_delay_s=_float(
            body, "scale_up_delay_s", defaults.scale_up_delay_s, 0.0, MAX_DELAY_S, prefix="autoscaling."
        ),
        scale_down_delay_s=_float(
            body, "scale_down_delay_s", defaults.scale_down_delay_s, 0.0, MAX_DELAY_S, prefix="autoscaling."
        ),
        idle_timeout_s=_float(
            body, "idle_timeout_s", defaults.idle_timeout_s, 0.0, MAX_DELAY_S, prefix="autoscaling."
        ),
        prewarm=_bool(body, "prewarm", defaults.prewarm, prefix="autoscaling."),
        prewarm_horizon_s=_float(
            body, "prewarm_horizon_s", defaults.prewarm_horizon_s, 0.0, MAX_DELAY_S, prefix="autoscaling."
        ),
    )


def _bool(body: dict[str, Any], key: str, default: bool, *, prefix: str = "") -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{prefix}{key}", "must be true or false")
    return value


def _omit_defaults(autoscaling: dict[str, Any]) -> None:
    """Leave the pre-warm knobs out while they have their defaults: nodes that predate them read it."""
    defaults = Autoscaling()
    for key in ("prewarm", "prewarm_horizon_s"):
        if autoscaling[key] == getattr(defaults, key):
            del autoscaling[key]


def _map(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        raise SpecError(where, "must be a JSON object")
    return raw


def _no_unknown(body: dict[str, Any], cls: type, prefix: str) -> None:
    known = {f.name for f in fields(cls)}
    for key in body:
        if key not in known:
            raise SpecError(f"{prefix}{key}", f"unknown field (known: {', '.join(sorted(known))})")


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(key, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _float(
    body: dict[str, Any], key: str, default: float, low: float, high: float, *, prefix: str = ""
) -> float:
    value = body.get(key, default)
    valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or not low <= value <= high:
        raise SpecError(f"{prefix}{key}", f"must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)
