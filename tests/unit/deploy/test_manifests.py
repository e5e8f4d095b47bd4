"""deploy/kubernetes: every manifest against Kubernetes' own schemas, offline, and against meshnode.

``kubernetes-validate`` ships the OpenAPI-derived JSON schemas of each Kubernetes release; the
manifests are checked in strict mode (an unknown field fails) for the oldest release the docs
promise and the newest the pinned package ships. Each StatefulSet's environment goes through the
real ``meshnode join`` (``join_config``), with the values Kubernetes fills in (the pod's name and
IP) set as it would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from meshnode.config import DEFAULT_HTTP_PORT, DEFAULT_MESH_PORT, AgentConfig
from meshnode.mesh.deployment import Autoscaling
from tests.unit.deploy.dockerfile_facts import container_env, image_facts
from tests.unit.deploy.join_config import join_config

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
# docs/deploy.md promises 1.29 and later; 1.37 is the newest the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
DATA_PORT = 8472  # as in every recipe (tests/unit/deploy/test_compose.py)
POD_NAME = "meshnode-0"
POD_IP = "10.244.1.7"
NOT_RESOURCES = ("kustomization.yaml", "prometheus-adapter-values.yaml", "prometheus-scrape.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def _manifests() -> list[tuple[str, int, dict[str, Any]]]:
    """(path relative to deploy/kubernetes, index in the file, document) of every resource."""
    found = []
    for path in sorted(KUBERNETES_DIR.rglob("*.yaml")):
        if path.name in NOT_RESOURCES:
            continue
        for index, document in enumerate(_documents(path)):
            found.append((str(path.relative_to(KUBERNETES_DIR)), index, document))
    return found


def _one(relative: str, kind: str, name: str | None = None) -> dict[str, Any]:
    (document,) = [
        document
        for document in _documents(KUBERNETES_DIR / relative)
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]
    return document


def _cpu() -> dict[str, Any]:
    return _one("base/statefulset.yaml", "StatefulSet")


def _gpu() -> dict[str, Any]:
    return _one("gpu/statefulset-gpu.yaml", "StatefulSet")


def _container(statefulset: dict[str, Any]) -> dict[str, Any]:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables as Kubernetes sets them in ``POD_NAME`` (field refs, ``$(VAR)``)."""
    fields = {"metadata.name": POD_NAME, "status.podIP": POD_IP}
    environment: dict[str, str] = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            value = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            # Kubernetes expands $(NAME) of a variable defined above it; others stay as written.
            value = re.sub(
                r"\$\((\w+)\)", lambda match: environment.get(match[1], match[0]), variable["value"]
            )
        environment[variable["name"]] = value
    return environment


