"""The mesh's webhook signing keys: ED25519, derived from its tokens, published as a JWKS.

Every node of a mesh derives the same key pair from the same token (HKDF-SHA256 with this module's
own ``info`` label, ``keyring.derive_key``), so any node can sign a job's webhook, and the one that
takes a delivery over from a dead node signs it with the same key, with no key ever exchanged. A
receiver needs only the public half, which every node serves at
``GET /.well-known/meshnode/jwks.json`` (``node/http/wellknown.py``) as an RFC 7517 key set of
RFC 8037 ``OKP``/``Ed25519`` keys.

Headers. The convention is Standard Webhooks 1.0 (standardwebhooks.com, the format Svix sends) with
its asymmetric scheme, ``v1a`` (ED25519)::

    webhook-id: <the job id>                        (the receiver's idempotency key)
    webhook-timestamp: <integer unix seconds>       (this try's time, new on every retry)
    webhook-signature: v1a,<standard base64 of the 64-byte signature>
    webhook-key-id: <kid of the signing key>        (meshnode's addition, below)

The signed bytes are ``f"{id}.{timestamp}.".encode() + body``, the raw body exactly as sent, so the
signature covers the job, the time and the payload. ``webhook-key-id`` is not in the standard: it
names the JWKS entry that verifies the signature, so a receiver looks one key up instead of trying
each, and knows to fetch the JWKS again when it sees a key id it has never met (a rotation). It is a
hint, not trust: the signature verifies only with a key from the receiver's own copy of the JWKS.
The spec forbids ``.`` in ids; job ids here are URL-safe base64, and ``sign`` refuses any other.

Rotation. A mesh holds one to ``keyring.MAX_KEYS`` tokens, primary first (``rotation.py``): the
primary's key signs, and the JWKS lists the keys of every token held, so a receiver whose copy was
fetched during the rotation verifies webhooks signed before and after the new token became primary.

Key ids. ``kid`` is base64url (no padding) of the first 12 bytes of the SHA-256 of the raw 32-byte
public key: 16 characters, stable for a token, and different for any two tokens in practice
(2^-96 for a collision).

Verifying (``verify_webhook``, also ``from meshnode import verify_webhook``) checks the shape of every
header and the JWKS first, with bounds on every length, then the timestamp window, then the
signature; every failure is a ``WebhookVerificationError`` whose ``reason`` says which check failed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .keyring import MAX_KEYS, derive_key

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "ID_HEADER",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "WebhookKey",
    "WebhookVerificationError",
    "jwks",
    "sign_webhook",
    "verify_webhook",
    "webhook_key",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
KEY_ID_HEADER = "webhook-key-id"
# Standard Webhooks' asymmetric (ED25519) signature identifier; "v1" is its HMAC scheme.
SIGNATURE_VERSION = "v1a"
# The receiver's window around its clock: five minutes, what Standard Webhooks' libraries and Svix use.
DEFAULT_TOLERANCE_S = 300

_PURPOSE = b"webhook ed25519 signing"  # HKDF info: no other key of the mesh uses this label
_KID_BYTES = 12
# Bounds on what a receiver parses; each is far above any real value, so only garbage meets them.
_MAX_ID_CHARS = 128
_MAX_TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658
_MAX_SIGNATURE_HEADER_CHARS = 1024  # room for a handful of signatures (one is 92 characters)
_MAX_SIGNATURES = 8
_MAX_JWKS_KEYS = 16
_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{_MAX_ID_CHARS}}}")  # no ".": it separates the signed parts
_TIMESTAMP = re.compile(rf"[0-9]{{1,{_MAX_TIMESTAMP_DIGITS}}}")
_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_JWK_X = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
_SIGNATURE_BYTES = 64

Reason = Literal["malformed", "bad_jwks", "expired", "unknown_key", "bad_signature"]


class WebhookVerificationError(ValueError):
    """A webhook that does not verify; ``reason`` names the check that failed."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class Headers(Protocol):
    """Request headers as any server gives them: a dict, Starlette's, ``http.server``'s message."""

    def items(self) -> Iterable[tuple[str, str]]:
        """(name, value) pairs, in any case."""
        ...


@dataclass(frozen=True)
class WebhookKey:
    """The signing key one token gives, with its public half and key id."""

    kid: str
    public: bytes  # raw 32 bytes (RFC 8032)
    private: Ed25519PrivateKey = field(repr=False, compare=False)

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037)."""
        x = _b64url(self.public)
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def sign(self, job_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
        """The headers of one webhook POST of `body` for `job_id`, tried at `timestamp_s`."""
        if not _ID.fullmatch(job_id):
            raise ValueError(f"a webhook id is 1 to {_MAX_ID_CHARS} of A-Z a-z 0-9 _ -")
        if not 0 <= timestamp_s < 10**_MAX_TIMESTAMP_DIGITS:
            raise ValueError("a webhook timestamp is whole unix seconds")
        signature = self.private.sign(_signed_content(job_id, str(timestamp_s), body))
        return {
            ID_HEADER: job_id,
            TIMESTAMP_HEADER: str(timestamp_s),
            SIGNATURE_HEADER: f"{SIGNATURE_VERSION},{base64.b64encode(signature).decode('ascii')}",
            KEY_ID_HEADER: self.kid,
        }


# A node holds a few tokens for its whole run; deriving once keeps the JWKS route and each delivery
# to a dictionary lookup instead of an HKDF and a scalar multiplication.
@functools.lru_cache(maxsize=4 * MAX_KEYS)
def webhook_key(token: str) -> WebhookKey:
    """The webhook signing key every node holding `token` derives."""
    private = Ed25519PrivateKey.from_private_bytes(derive_key(token, _PURPOSE))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WebhookKey(_kid(public), public, private)


def jwks(tokens: Sequence[str]) -> dict[str, Any]:
    """The JSON Web Key Set of the keys of `tokens` (primary first): what receivers verify with."""
    return {"keys": [webhook_key(token).jwk() for token in tokens]}


def sign_webhook(tokens: Sequence[str], job_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The headers of a webhook POST, signed with the primary token's key (``tokens[0]``)."""
    return webhook_key(tokens[0]).sign(job_id, timestamp_s, body)


