"""The data plane's sealed links: a handshake from the mesh's tokens and a node's key, then AEAD frames.

A data-plane link is one TCP connection between two members. It opens with a handshake in the
spirit of Noise's ``NKpsk`` pattern (frames laid out in ``mesh/stream_frames.py``)::

    client -> server   HELLO: key id of the client's primary token, ephemeral key e_c
    server -> client   WELCOME: ephemeral key e_s; then a sealed empty frame (the server's proof)
    client -> server   a sealed empty frame (the client's proof); then requests

Both ends derive the link's keys from two X25519 agreements and the token's pre-shared key::

    HKDF-SHA256(ikm = DH(e_c, S) || DH(e_c, e_s), salt = psk(token),
                info = LABEL || e_c || e_s || S)  ->  client-to-server key || server-to-client key

where ``S`` is the server node's static key, the one its gossiped metadata announces
(``NodeMeta.data_key``, ``NodeKey``). What that gives:

- The client talks to the node that gossip announced or to nobody: only the holder of ``S``'s
  secret derives the keys that open the client's frames and seal the proof.
- The server talks to members only: without a token it holds, no frame opens. A HELLO naming a
  key id it does not hold is refused at once; a forged one fails at the client's proof, before
  any request is read. Either way nothing from a non-member reaches a parser.
- Forward secrecy: the ephemeral keys live for one handshake; a token or node key learned later
  does not open a recorded link.
- Each direction has its own AES-256-GCM key and its nonce is that direction's frame counter, so
  no nonce repeats; a frame replayed, reordered, dropped, or reflected back to its sender does not
  open, and the link is closed. A direction stops after ``MAX_FRAMES`` frames (never in practice).

Rotation, as the gossip keyring: a client opens with its primary token, a server accepts every
token it holds (``ServerKeys.allow``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85

from ..mesh.stream_frames import (
    KEY_BYTES,
    KEY_ID_BYTES,
    hello_frame,
    parse_hello,
    parse_welcome,
    welcome_frame,
)
from .keyring import derive_key

__all__ = [
    "ANNOUNCED_KEY_CHARS",
    "MAX_FRAMES",
    "SEAL_TAG_BYTES",
    "ClientHandshake",
    "Direction",
    "LinkKeys",
    "NodeKey",
    "SealedError",
    "ServerKeys",
    "announced_key",
    "data_key_id",
]

LABEL = b"meshnode data plane v1"
SEAL_TAG_BYTES = 16  # what sealing adds to each frame
MAX_FRAMES = 2**64 - 1  # frames one direction of a link may seal

ANNOUNCED_KEY_CHARS = 40  # a 32-byte key in Z85, as gossip carries it (``NodeMeta.data_key``)

SealedReason = Literal["unknown_key", "forged", "exhausted", "bad_key"]


class SealedError(ValueError):
    """A handshake or frame that fails; ``reason`` names the drop counter. The link is closed."""

    def __init__(self, reason: SealedReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SealedReason = reason


@dataclass(frozen=True)
class NodeKey:
    """A node's static X25519 key for one run: its public half is gossiped, so a restart changes it."""

    secret: bytes = field(repr=False)
    public: str  # Z85, ``NodeMeta.data_key``

    @classmethod
    def fresh(cls) -> NodeKey:
        """A new key pair."""
        secret = X25519PrivateKey.generate()
        public = z85.encode(secret.public_key().public_bytes_raw()).decode("ascii")
        return cls(secret.private_bytes_raw(), public)


def announced_key(data_key: str) -> bytes | None:
    """The raw key in a gossiped ``data_key``; None when it is not one (a node announcing none)."""
    if len(data_key) != ANNOUNCED_KEY_CHARS:
        return None
    try:
        return z85.decode(data_key.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError):
        return None


def data_key_id(token: str) -> bytes:
    """The 8-byte fingerprint of the data-plane key `token` gives (in a HELLO, in the clear)."""
    psk = derive_key(token, b"data plane psk")
    return hashlib.sha256(b"meshnode data key id" + psk).digest()[:KEY_ID_BYTES]


