"""The sealed link's handshake and frames (node/trust/sealed.py): keys both ends agree on, and every
way a frame or a handshake can be wrong refused."""

from __future__ import annotations

import pytest
import zmq
from zmq.utils import z85

from meshnode.trust.sealed import (
    MAX_FRAMES,
    ClientHandshake,
    Direction,
    LinkKeys,
    SealedError,
    ServerKeys,
    data_key_id,
)

OLD = "the old token of this mesh, 32+ characters"
NEW = "the new token of this mesh, 32+ characters"


def _node() -> tuple[bytes, bytes]:
    """A node's static key pair as CURVE makes it (and gossip announces it): raw public, raw secret."""
    public, secret = zmq.curve_keypair()
    return z85.decode(public), z85.decode(secret)


def _open(
    client_token: str, server_tokens: list[str], dialed: bytes | None = None
) -> tuple[LinkKeys, LinkKeys]:
    """A full handshake; (client's keys, server's keys). The proofs are checked as the stream does."""
    public, secret = _node()
    server = ServerKeys(secret, server_tokens)
    client = ClientHandshake(client_token, public if dialed is None else dialed)
    welcome, server_keys = server.answer(client.hello())
    client_keys = client.welcome(welcome)
    assert client_keys.receive.open(server_keys.send.seal(b"")) == b""  # the server's proof
    assert server_keys.receive.open(client_keys.send.seal(b"")) == b""  # the client's proof
    return client_keys, server_keys


def test_the_static_key_is_the_one_curve_made_and_gossip_announces() -> None:
    public, secret = _node()
    assert ServerKeys(secret, [OLD]).public == public


def test_both_ends_agree_and_each_direction_has_its_own_key() -> None:
    client, server = _open(OLD, [OLD])
    sealed = client.send.seal(b"a request")
    assert b"a request" not in sealed
    assert server.receive.open(sealed) == b"a request"
    assert client.receive.open(server.send.seal(b"its answer")) == b"its answer"
    # A frame reflected back to its sender does not open: the other direction's key.
    with pytest.raises(SealedError, match="does not open"):
        client.receive.open(client.send.seal(b"reflected"))


def test_a_frame_replayed_dropped_or_tampered_with_does_not_open() -> None:
    client, server = _open(OLD, [OLD])
    first, second = client.send.seal(b"one"), client.send.seal(b"two")
    with pytest.raises(SealedError):
        server.receive.open(second)  # the first was dropped: out of order
    assert server.receive.open(first) == b"one"
    with pytest.raises(SealedError):
        server.receive.open(first)  # replayed
    flipped = bytes([second[0] ^ 1]) + second[1:]
    with pytest.raises(SealedError) as refused:
        server.receive.open(flipped)
    assert refused.value.reason == "forged"
    assert server.receive.open(second) == b"two"


def test_a_client_without_a_token_the_server_holds_is_refused_at_its_hello() -> None:
    public, secret = _node()
    with pytest.raises(SealedError) as refused:
        ServerKeys(secret, [OLD]).answer(ClientHandshake(NEW, public).hello())
    assert refused.value.reason == "unknown_key"


def test_a_server_without_the_announced_key_cannot_prove_itself() -> None:
    _, secret = _node()
    impostor_public, _ = _node()
    client = ClientHandshake(OLD, impostor_public)  # gossip announced another node's key
    welcome, server_keys = ServerKeys(secret, [OLD]).answer(client.hello())
    with pytest.raises(SealedError) as refused:
        client.welcome(welcome).receive.open(server_keys.send.seal(b""))
    assert refused.value.reason == "forged"


def test_a_forged_hello_with_a_known_key_id_gets_no_further_than_its_proof() -> None:
    # Someone who saw a key id on the wire, without the token: a HELLO is answered, its proof fails.
    public, secret = _node()
    server = ServerKeys(secret, [OLD])
    stranger = ClientHandshake("a stranger who only copied the key id....", public)
    stranger._key_id = data_key_id(OLD)  # the only thing on the wire in the clear
    welcome, server_keys = server.answer(stranger.hello())
    with pytest.raises(SealedError):
        server_keys.receive.open(stranger.welcome(welcome).send.seal(b""))


def test_rotation_accepts_every_token_held_and_then_only_the_new() -> None:
    public, secret = _node()
    server = ServerKeys(secret, [NEW, OLD])
    for token in (OLD, NEW):
        server.answer(ClientHandshake(token, public).hello())
    server.allow([NEW])
    with pytest.raises(SealedError):
        server.answer(ClientHandshake(OLD, public).hello())


def test_keys_that_agree_on_nothing_are_refused() -> None:
    # The all-zero point: every agreement with it is zero, whatever the other key.
    public, secret = _node()
    server = ServerKeys(secret, [OLD])
    with pytest.raises(SealedError) as refused:
        server.answer(ClientHandshake(OLD, public).hello()[:12] + bytes(32))
    assert refused.value.reason == "bad_key"
    client = ClientHandshake(OLD, bytes(32))  # gossip announced the zero key
    welcome, _ = server.answer(client.hello())
    with pytest.raises(SealedError) as refused:
        client.welcome(welcome)
    assert refused.value.reason == "bad_key"
    with pytest.raises(SealedError):
        ClientHandshake(OLD, public[:31])


def test_a_direction_stops_at_its_last_nonce() -> None:
    direction = Direction(bytes(32))
    direction._count = MAX_FRAMES  # 2**64 frames are never reached otherwise
    with pytest.raises(SealedError) as refused:
        direction.seal(b"one too many")
    assert refused.value.reason == "exhausted"


def test_a_direction_resumed_from_its_state_goes_on_where_it_stopped() -> None:
    client, server = _open(OLD, [OLD])
    for frame in (b"one", b"two"):
        assert server.receive.open(client.send.seal(frame)) == frame
    # The server's end moves to another process (a link handed to a worker): its state resumes it.
    resumed = Direction(*server.receive.state())
    assert resumed.open(client.send.seal(b"three")) == b"three"
    replayed = client.send.state()
    with pytest.raises(SealedError, match="does not open"):
        Direction(replayed[0], 0).open(client.send.seal(b"four"))  # a state behind the link's
