"""The data plane's keys: ZeroMQ CURVE (CurveZMQ, RFC 26) between members only.

Every request forwarded between nodes travels over a CURVE connection, encrypted and authenticated
by libzmq (libsodium) in its own I/O threads, off the agent's event loop:

- Server keys are per node and per run (``node_keys``): the public one travels in the node's
  gossiped metadata (``NodeMeta.data_key``), which only members can read or write, so a node
  connects only to the key a member announced, and a restarted node gets a new key.
- Client keys come from the mesh's tokens (``client_keys``): the ZAP handler of every node's
  data-plane socket (``ClientCheck``) admits a connection only if its client key is derived from a
  token in this node's keyring. A node without the token cannot even finish the handshake, so no
  byte it sends reaches the request parser. Admission does not depend on the membership view, so
  a node that joined a moment ago is not refused while gossip about it spreads.

Rotation: a node connects with the client key of its primary token and admits those of every token
it holds, as the gossip keyring does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .keyring import derive_key

__all__ = ["ClientCheck", "CurveKeys", "client_keys", "node_keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE key pair, Z85-encoded as libzmq takes them (40 bytes each)."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # never print the secret by accident
        return f"CurveKeys(public={self.public.decode()})"


def node_keys() -> CurveKeys:
    """A fresh server key pair for this run of the node."""
    public, secret = zmq.curve_keypair()
    return CurveKeys(public, secret)


def client_keys(token: str) -> CurveKeys:
    """The client key pair every member holding `token` connects with."""
    secret = z85.encode(derive_key(token, b"data plane curve client"))
    return CurveKeys(zmq.curve_public(secret), secret)


class ClientCheck:
    """The ZAP handler of a data-plane socket: admits clients whose key comes from a held token."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], tokens: Iterable[str]) -> None:
        self.refused = 0  # handshakes refused: counted on /metrics
        self._allowed = frozenset(client_keys(token).public for token in tokens)
        self._authenticator = ThreadAuthenticator(context, log=log)

    def start(self) -> None:
        """Start answering ZAP requests (before the socket it guards is bound)."""
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain="*", credentials_provider=self)

    def allow(self, tokens: Iterable[str]) -> None:
        """Admit the client keys of exactly these tokens from now on (a rotation)."""
        # One reference swap: the authenticator's thread reads it without a lock.
        self._allowed = frozenset(client_keys(token).public for token in tokens)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP's question, on the authenticator's thread: may this client key connect?"""
        if key in self._allowed:
            return True
        self.refused += 1
        return False

    def stop(self) -> None:
        """Stop the handler's thread."""
        self._authenticator.stop()
