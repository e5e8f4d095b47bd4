"""API keys and the decision for one request (mesh/access.py), and keys as gossip (shared_tables.py)."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.access import (
    MAX_KEYS,
    ApiKey,
    KeyTable,
    Scope,
    Verdict,
    decide,
    is_loopback,
    make_key,
    need_for,
    split_key,
)
from meshnode.mesh.admission import Admission
from meshnode.mesh.effects import KeyChanged
from meshnode.mesh.shared_tables import SharedTables
from meshnode.mesh.types import NodeId

NOW_MS = 1_800_000_000_000


def new_key(scope: Scope = Scope.INVOKE, name: str = "ci", seed: int = 0) -> tuple[str, ApiKey]:
    rng = random.Random(seed)
    return make_key(rng.randbytes(6), rng.randbytes(32), name, scope, NOW_MS)


def test_a_key_is_shown_once_as_text_and_kept_as_a_digest() -> None:
    text, key = new_key()
    assert text.startswith("mn_") and len(text) == 59
    key_id, secret = split_key(text) or ("", "")
    assert key_id == key.id and secret not in repr(key) and secret.encode() not in key.digest


@pytest.mark.parametrize(
    "text", ["", "mn_", "mn_0123456789ab_short", "xx_0123456789ab_" + "a" * 43, "mn_0123456789AB_" + "a" * 43]
)
def test_malformed_key_text_is_no_key(text: str) -> None:
    assert split_key(text) is None


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/health", None),
        ("GET", "/ready", None),
        ("GET", "/.well-known/meshnode/jwks.json", None),
        ("POST", "/health", Scope.INVOKE),
        ("POST", "/v1/predict/echo", Scope.INVOKE),
        ("GET", "/v1/mesh", Scope.INVOKE),
        ("GET", "/metrics", Scope.INVOKE),
        ("GET", "/v1/deployments", Scope.INVOKE),
        ("GET", "/v1/deployments/echo", Scope.INVOKE),
        ("PUT", "/v1/deployments/echo", Scope.ADMIN),
        ("DELETE", "/v1/deployments/echo", Scope.ADMIN),
        ("GET", "/v1/keys", Scope.ADMIN),
        ("POST", "/v1/keys", Scope.ADMIN),
        ("DELETE", "/v1/keys/0123456789ab", Scope.ADMIN),
        ("GET", "/v1/a-route-added-next-year", Scope.INVOKE),
        ("GET", "/v1/models", Scope.INVOKE),
        # The model stores: reading is invoke, changing any node's store is admin.
        ("GET", "/v1/models/store", Scope.INVOKE),
        ("GET", "/v1/models/store/tiny-sd", Scope.INVOKE),
        ("DELETE", "/v1/models/store/tiny-sd", Scope.ADMIN),
        ("POST", "/v1/models/store", Scope.ADMIN),
        ("POST", "/v1/models/store/tiny-sd/pull", Scope.ADMIN),
        ("POST", "/v1/chat/completions", Scope.INVOKE),
        ("POST", "/v1/images/generations", Scope.INVOKE),
        # An image URL's token is its own permission (a capability URL); only reading it is open.
        ("GET", "/v1/images/files/0123456789abcdefghijkl.png", None),
        ("DELETE", "/v1/images/files/0123456789abcdefghijkl.png", Scope.INVOKE),
        # Jobs and the WebSocket route: an outsider without an invoke key is refused, as for predict.
        ("POST", "/v1/jobs/echo", Scope.INVOKE),
        ("GET", "/v1/jobs", Scope.INVOKE),
        ("GET", "/v1/jobs/0123456789abcdefghijkl", Scope.INVOKE),
        ("GET", "/v1/jobs/0123456789abcdefghijkl/result", Scope.INVOKE),
        ("GET", "/v1/jobs/0123456789abcdefghijkl/events", Scope.INVOKE),
        ("DELETE", "/v1/jobs/0123456789abcdefghijkl", Scope.INVOKE),
        ("GET", "/v1/ws/predict/echo", Scope.INVOKE),
        # The dashboard's page and assets hold no data; the feed they draw from needs a key.
        ("GET", "/", None),
        ("GET", "/dashboard/dashboard.js", None),
        ("GET", "/dashboard/dashboard.css", None),
        ("GET", "/dashboard/other.js", Scope.INVOKE),
        ("POST", "/", Scope.INVOKE),
        ("GET", "/v1/events", Scope.INVOKE),
    ],
)
def test_every_path_needs_a_scope_unless_it_is_liveness(method: str, path: str, needed: Scope | None) -> None:
    assert need_for(method, path) is needed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("::ffff:10.0.0.5", False),
        ("fd00::2", False),
        ("localhost", False),  # a name, not an address: never trusted
        ("", False),
        (None, False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def verdict(
    needed: Scope | None, authorization: str | None, *keys: ApiKey, loopback: bool = False
) -> Verdict:
    table = {key.id: key for key in keys}
    result, reason = decide(
        needed, loopback=loopback, insecure=False, authorization=authorization, lookup=table.get
    )
    assert (reason == "") is (result is Verdict.ALLOW)
    return result


def test_the_decision_for_every_kind_of_caller() -> None:
    invoke_text, invoke = new_key(Scope.INVOKE, seed=1)
    admin_text, admin = new_key(Scope.ADMIN, seed=2)
    other_text, _ = new_key(Scope.ADMIN, seed=3)  # made, but never reached this node
    _, same_id = new_key(Scope.ADMIN, seed=1)  # the id of the invoke key with another secret
    keys = (invoke, admin)
    assert verdict(Scope.INVOKE, None, *keys) is Verdict.UNAUTHENTICATED
    assert verdict(Scope.INVOKE, None, *keys, loopback=True) is Verdict.ALLOW
    assert verdict(None, None, *keys) is Verdict.ALLOW
    assert verdict(Scope.INVOKE, f"Bearer {invoke_text}", *keys) is Verdict.ALLOW
    assert verdict(Scope.INVOKE, f"bearer  {invoke_text} ", *keys) is Verdict.ALLOW
    assert verdict(Scope.ADMIN, f"Bearer {invoke_text}", *keys) is Verdict.FORBIDDEN
    assert verdict(Scope.ADMIN, f"Bearer {admin_text}", *keys) is Verdict.ALLOW
    assert verdict(Scope.INVOKE, f"Bearer {other_text}", *keys) is Verdict.UNAUTHENTICATED
    assert verdict(Scope.INVOKE, f"Basic {invoke_text}", *keys) is Verdict.UNAUTHENTICATED
    assert verdict(Scope.INVOKE, "Bearer " + "x" * 300, *keys) is Verdict.UNAUTHENTICATED
    wrong_secret = f"mn_{invoke.id}_{admin_text.rsplit('_', 1)[-1]}"
    assert verdict(Scope.INVOKE, f"Bearer {wrong_secret}", *keys) is Verdict.UNAUTHENTICATED
    revoked = dataclasses.replace(invoke, revoked=True)
    assert verdict(Scope.INVOKE, f"Bearer {invoke_text}", revoked, admin) is Verdict.UNAUTHENTICATED
    assert same_id.id == invoke.id


@given(st.text(max_size=300))
def test_no_header_text_is_taken_for_a_key_that_was_not_made(header: str) -> None:
    _, key = new_key()
    assert verdict(Scope.INVOKE, header, key) is not Verdict.ALLOW


def test_a_key_round_trips_the_wire_form_and_bad_rows_are_refused() -> None:
    _, key = new_key(Scope.ADMIN, name="deploy bot")
    assert ApiKey.from_wire(key.to_wire()) == key
    with pytest.raises(ValueError):
        ApiKey.from_wire([*key.to_wire()[:5]])


def versions_of(key: ApiKey) -> list[ApiKey]:
    return [key, dataclasses.replace(key, revoked=True)]


@given(st.permutations(range(4)))
def test_a_revocation_wins_in_any_order_of_arrival(order: list[int]) -> None:
    _, one = new_key(seed=1)
    _, two = new_key(seed=2)
    versions = [*versions_of(one), *versions_of(two)]
    table = KeyTable()
    for index in order:
        table.merge(versions[index])
    assert [key.revoked for key in table.all()] == [True, True]
    assert not table.merge(one)  # a revoked key never comes back


def test_key_tables_that_saw_the_same_versions_agree_whatever_the_order() -> None:
    _, key = new_key(seed=5)
    versions = [key, dataclasses.replace(key, name="renamed"), dataclasses.replace(key, revoked=True)]
    finals = set()
    for order in itertools.permutations(versions):
        table = KeyTable()
        for version in order:
            table.merge(version)
        finals.add(table.get(key.id))
    assert len(finals) == 1


def test_shared_tables_gossip_a_new_key_once_and_stop_at_the_maximum() -> None:
    pushed: list[object] = []
    tables = SharedTables(NodeId("n1"), Admission(NodeId("n1"), 300.0), pushed.append)
    _, key = new_key()
    assert tables.merge_key(key) == [KeyChanged(key)]
    assert tables.merge_key(key) == []
    assert pushed == [key]
    for index in range(MAX_KEYS - 1):
        tables.keys.keys[f"{index:012x}"] = key
    _, late = new_key(seed=99)
    assert tables.merge_key(late) == []
    assert tables.refused["keys_full"] == 1
    assert tables.merge_key(dataclasses.replace(key, revoked=True)) != []  # a revocation still lands
