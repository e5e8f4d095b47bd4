"""Gossip sealed with keys derived from the mesh's tokens (memberlist's keyring, with an AEAD).

Every membership packet leaves this node sealed and is opened before anything decodes it::

    [1 byte SEAL_VERSION][4 bytes key id][12 bytes nonce][AES-256-GCM ciphertext and 16-byte tag]

- Keys. A token gives a 256-bit key by HKDF-SHA256 (RFC 5869) and a 4-byte key id, a fingerprint
  that says which key sealed a packet without revealing it. Nothing else about the token leaves the
  node.
- Associated data. The mesh id and the membership protocol version are authenticated with every
  packet: a packet of another mesh id, or another protocol, does not open even with the same token.
- Nonces. 96 random bits per packet. With random nonces one key stays safe for 2^32 packets
  (NIST SP 800-38D), which a mesh of 1000 nodes on LAN timings sends in about 40 years; rotating
  the token starts a new key.
- Rotation. A keyring holds several keys: the primary seals, every key opens. Installing a new
  token everywhere first, then making it primary, then removing the old one, changes keys with no
  packet that some node cannot open (``docs/security.md``).

A packet that does not open is dropped before decoding and counted by reason: ``unsealed`` (too
short or not this format), ``unknown_key`` (sealed with a key this node does not hold: another
mesh, or a rotation this node missed), ``forged`` (the tag does not verify: tampered, or another
mesh id).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..mesh.wire import PROTOCOL_VERSION

__all__ = ["SEAL_OVERHEAD_BYTES", "SEAL_VERSION", "Keyring", "SealError", "derive_key", "key_id"]

SEAL_VERSION = 1
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES
# What sealing adds to a packet: budgets for packets subtract it.
SEAL_OVERHEAD_BYTES = _HEADER_BYTES + _TAG_BYTES
# Keys one node accepts at once: the current one and a rotation's new one, with room to spare.
MAX_KEYS = 8

DropReason = Literal["unsealed", "unknown_key", "forged"]


class SealError(ValueError):
    """A packet that does not open; ``reason`` names the drop counter."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason)
        self.reason: DropReason = reason


def derive_key(token: str, purpose: bytes) -> bytes:
    """A 256-bit key for `purpose` from `token` (HKDF-SHA256, fixed salt: the token is the secret)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"meshnode mesh token", info=purpose)
    return hkdf.derive(token.encode("utf-8"))


def key_id(token: str) -> bytes:
    """The 4-byte fingerprint of the gossip key `token` gives: tells keys apart, reveals nothing."""
    return hashlib.sha256(b"meshnode key id" + derive_key(token, b"gossip aead")).digest()[:_KEY_ID_BYTES]


@dataclass(frozen=True)
class _Key:
    id: bytes
    aead: AESGCM


class Keyring:
    """The gossip keys of one node: the first (primary) seals, every one opens."""

    def __init__(self, tokens: Sequence[str], mesh_id: str) -> None:
        if not 1 <= len(tokens) <= MAX_KEYS:
            raise ValueError(f"a keyring holds 1 to {MAX_KEYS} tokens, not {len(tokens)}")
        self._keys = [_Key(key_id(token), AESGCM(derive_key(token, b"gossip aead"))) for token in tokens]
        self._by_id = {key.id: key for key in reversed(self._keys)}
        self._primary = self._keys[0]
        self._associated = b"meshnode gossip|%d|%s" % (PROTOCOL_VERSION, mesh_id.encode("utf-8"))

    @property
    def key_ids(self) -> list[str]:
        """Fingerprints of the keys held, primary first, as hex (what `meshnode token` shows)."""
        return [key.id.hex() for key in self._keys]

    def seal(self, packet: bytes) -> bytes:
        """`packet` encrypted and authenticated with the primary key."""
        nonce = os.urandom(_NONCE_BYTES)
        header = bytes((SEAL_VERSION,)) + self._primary.id + nonce
        return header + self._primary.aead.encrypt(nonce, packet, self._associated)

    def open(self, sealed: bytes) -> bytes:
        """The packet inside `sealed`; SealError when it was not sealed by a key held here."""
        if len(sealed) < SEAL_OVERHEAD_BYTES or sealed[0] != SEAL_VERSION:
            raise SealError("unsealed")
        key = self._by_id.get(sealed[1 : 1 + _KEY_ID_BYTES])
        if key is None:
            raise SealError("unknown_key")
        nonce = sealed[1 + _KEY_ID_BYTES : _HEADER_BYTES]
        try:
            return key.aead.decrypt(nonce, sealed[_HEADER_BYTES:], self._associated)
        except InvalidTag:
            raise SealError("forged") from None