def verify_webhook(
    headers: Headers,
    body: bytes,
    jwks_document: Mapping[str, Any],
    *,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Check a received webhook against a mesh's JWKS; WebhookVerificationError says why it fails."""
    job_id, timestamp, signatures, kid = _read_headers(headers)
    keys = _read_jwks(jwks_document)
    if abs(now_s - int(timestamp)) > tolerance_s:
        raise WebhookVerificationError(
            "expired", f"the webhook's timestamp is more than {tolerance_s:g} s away from now"
        )
    if kid is not None:
        if kid not in keys:
            raise WebhookVerificationError(
                "unknown_key", f"no key {kid!r} in the JWKS (fetch it again: the mesh may have rotated)"
            )
        candidates = [keys[kid]]
    else:  # a plain Standard Webhooks sender names no key: try each one published
        candidates = list(keys.values())
    content = _signed_content(job_id, timestamp, body)
    for signature in signatures:
        for key in candidates:
            try:
                key.verify(signature, content)
            except InvalidSignature:
                continue
            return
    raise WebhookVerificationError("bad_signature", "the signature does not verify with the mesh's key")


def _read_headers(headers: Headers) -> tuple[str, str, list[bytes], str | None]:
    """(id, timestamp, v1a signatures, key id or None) from the headers, each checked and bounded."""
    wanted = {ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER, KEY_ID_HEADER}
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in wanted:
            if lowered in found:
                raise WebhookVerificationError("malformed", f"the {lowered} header is repeated")
            found[lowered] = value
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if name not in found:
            raise WebhookVerificationError("malformed", f"the {name} header is missing")
    job_id, timestamp, kid = found[ID_HEADER], found[TIMESTAMP_HEADER], found.get(KEY_ID_HEADER)
    if not _ID.fullmatch(job_id):
        raise WebhookVerificationError("malformed", f"the {ID_HEADER} header is not a webhook id")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookVerificationError("malformed", f"the {TIMESTAMP_HEADER} header is not unix seconds")
    if kid is not None and not _KID.fullmatch(kid):
        raise WebhookVerificationError("malformed", f"the {KEY_ID_HEADER} header is not a key id")
    return job_id, timestamp, _read_signatures(found[SIGNATURE_HEADER]), kid


def _read_signatures(header: str) -> list[bytes]:
    """The ``v1a`` signatures of a space-separated list; other schemes are skipped (the spec's rule)."""
    if len(header) > _MAX_SIGNATURE_HEADER_CHARS:
        raise WebhookVerificationError("malformed", f"the {SIGNATURE_HEADER} header is too long")
    entries = header.split()
    if len(entries) > _MAX_SIGNATURES:
        raise WebhookVerificationError("malformed", f"the {SIGNATURE_HEADER} header lists too many")
    signatures = []
    for entry in entries:
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, and non-ASCII text
            raise WebhookVerificationError("malformed", "a v1a signature is not base64") from None
        if len(signature) != _SIGNATURE_BYTES:
            raise WebhookVerificationError("malformed", "a v1a signature is not 64 bytes")
        signatures.append(signature)
    if not signatures:
        raise WebhookVerificationError("malformed", f"the {SIGNATURE_HEADER} header has no v1a signature")
    return signatures


def _read_jwks(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """kid -> public key of every ED25519 key in a JWKS; keys of other types are skipped."""
    listed = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(listed, list) or not 1 <= len(listed) <= _MAX_JWKS_KEYS:
        raise WebhookVerificationError("bad_jwks", f'a JWKS is {{"keys": [1 to {_MAX_JWKS_KEYS} keys]}}')
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in listed:
        if not isinstance(entry, Mapping) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        kid, x = entry.get("kid"), entry.get("x")
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise WebhookVerificationError("bad_jwks", "an Ed25519 JWK needs a kid of base64url characters")
        if not isinstance(x, str) or not _JWK_X.fullmatch(x):
            raise WebhookVerificationError("bad_jwks", "an Ed25519 JWK's x is not 32 bytes as base64url")
        try:
            keys[kid] = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
        except ValueError:  # binascii.Error included
            raise WebhookVerificationError("bad_jwks", "an Ed25519 JWK's x is not a public key") from None
    if not keys:
        raise WebhookVerificationError("bad_jwks", "the JWKS holds no Ed25519 key")
    return keys


def _signed_content(job_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{job_id}.{timestamp}.".encode("ascii") + body


def _kid(public: bytes) -> str:
    return _b64url(hashlib.sha256(public).digest()[:_KID_BYTES])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
