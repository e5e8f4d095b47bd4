"""Fuzzing the two ports of a real agent with frames that hypothesis makes (issue 12, item 6).

A holder of the mesh token, who gets past the seal and the data plane's handshake, sends what hypothesis
generates: msgpack values of every type at every size the wire can carry (integers up to 2^64 - 1
and down to -2^63, NaN and infinities, deep nesting, bytes where text belongs), shaped like a
membership packet or a data-plane envelope, or plain bytes. Every frame must be dropped and counted
or handled, and the agent must stay up and keep serving: after each batch a request goes through
the mesh, and at the end no traceback is in the agent's log.

Each port gets a bounded number of examples (``EXAMPLES``) with a fixed seed, so a CI run is quick
and reproducible; a failure prints the frame that broke it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from meshnode.mesh import wire
from meshnode.mesh.envelope import (
    ENVELOPE_VERSION,
    Call,
    EnvelopeKind,
    Reply,
    decode_envelope,
    encode_envelope,
)
from tests.integration.agents import Mesh, metric, wait_for
from tests.integration.member_link import MemberLink
from tests.integration.membership.intruder import INTRUDER, Intruder

EXAMPLES = 150
SEED = 20261203
FORM_TIMEOUT_S = 45.0
REPLY_TIMEOUT_S = 15.0
DEPLOYMENT = "echo"
# Bounded and reproducible: a fixed seed, no example database, no deadline per example (each one is
# a round trip to a real agent on a busy machine).
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, UINT64_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
# Message kinds and envelope kinds are small integers: aim at the real ones and just past them.
kinds = st.integers(-1, 16)


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# One membership message: [kind, ...fields].
messages = st.builds(lambda kind, rest: [kind, *rest], kinds, st.lists(values, max_size=8))
membership_packets = st.one_of(
    st.binary(max_size=200),
    st.builds(packed, values),
    # [version, mesh id, sender, sender address, messages]: the real header, fuzzed messages.
    st.builds(
        lambda version, mesh_id, messages: (version, mesh_id, messages),
        st.sampled_from([wire.PROTOCOL_VERSION, wire.PROTOCOL_VERSION + 1, -1]),
        st.just(None),
        st.lists(
            st.builds(lambda kind, rest: [kind, *rest], kinds, st.lists(values, max_size=8)), max_size=4
        ),
    ),
)
# A call of the right shape with fuzzed values: where the bounds on numbers from the wire matter.
calls = st.builds(
    lambda rid, deployment, body, header, stream, accept, timeout_ms: packed(
        [ENVELOPE_VERSION, EnvelopeKind.CALL, rid, deployment, body, header, stream, accept, timeout_ms]
    ),
    st.text(min_size=1, max_size=20),
    st.sampled_from([DEPLOYMENT, "", "nope", "x" * 300]),
    st.dictionaries(st.text(max_size=8), values, max_size=5),
    st.none() | st.text(max_size=20),
    st.booleans(),
    st.sampled_from(["", "application/json", "image/png", "text/event-stream"]),
    st.integers(INT64_MIN, UINT64_MAX),
)
envelopes = st.one_of(
    calls,
    st.binary(max_size=200),
    st.builds(packed, values),
    st.builds(
        lambda version, kind, rid, rest: packed([version, kind, rid, *rest]),
        st.sampled_from([ENVELOPE_VERSION, ENVELOPE_VERSION + 1]),
        kinds,
        st.one_of(st.text(min_size=1, max_size=20), values),
        st.lists(values, max_size=8),
    ),
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """n0 forwards to n1, which hosts the echo replica; the fuzzing targets n1."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    deploy = {1: ["--deploy", f"{DEPLOYMENT}=meshnode.apps.echo:Echo"]}
    with Mesh(workdir, 2, extra_args=deploy, token=secrets.token_urlsafe(32)) as started:
        started.wait_formed(FORM_TIMEOUT_S)
        assert serves(started), started.describe()
        yield started


def serves(mesh: Mesh) -> bool:
    """A request entering n0 reaches the replica on n1 and comes back (after a start-up, retried)."""
    entry = mesh.agents[0]
    answers: list[httpx.Response] = []

    def answered() -> bool:
        mesh.agents[1].check_running()
        answers.append(httpx.post(f"{entry.url}/v1/predict/{DEPLOYMENT}", json={"text": "after"}, timeout=30))
        return answers[-1].status_code != 503  # 503: the replica is still starting

    wait_for(answered, FORM_TIMEOUT_S, message=lambda: f"{answers[-1:]}\n{mesh.describe()}")
    last = answers[-1]
    return last.status_code == 200 and last.headers.get("x-mesh-route") == "n0,n1"


def no_traceback(mesh: Mesh) -> None:
    for agent in mesh.agents:
        agent.check_running()
        assert "Traceback" not in agent.log_tail(100_000), agent.describe()


def test_mesh_port_survives_fuzzed_packets_sealed_with_the_token(mesh: Mesh) -> None:
    target = mesh.agents[1]
    target_id = target.node_id

    dropped_before = sum(metric(target, "meshnode_gossip_dropped_total", "reason").values())
    with closing(Intruder(mesh.mesh_id, mesh.token)) as intruder:

        def frame(example: bytes | tuple[int, None, list[Any]]) -> bytes:
            if isinstance(example, tuple):
                version, _, messages = example
                example = packed([version, mesh.mesh_id, INTRUDER, intruder.addr, messages])
            return intruder.keyring.seal(example)

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(batch=st.lists(membership_packets, min_size=1, max_size=5))
        def fuzz(batch: list[Any]) -> None:
            intruder.send_and_confirm(target, [[frame(example)] for example in batch])

        fuzz()

    # The fuzzing reached the decoder (past the seal) and what it refused was counted.
    assert sum(metric(target, "meshnode_gossip_dropped_total", "reason").values()) > dropped_before
    assert target.view()["self"] == target_id
    statuses = {member["name"]: member["status"] for member in target.view()["members"]}
    assert statuses.get("n0") == "alive", statuses
    assert serves(mesh), mesh.describe()
    no_traceback(mesh)


def test_data_port_survives_fuzzed_frames_from_a_member(mesh: Mesh) -> None:
    target = mesh.agents[1]
    me = next(m for m in target.view()["members"] if m["id"] == target.node_id)
    dropped_before = sum(metric(target, "meshnode_data_dropped_total", "reason").values())
    with MemberLink(me["data"], mesh.token, me["data_key"]) as dealer:
        confirmations = iter(range(1_000_000))

        def confirm() -> None:
            """A real call after the fuzzed frames: its reply means every frame before it was handled."""
            rid = f"confirm-{next(confirmations)}"
            dealer.send(encode_envelope(Call(rid, DEPLOYMENT, {"text": rid}, None, False, "", 10_000)))
            while (frame := dealer.receive(REPLY_TIMEOUT_S)) is not None:
                answer = decode_envelope(frame, max_bytes=1 << 24)
                if answer.request_id == rid:
                    assert isinstance(answer, Reply), answer
                    return
            raise AssertionError(f"no answer to {rid} within {REPLY_TIMEOUT_S} s\n{target.describe()}")

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(batch=st.lists(envelopes, min_size=1, max_size=5))
        def fuzz(batch: list[bytes]) -> None:
            for frame in batch:
                dealer.send(frame)
            confirm()

        fuzz()

    assert sum(metric(target, "meshnode_data_dropped_total", "reason").values()) > dropped_before
    assert serves(mesh), mesh.describe()
    no_traceback(mesh)