class Direction:
    """One direction of a link: seals (or opens) its frames in order, the counter as the nonce."""

    __slots__ = ("_aead", "_count", "_key")

    def __init__(self, key: bytes, count: int = 0) -> None:
        self._key = key
        self._aead = AESGCM(key)
        self._count = count

    def state(self) -> tuple[bytes, int]:
        """Its key and the next frame's number: what resumes it in another process (a handed link)."""
        return self._key, self._count

    def seal(self, payload: bytes) -> bytes:
        """`payload` sealed as this direction's next frame."""
        count = self._count
        if count >= MAX_FRAMES:
            raise SealedError("exhausted", "this link has sealed all the frames it may")
        self._count = count + 1
        return self._aead.encrypt(count.to_bytes(12, "little"), payload, None)

    def open(self, frame: bytes) -> bytes:
        """The payload of this direction's next frame; SealedError when it is not that frame."""
        count = self._count
        if count >= MAX_FRAMES:
            raise SealedError("exhausted", "this link has opened all the frames it may")
        try:
            payload = self._aead.decrypt(count.to_bytes(12, "little"), frame, None)
        except InvalidTag:
            detail = "a frame that does not open (tampered, replayed, or not a member's)"
            raise SealedError("forged", detail) from None
        self._count = count + 1
        return payload


@dataclass(frozen=True)
class LinkKeys:
    """One end's two directions of an open link."""

    send: Direction
    receive: Direction


def _link_keys(
    shared: bytes, psk: bytes, client_e: bytes, server_e: bytes, server_s: bytes, *, client: bool
) -> LinkKeys:
    info = LABEL + client_e + server_e + server_s
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=psk, info=info).derive(shared)
    to_server, to_client = Direction(okm[:32]), Direction(okm[32:])
    return LinkKeys(to_server, to_client) if client else LinkKeys(to_client, to_server)


def _public_key(raw: bytes) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise SealedError("bad_key", f"an X25519 key is {KEY_BYTES} bytes, not {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def _agree(secret: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return secret.exchange(public)
    except ValueError:  # a low-order point: its agreement is all zeros and proves nothing
        raise SealedError("bad_key", "a peer key that agrees on nothing") from None


class ClientHandshake:
    """The dialing end of one link: to the node whose static key is `server_key`, as a holder of `token`."""

    def __init__(self, token: str, server_key: bytes) -> None:
        self._psk = derive_key(token, b"data plane psk")
        self._key_id = data_key_id(token)
        self._server = _public_key(server_key)
        self._server_raw = bytes(server_key)
        self._ephemeral = X25519PrivateKey.generate()
        self._ephemeral_raw = self._ephemeral.public_key().public_bytes_raw()

    def hello(self) -> bytes:
        """The first frame's body."""
        return hello_frame(self._key_id, self._ephemeral_raw)

    def welcome(self, frame: bytes) -> LinkKeys:
        """The link's keys from the server's WELCOME; the next frame, its proof, must open with them."""
        server_e_raw = parse_welcome(frame)
        server_e = _public_key(server_e_raw)
        shared = _agree(self._ephemeral, self._server) + _agree(self._ephemeral, server_e)
        return _link_keys(shared, self._psk, self._ephemeral_raw, server_e_raw, self._server_raw, client=True)


class ServerKeys:
    """The answering end of every link to this node: its static key and the tokens it accepts."""

    def __init__(self, secret: bytes, tokens: Sequence[str]) -> None:
        self._static = X25519PrivateKey.from_private_bytes(secret)
        self.public = self._static.public_key().public_bytes_raw()
        self._psks: dict[bytes, bytes] = {}
        self.allow(tokens)

    def allow(self, tokens: Sequence[str]) -> None:
        """Accept exactly these tokens' links from now on (a rotation); links open stay open."""
        self._psks = {data_key_id(token): derive_key(token, b"data plane psk") for token in tokens}

    def answer(self, frame: bytes) -> tuple[bytes, LinkKeys]:
        """The WELCOME body for a client's HELLO `frame`, and the link's keys for this end."""
        hello = parse_hello(frame)
        psk = self._psks.get(hello.key_id)
        if psk is None:
            raise SealedError("unknown_key", "a hello with a key id this node does not hold")
        client_e = _public_key(hello.ephemeral)
        ephemeral = X25519PrivateKey.generate()
        ephemeral_raw = ephemeral.public_key().public_bytes_raw()
        shared = _agree(self._static, client_e) + _agree(ephemeral, client_e)
        keys = _link_keys(shared, psk, hello.ephemeral, ephemeral_raw, self.public, client=False)
        return welcome_frame(ephemeral_raw), keys
