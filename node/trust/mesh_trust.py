"""What this node holds to prove it belongs: its tokens and every key derived from them.

``load_trust`` runs once at start: it finds the token (``token.py``), then derives the gossip
keyring (``keyring.py``) and the data plane's key (``sealed.py``). The agent hands each part
the piece it needs; nothing else reads the token.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..config import AgentConfig, default_data_dir
from ..mesh.keyring_record import KeyringRecord
from .keyring import Keyring
from .rotation import load_ring, ring_at_start
from .sealed import NodeKey
from .token import MeshToken, TokenSource, resolve_token

__all__ = ["MeshTrust", "announce", "load_trust"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshTrust:
    """The node's tokens (primary first) and the keys derived from them."""

    token: MeshToken
    tokens: tuple[str, ...] = field(repr=False)
    keyring: Keyring = field(repr=False)
    server_keys: NodeKey  # the data plane's, for this run (its public half is gossiped)
    # The ring a rotation last left in the data dir, when it is the one this run starts with.
    saved_ring: KeyringRecord | None = None


def load_trust(config: AgentConfig) -> MeshTrust:
    """This node's trust, from its token; ConfigError when the given token is unusable."""
    token = resolve_token(
        token=config.token,
        token_file=config.token_file,
        environ=os.environ,
        data_dir=config.data_dir,
        home=default_data_dir(),
        create=True,
    )
    assert token is not None  # create=True always finds or makes one
    saved = load_ring(config.data_dir)
    tokens = ring_at_start(token.value, saved)
    return MeshTrust(
        token=token,
        tokens=tokens,
        keyring=Keyring(tokens, config.mesh_id),
        server_keys=NodeKey.fresh(),
        saved_ring=saved if saved is not None and saved.tokens == tokens else None,
    )


def announce(trust: MeshTrust, config: AgentConfig, mesh_addr: str, http_addr: str) -> None:
    """Say at start what the operator must know: how others join a new mesh; an open HTTP port."""
    if trust.token.source is TokenSource.CREATED:
        log.warning(
            "made a new mesh token, kept in %s (mode 0600). Join another machine with:\n"
            "    meshnode join --seed %s --token %s\n"
            "(`meshnode token` prints it again; docs/security.md says how to keep it)",
            trust.token.path,
            mesh_addr,
            trust.token.value,
        )
    if config.insecure_http:
        log.warning(
            "--insecure-http: ANYONE who reaches %s may run every deployment and read the mesh with "
            "no API key; use it on a trusted network only",
            http_addr,
        )
