"""Who may call what over HTTP: API keys, their scopes, and the decision for one request.

A pure core (stdlib only); ``node/http/gate.py`` carries the decision out for every request.

- Keys. An API key is ``mn_<id>_<secret>``: a 12-hex-digit id, public (what ``meshnode keys list``
  shows and ``revoke`` takes), and 256 random bits of secret. Nodes keep only the SHA-256 of the
  secret (``ApiKey.digest``), gossiped as a record so every node knows every key; a plain hash is
  enough for a secret of 256 random bits (no password to stretch), and the comparison is constant
  time. The key text is shown once, when made.
- Scopes. ``invoke``: predict, the OpenAI routes, jobs, reading the mesh, its deployments, its
  model stores and its metrics. ``admin``: everything ``invoke`` may, plus declaring and removing
  deployments, removing, re-reading and pulling models, and managing keys. ``need_for`` names the
  scope of every path; a path it does not know needs ``invoke`` (new routes are closed until
  someone opens them on purpose). Liveness and readiness
  (``/health``, ``/ready``) and the public key that signs webhooks are open to all, and so are the
  images behind the URLs of ``POST /v1/images/generations`` (``GET /v1/images/files/<token>.png``):
  each URL holds 128 random bits, so the URL itself is the permission to read that one image (a
  capability URL, as OpenAI's signed links are), made only by a request that needed ``invoke``; a
  key would keep the link from ``<img src>`` and other programs that cannot send one.
  The dashboard's page and its script and style (``/``, ``/dashboard/...``) are open too: they hold
  no data, and the page sends a key to ``/v1/events`` (which needs ``invoke``) in a header. So are
  the API docs page and its assets (``/docs``, ``/docs/...``: Swagger UI), for the same reason: the
  page sends a key to ``/openapi.json`` (``invoke``, like the API it describes) in a header.
- The decision (``decide``). Loopback clients need no key (the CLI, the demo and local tools keep
  working with nothing to set up); so does everyone on a node started with ``--insecure-http``.
  Anyone else: no key or an unknown, revoked or wrong one is 401; a valid key of too small a scope
  is 403.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "KEY_ID_CHARS",
    "MAX_KEYS",
    "ApiKey",
    "KeyTable",
    "Scope",
    "Verdict",
    "decide",
    "digest",
    "is_loopback",
    "make_key",
    "need_for",
    "split_key",
]

KEY_PREFIX = "mn_"
KEY_ID_CHARS = 12
KEY_SECRET_BYTES = 32
# Keys one mesh holds at most (revoked ones count: they are kept for good).
MAX_KEYS = 10_000
MAX_KEY_NAME_CHARS = 64
# Longer headers are refused before any parsing: a real key is 59 characters.
_MAX_AUTHORIZATION_CHARS = 256
_KEY_ID = re.compile(rf"[0-9a-f]{{{KEY_ID_CHARS}}}")
_DIGEST_BYTES = 32
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{KEY_ID_CHARS}}})_([A-Za-z0-9_\-]{{43}})")
# "/" and "/dashboard/": the dashboard's page, script and style, which hold no data (the page asks
# for a key and sends it to /v1/events, which needs one like every other route).
_OPEN_PATHS = frozenset({"/health", "/ready", "/.well-known/meshnode/jwks.json", "/"})
_ADMIN_PREFIXES = ("/v1/keys", "/v1/keyring")
# Capability URLs (see the module docstring): the path's token is the permission.
_CAPABILITY_PREFIXES = ("/v1/images/files/",)
_DASHBOARD_ASSETS = ("/dashboard/dashboard.js", "/dashboard/dashboard.css")
# "/docs" and these: the API docs page and its assets (node/http/api_docs.py), no data either.
_DOCS_PAGES = (
    "/docs",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui.css",
    "/docs/docs.js",
    "/docs/docs.css",
)


class Scope(enum.Enum):
    """What a key may do; ``admin`` includes everything ``invoke`` may."""

    INVOKE = "invoke"
    ADMIN = "admin"

    def covers(self, needed: Scope) -> bool:
        """Whether a key of this scope may do what needs `needed`."""
        return self is Scope.ADMIN or needed is Scope.INVOKE


@dataclass(frozen=True)
class ApiKey:
    """One key as every node holds it: never the secret, only its digest. Gossiped as is."""

    id: str
    name: str
    scope: Scope
    digest: bytes
    created_ms: int
    revoked: bool = False

    def to_wire(self) -> list[object]:
        """The msgpack row: [id, name, scope, digest, created_ms, revoked]."""
        return [self.id, self.name, self.scope.value, self.digest, self.created_ms, self.revoked]

    @classmethod
    def from_wire(cls, row: object) -> ApiKey:
        """Validate a decoded row strictly; ValueError on anything unexpected."""
        if not isinstance(row, list) or len(row) != 6:
            raise ValueError("an API key must be a 6-item array")
        key_id, name, scope, key_digest, created_ms, revoked = row
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"an API key id is {KEY_ID_CHARS} lowercase hex digits")
        if not isinstance(name, str) or len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
            raise ValueError(f"an API key name is at most {MAX_KEY_NAME_CHARS} printable characters")
        if scope not in _SCOPES:
            raise ValueError("an API key scope is invoke or admin")
        if not isinstance(key_digest, bytes) or len(key_digest) != _DIGEST_BYTES:
            raise ValueError("an API key digest is 32 bytes")
        if not isinstance(created_ms, int) or isinstance(created_ms, bool) or not 0 <= created_ms < 1 << 53:
            raise ValueError("an API key's creation time is milliseconds since the epoch")
        if not isinstance(revoked, bool):
            raise ValueError("an API key's revoked flag is a boolean")
        return cls(key_id, name, _SCOPES[scope], key_digest, created_ms, revoked)

    def wins_over(self, held: ApiKey) -> bool:
        """Whether this version of a key replaces `held` (same id): a revocation, once, for good."""
        # Revoked is final whatever arrives later, so a key revoked anywhere is revoked everywhere,
        # in any order of arrival; between two live versions (an id reused: 2^-48) the larger wins.
        if self.revoked != held.revoked:
            return self.revoked
        return (self.created_ms, self.digest, self.name) > (held.created_ms, held.digest, held.name)


class KeyTable:
    """Key id -> its winning version; revoked keys are kept, so they cannot come back."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}

    def merge(self, key: ApiKey) -> bool:
        """Keep `key` if it wins over what is held; True when the table changed."""
        held = self.keys.get(key.id)
        if held is not None and not key.wins_over(held):
            return False
        self.keys[key.id] = key
        return True

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        return self.keys.get(key_id)

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones included (what push-pull sends), oldest first."""
        return sorted(self.keys.values(), key=lambda key: (key.created_ms, key.id))


_SCOPES = {scope.value: scope for scope in Scope}


class Verdict(enum.Enum):
    """The outcome for one request, with the HTTP status a refusal gets."""

    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


def digest(secret: str) -> bytes:
    """What nodes keep of a key's secret."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def make_key(
    key_id_bytes: bytes, secret_bytes: bytes, name: str, scope: Scope, created_ms: int
) -> tuple[str, ApiKey]:
    """The key text to show once, and the record to keep, from fresh random bytes (6 and 32)."""
    if len(key_id_bytes) != KEY_ID_CHARS // 2 or len(secret_bytes) != KEY_SECRET_BYTES:
        raise ValueError("a key needs 6 random bytes of id and 32 of secret")
    if len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
        raise ValueError(f"a key's name is at most {MAX_KEY_NAME_CHARS} printable characters")
    key_id = key_id_bytes.hex()
    # URL-safe base64 without padding: 43 characters for 32 bytes.
    secret = base64.urlsafe_b64encode(secret_bytes).rstrip(b"=").decode("ascii")
    return f"{KEY_PREFIX}{key_id}_{secret}", ApiKey(key_id, name, scope, digest(secret), created_ms)


