"""The CLI's pure renderings: the deployments table's notes, the peers' changes, the demo's settle check."""

from __future__ import annotations

from typing import Any

from meshnode.cli.demo.placement import unsettled
from meshnode.cli.deploy import format_deployments_table
from meshnode.cli.peers import peer_changes

PINNED_NOTE = "pinned only (join --deploy): desired counts the pinned replicas; max 0 lets placement add none"


def deployment(name: str, *replicas: tuple[str, str, bool], **fields: Any) -> dict[str, Any]:
    listed = [{"node": node, "status": status, "pinned": pinned} for node, status, pinned in replicas]
    ready = sum(1 for _, status, _ in replicas if status == "ready")
    pinned = sum(1 for *_, is_pinned in replicas if is_pinned)
    return {
        "name": name,
        "app": "meshnode.apps.echo:Echo",
        "min_replicas": 0,
        "max_replicas": 0,
        "pinned": pinned,
        "desired": max(pinned, 1),
        "ready": ready,
        "replicas": listed,
        "unschedulable": None,
        "missing": None,
        "note": PINNED_NOTE if pinned else None,
        **fields,
    }


def test_the_deployments_table_shows_pinned_and_says_a_shared_note_once() -> None:
    body = {
        "deployments": [
            deployment("echo", ("a", "ready", True), ("b", "ready", True)),
            deployment("t2i", ("b", "ready", True)),
        ]
    }
    lines = format_deployments_table(body).splitlines()
    assert lines[0].split() == ["NAME", "APP", "MIN", "MAX", "PINNED", "DESIRED", "READY", "REPLICAS"]
    assert lines[1].split()[:7] == ["echo", "meshnode.apps.echo:Echo", "0", "0", "2", "2", "2"]
    assert lines[2].split()[:7] == ["t2i", "meshnode.apps.echo:Echo", "0", "0", "1", "1", "1"]
    assert lines[3:] == [f"echo, t2i: {PINNED_NOTE}"]


def test_the_demo_is_settled_only_when_every_replica_is_ready_and_exactly_as_many_as_desired() -> None:
    settled = {"deployments": [deployment("echo", ("a", "ready", True))]}
    assert unsettled(settled) == []
    restarting = {"deployments": [deployment("t2i", ("a", "starting", False), ("b", "starting", True))]}
    assert unsettled(restarting) == ["t2i on a starting, b starting"]
    short = {"deployments": [deployment("placed", ("a", "ready", False), desired=2)]}
    assert unsettled(short) == ["placed: 1 ready of 2 desired"]
    # After a restart the stand-in replica is still ready until it drains: not converged yet.
    three = [(node, "ready", False) for node in "abc"]
    extra = deployment("placed", *three, desired=2)
    assert unsettled({"deployments": [extra]}) == ["placed: 3 ready of 2 desired"]


def member(node_id: str, name: str, status: str, models: list[str], cpu: float = 5.0) -> dict[str, Any]:
    return {"id": node_id, "name": name, "status": status, "models": models, "load": {"cpu": cpu}}


def test_peer_changes_name_joins_status_models_and_departures_but_not_load() -> None:
    before = {"members": [member("1", "a", "alive", ["echo"]), member("2", "b", "alive", [])]}
    after = {
        "members": [
            member("1", "a", "suspect", ["echo", "t2i"], cpu=95.0),
            member("3", "c", "alive", []),
        ]
    }
    assert peer_changes(before, after) == [
        "a: alive -> suspect",
        "a: models echo -> echo,t2i",
        "c joined (alive)",
        "b no longer listed",
    ]
    moved_load = {"members": [member("1", "a", "alive", ["echo"], cpu=80.0), member("2", "b", "alive", [])]}
    assert peer_changes(before, moved_load) == []
