"""Apps in a custom image are placed only on nodes that gossip a container runtime, and say so otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshnode.errors import Unprocessable
from meshnode.mesh.deployment import DeploymentSpec, Resources, SpecError
from meshnode.mesh.placement import (
    NO_CONTAINER_RUNTIME,
    HostNode,
    Requirements,
    host_of,
    ineligible_reason,
    place,
    plan,
    rank,
)
from meshnode.mesh.types import NodeId
from meshnode.serving.plans import needs_of, with_app_needs

CONTAINER = Requirements(container=True)


def device(*runtimes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {"cpu": "x", "cores": 8, "memory": 16 * 10**9, "accelerators": [], "kind": "cpu"}
    if runtimes:
        wire["container_runtimes"] = list(runtimes)
    return wire


def test_host_of_reads_the_gossiped_runtimes() -> None:
    assert host_of(NodeId("a"), device("podman")).container
    assert host_of(NodeId("a"), device("docker", "podman")).container
    assert not host_of(NodeId("a"), device()).container
    assert not host_of(NodeId("a"), device("lxc")).container  # not one meshnode drives
    assert not host_of(NodeId("a"), {**device(), "container_runtimes": "podman"}).container  # malformed


def test_only_nodes_with_a_runtime_are_eligible() -> None:
    assert ineligible_reason(HostNode(NodeId("a")), CONTAINER) == NO_CONTAINER_RUNTIME
    assert ineligible_reason(HostNode(NodeId("a"), container=True), CONTAINER) is None
    assert ineligible_reason(HostNode(NodeId("a")), Requirements()) is None  # other apps: any node


def test_the_reason_when_no_node_has_a_runtime() -> None:
    nodes = [HostNode(NodeId(name)) for name in "abc"]
    placed = place("model", 1, nodes, CONTAINER)
    assert placed.hosts == ()
    assert placed.unschedulable == (
        "0 of 3 live nodes can host it, 1 wanted (3 node(s): no container runtime (docker or podman))"
    )


def test_placement_skips_nodes_without_a_runtime_and_ranks_the_rest_as_ever() -> None:
    nodes = [HostNode(NodeId(f"n{index}"), container=index % 2 == 0) for index in range(8)]
    with_runtime = [node for node in nodes if node.container]
    placed = plan("model", 2, nodes, CONTAINER, backups=1)
    assert placed.unschedulable is None
    assert (*placed.hosts, *placed.backups) == tuple(rank("model", with_runtime)[:3])
    short = plan("model", 5, nodes, CONTAINER)
    assert set(short.hosts) == {node.node for node in with_runtime}
    assert short.unschedulable is not None and f"4 node(s): {NO_CONTAINER_RUNTIME}" in short.unschedulable


def test_the_spec_carries_the_need() -> None:
    spec = DeploymentSpec.from_wire({"app": "apps/model", "resources": {"container": True}})
    assert spec.resources.container
    assert spec.to_wire()["resources"]["container"] is True
    assert DeploymentSpec.from_wire(spec.to_wire()) == spec
    assert needs_of(spec) == Requirements(container=True)
    plain = DeploymentSpec.from_wire({"app": "apps/model"})
    # Left out when false: older nodes, which reject unknown fields, read such specs as before.
    assert "container" not in plain.to_wire()["resources"]
    with pytest.raises(SpecError, match=r"resources\.container: must be true or false"):
        DeploymentSpec.from_wire({"app": "a:B", "resources": {"container": "yes"}})


def test_a_declaration_writes_the_apps_need_into_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image, host = tmp_path / "image", tmp_path / "host"
    for folder in (image, host):
        folder.mkdir()
    (image / "config.yaml").write_text("enable_custom_image: true\ninference_image_name: m:1\njob: j\n")
    (host / "config.yaml").write_text("job: j\n")
    declared = with_app_needs(DeploymentSpec("image", max_replicas=3))
    assert declared == DeploymentSpec("image", max_replicas=3, resources=Resources(container=True))
    assert needs_of(declared).container
    assert with_app_needs(DeploymentSpec("host")) == DeploymentSpec("host")
    assert with_app_needs(DeploymentSpec("meshnode.apps.echo:Echo")) == DeploymentSpec(
        "meshnode.apps.echo:Echo"
    )
    (image / "config.yaml").write_text("enable_custom_image: true\njob: j\n")
    with pytest.raises(Unprocessable, match=r"app: .*inference_image_name must be"):
        with_app_needs(DeploymentSpec("image"))