def _config(monkeypatch: pytest.MonkeyPatch, statefulset: dict[str, Any]) -> AgentConfig:
    container = _container(statefulset)
    assert container["args"] == ["join"]  # the image's ENTRYPOINT is meshnode
    return join_config(monkeypatch, container["args"], container_env(_environment(container)))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("relative", "index", "document"),
    _manifests(),
    ids=[f"{relative}#{index}" for relative, index, _ in _manifests()],
)
def test_every_manifest_is_valid_kubernetes(
    relative: str, index: int, document: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    statefulset = _cpu()
    _container(statefulset)["livenessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomizations_list_every_manifest_of_their_folder() -> None:
    base = yaml.safe_load((KUBERNETES_DIR / "base" / "kustomization.yaml").read_text())
    listed = set(base["resources"])
    assert listed == {path.name for path in (KUBERNETES_DIR / "base").glob("*.yaml")} - {"kustomization.yaml"}
    gpu = yaml.safe_load((KUBERNETES_DIR / "gpu" / "kustomization.yaml").read_text())
    assert gpu["resources"] == ["../base", "statefulset-gpu.yaml"]


@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_kubectl_renders_each_kustomization_into_valid_manifests(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the kustomizations are checked by listing above)")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = [document for document in yaml.safe_load_all(result.stdout) if document]
    kinds = sorted(document["kind"] for document in rendered)
    statefulsets = 2 if overlay == "gpu" else 1
    assert kinds == sorted(["PodDisruptionBudget", "Service", "Service", *["StatefulSet"] * statefulsets])
    for document in rendered:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("statefulset", [_cpu(), _gpu()], ids=["cpu", "gpu"])
def test_each_statefulset_runs_what_meshnode_join_accepts(
    monkeypatch: pytest.MonkeyPatch, statefulset: dict[str, Any]
) -> None:
    config = _config(monkeypatch, statefulset)
    container = _container(statefulset)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert config.name == POD_NAME
    assert config.interfaces == (POD_IP,)  # peers dial the pod IP
    assert (config.http_port, config.mesh_port, config.data_port) == (
        DEFAULT_HTTP_PORT,
        DEFAULT_MESH_PORT,
        DATA_PORT,
    )
    assert {config.http_host, config.mesh_host, config.data_host} == {"0.0.0.0"}
    assert not config.mdns
    assert str(config.data_dir) == mounts["data"]
    assert config.token is None and config.token_file is not None
    assert str(config.token_file.parent) == mounts["token"]
    assert not config.insecure_http


def test_pods_run_as_the_images_user_and_mount_its_volume() -> None:
    facts = image_facts()
    for statefulset in (_cpu(), _gpu()):
        context = statefulset["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (facts.uid, facts.gid)
        assert context["fsGroup"] == facts.gid and context["runAsNonRoot"] is True
        mounts = {mount["name"]: mount["mountPath"] for mount in _container(statefulset)["volumeMounts"]}
        assert mounts["data"] == facts.volume


def test_the_seeds_are_stable_pod_names_under_the_headless_service(monkeypatch: pytest.MonkeyPatch) -> None:
    headless = _one("base/services.yaml", "Service", "meshnode-headless")
    cpu = _cpu()
    for statefulset in (cpu, _gpu()):
        config = _config(monkeypatch, statefulset)
        assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
        # Two seeds among the pods that always exist (the CPU StatefulSet's first ones).
        assert config.seeds == tuple(
            f"{cpu['metadata']['name']}-{ordinal}.{headless['metadata']['name']}:{DEFAULT_MESH_PORT}"
            for ordinal in range(2)
        )
        assert cpu["spec"]["replicas"] >= len(config.seeds)


def test_pods_start_together_since_readiness_waits_for_a_seed() -> None:
    for statefulset in (_cpu(), _gpu()):
        assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
        assert statefulset["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
        assert statefulset["spec"]["minReadySeconds"] > 0
    headless = _one("base/services.yaml", "Service", "meshnode-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def test_ports_are_the_agent_defaults_and_the_services_reach_them() -> None:
    expected = {"http": DEFAULT_HTTP_PORT, "mesh": DEFAULT_MESH_PORT, "data": DATA_PORT}
    for statefulset in (_cpu(), _gpu()):
        ports = {port["name"]: port["containerPort"] for port in _container(statefulset)["ports"]}
        assert ports == expected
    headless = _one("base/services.yaml", "Service", "meshnode-headless")
    assert {port["name"]: port["port"] for port in headless["spec"]["ports"]} == expected
    assert all(port["targetPort"] == port["name"] for port in headless["spec"]["ports"])
    clients = _one("base/services.yaml", "Service", "meshnode")
    assert clients["spec"]["ports"] == [{"name": "http", "port": DEFAULT_HTTP_PORT, "targetPort": "http"}]


def test_liveness_asks_health_and_readiness_asks_ready() -> None:
    for statefulset in (_cpu(), _gpu()):
        container = _container(statefulset)
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}


def test_every_service_and_the_budget_cover_both_statefulsets_which_do_not_overlap() -> None:
    cpu, gpu = _cpu(), _gpu()
    labels = [statefulset["spec"]["template"]["metadata"]["labels"] for statefulset in (cpu, gpu)]
    selectors = [statefulset["spec"]["selector"]["matchLabels"] for statefulset in (cpu, gpu)]
    for own, (selector, pod_labels) in enumerate(zip(selectors, labels, strict=True)):
        assert selector.items() <= pod_labels.items()
        assert not selector.items() <= labels[1 - own].items(), "a StatefulSet selects the other's pods"
    budget = _one("base/poddisruptionbudget.yaml", "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    covers = [budget["spec"]["selector"]["matchLabels"]]
    covers += [
        _one("base/services.yaml", "Service", name)["spec"]["selector"]
        for name in ("meshnode", "meshnode-headless")
    ]
    for selector in covers:
        assert all(selector.items() <= pod_labels.items() for pod_labels in labels)


def test_each_pod_keeps_its_data_volume_and_reads_the_token_secret() -> None:
    secret = _one("secret.example.yaml", "Secret")
    for statefulset in (_cpu(), _gpu()):
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        volumes = {volume["name"]: volume for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
        assert volumes["token"]["secret"]["secretName"] == secret["metadata"]["name"]
        token_file = _environment(_container(statefulset))["MESHNODE_TOKEN_FILE"]
        assert Path(token_file).name in secret["stringData"]


def test_a_stopping_pod_has_time_to_drain_and_leave() -> None:
    agent = AgentConfig(name="x")
    for statefulset in (_cpu(), _gpu()):
        spec = statefulset["spec"]["template"]["spec"]
        pre_stop = _container(statefulset)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        needed = float(pre_stop[1]) + agent.leave_timeout_s + agent.replica_drain_timeout_s
        assert spec["terminationGracePeriodSeconds"] > needed


def test_the_gpu_statefulset_differs_from_the_cpu_one_only_where_it_must() -> None:
    differences = sorted(_differences(_cpu(), _gpu()))
    template = "spec/template/spec"
    container = f"{template}/containers/0"
    assert differences == sorted(
        [
            "metadata/labels/app.kubernetes.io/component",
            "metadata/name",
            "spec/replicas",
            "spec/selector/matchLabels/app.kubernetes.io/component",
            "spec/template/metadata/labels/app.kubernetes.io/component",
            f"{template}/nodeSelector",
            f"{template}/tolerations",
            f"{container}/image",
            f"{container}/resources/limits/memory",
            f"{container}/resources/limits/nvidia.com/gpu",
            f"{container}/resources/requests/cpu",
            f"{container}/resources/requests/memory",
            f"{template}/volumes/2/emptyDir/sizeLimit",
            "spec/volumeClaimTemplates/0/spec/resources/requests/storage",
        ]
    )
    gpu = _gpu()
    assert _container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert _container(gpu)["image"] == "meshnode:cuda" and _container(_cpu())["image"] == "meshnode:cpu"


def test_the_autoscaler_example_scales_the_statefulset_on_a_metric_every_node_exports() -> None:
    hpa = _one("autoscaling/hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "meshnode",
    }
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "meshnode_replica_queue_depth"
    assert f'"{name}"' in (ROOT / "node" / "http" / "metrics.py").read_text()  # a family the nodes export
    assert f"`{name}`" in (ROOT / "docs" / "observability.md").read_text()
    # Pods go only after the mesh had time to let its replicas go (scale_down_delay_s).
    scale_down = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    assert scale_down > Autoscaling().scale_down_delay_s
    assert hpa["spec"]["minReplicas"] >= _cpu()["spec"]["replicas"]
    adapter = yaml.safe_load((KUBERNETES_DIR / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(f"{name}{{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_the_scrape_job_labels_series_with_what_the_adapter_maps_to_pods() -> None:
    # Debian's Prometheus is built without Kubernetes discovery, so promtool cannot check this job.
    (job,) = yaml.safe_load((KUBERNETES_DIR / "autoscaling" / "prometheus-scrape.yaml").read_text())
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = {rule["regex"] for rule in job["relabel_configs"] if rule.get("action") == "keep"}
    assert keep == {"meshnode", "http"}  # the pods' label and the container port's name
    assert "credentials_file" in job["authorization"]  # /metrics needs an invoke key
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert {"namespace", "pod"} <= targets


def _differences(left: Any, right: Any, path: str = "") -> set[str]:
    """Paths (``a/b/0``) where two parsed YAML documents differ."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: set[str] = set()
        for key in left.keys() | right.keys():
            here = f"{path}/{key}".lstrip("/")
            if key not in left or key not in right:
                found.add(here)
            else:
                found |= _differences(left[key], right[key], here)
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return set().union(
            *(
                _differences(a, b, f"{path}/{index}")
                for index, (a, b) in enumerate(zip(left, right, strict=True))
            )
        )
    return set() if left == right else {path}