def split_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key text, else None."""
    match = _KEY_PATTERN.fullmatch(text)
    return (match[1], match[2]) if match else None


def need_for(method: str, path: str) -> Scope | None:
    """The scope a request needs; None when it is open to everyone."""
    if method in ("GET", "HEAD") and (
        path in _OPEN_PATHS
        or path in _DASHBOARD_ASSETS
        or path in _DOCS_PAGES
        or path.startswith(_CAPABILITY_PREFIXES)
    ):
        return None
    if path.startswith(_ADMIN_PREFIXES):
        return Scope.ADMIN
    changes = path == "/v1/models/store" or path.startswith(("/v1/deployments/", "/v1/models/store/"))
    if changes and method not in ("GET", "HEAD"):
        return Scope.ADMIN
    return Scope.INVOKE


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's loopback (IPv4, IPv6 or IPv4-mapped)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def decide(
    needed: Scope | None,
    *,
    loopback: bool,
    insecure: bool,
    authorization: str | None,
    lookup: Callable[[str], ApiKey | None],
) -> tuple[Verdict, str]:
    """Whether a request may go on, and why not."""
    if needed is None or loopback or insecure:
        return Verdict.ALLOW, ""
    if not authorization:
        return Verdict.UNAUTHENTICATED, "an API key is required: send Authorization: Bearer KEY"
    if len(authorization) > _MAX_AUTHORIZATION_CHARS:
        return Verdict.UNAUTHENTICATED, "the Authorization header is too long"
    kind, _, text = authorization.strip().partition(" ")
    parts = split_key(text.strip()) if kind.lower() == "bearer" else None
    if parts is None:
        return Verdict.UNAUTHENTICATED, "the Authorization header must be Bearer and a meshnode API key"
    key = lookup(parts[0])
    if key is None or key.revoked or not hmac.compare_digest(key.digest, digest(parts[1])):
        return Verdict.UNAUTHENTICATED, "the API key is not valid (unknown, revoked or wrong)"
    if not key.scope.covers(needed):
        return Verdict.FORBIDDEN, f"this API key has scope {key.scope.value}; this needs {needed.value}"
    return Verdict.ALLOW, ""
