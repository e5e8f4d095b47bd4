"""Deployment specs: defaults, round trips and a clear field-named error for every bad input."""

from __future__ import annotations

import pytest

from meshnode.mesh.deployment import DeploymentSpec, SpecError, check_name


def test_defaults_are_one_replica_with_documented_autoscaling() -> None:
    spec = DeploymentSpec.from_wire({"app": "apps/echo.py:Echo"})
    assert (spec.min_replicas, spec.max_replicas, spec.backups, spec.spread) == (1, 1, 0, None)
    assert spec.autoscaling.target_concurrency == 2.0
    assert spec.autoscaling.scale_down_delay_s > spec.autoscaling.scale_up_delay_s
    assert not spec.scales_to_zero


def test_max_defaults_to_min_and_a_full_spec_round_trips() -> None:
    assert DeploymentSpec.from_wire({"app": "a.py:A", "min_replicas": 3}).max_replicas == 3
    body = {
        "app": "a.py:A",
        "min_replicas": 0,
        "max_replicas": 5,
        "resources": {"device_kinds": ["cuda", "cpu", "cuda"], "min_memory_gb": 2, "accelerator": True},
        "autoscaling": {"target_concurrency": 1, "window_s": 1, "scale_up_delay_s": 0, "idle_timeout_s": 5},
        "backups": 2,
        "spread": "zone",
    }
    spec = DeploymentSpec.from_wire(body)
    assert spec.resources.device_kinds == ("cpu", "cuda")
    assert spec.scales_to_zero
    assert DeploymentSpec.from_wire(spec.to_wire()) == spec


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "app"),
        ({"app": "   "}, "app"),
        ({"app": 3}, "app"),
        ({"app": "a" * 600}, "app"),
        ({"app": "a.py:A", "min_replicas": -1}, "min_replicas"),
        ({"app": "a.py:A", "min_replicas": 1.5}, "min_replicas"),
        ({"app": "a.py:A", "min_replicas": True}, "min_replicas"),
        ({"app": "a.py:A", "min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"app": "a.py:A", "max_replicas": 10_000}, "max_replicas"),
        ({"app": "a.py:A", "backups": -1}, "backups"),
        ({"app": "a.py:A", "spread": "rack"}, "spread"),
        ({"app": "a.py:A", "replicas": 2}, "replicas"),
        ({"app": "a.py:A", "resources": []}, "resources"),
        ({"app": "a.py:A", "resources": {"device_kinds": ["tpu"]}}, "resources.device_kinds"),
        ({"app": "a.py:A", "resources": {"device_kinds": "cuda"}}, "resources.device_kinds"),
        ({"app": "a.py:A", "resources": {"min_memory_gb": -1}}, "resources.min_memory_gb"),
        ({"app": "a.py:A", "resources": {"accelerator": "yes"}}, "resources.accelerator"),
        ({"app": "a.py:A", "resources": {"gpus": 1}}, "resources.gpus"),
        ({"app": "a.py:A", "autoscaling": {"target_concurrency": 0}}, "autoscaling.target_concurrency"),
        ({"app": "a.py:A", "autoscaling": {"window_s": float("nan")}}, "autoscaling.window_s"),
        ({"app": "a.py:A", "autoscaling": {"scale_down_delay_s": -1}}, "autoscaling.scale_down_delay_s"),
        ({"app": "a.py:A", "autoscaling": {"cooldown": 1}}, "autoscaling.cooldown"),
        ("app", "spec"),
    ],
)
def test_every_bad_field_is_named_with_the_reason(body: object, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        DeploymentSpec.from_wire(body)
    assert caught.value.field == field
    assert caught.value.reason


@pytest.mark.parametrize("name", ["", "-lead", "a b", "x" * 65, "ü", None, 3])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(SpecError) as caught:
        check_name(name)
    assert caught.value.field == "name"


def test_good_names_pass() -> None:
    assert check_name("tiny-sd_v1.5") == "tiny-sd_v1.5"


def test_a_spec_names_a_model_of_the_stores_and_round_trips() -> None:
    spec = DeploymentSpec.from_wire({"app": "apps/embeddings.py:Embeddings", "model": "minilm"})
    assert spec.model == "minilm"
    assert DeploymentSpec.from_wire(spec.to_wire()) == spec


def test_a_spec_without_a_model_sends_no_model_key() -> None:
    assert "model" not in DeploymentSpec(app="apps/echo.py:Echo").to_wire()


@pytest.mark.parametrize("bad", ["", "../etc", "a b", 7, ["minilm"], "x" * 65])
def test_a_bad_model_name_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(SpecError) as caught:
        DeploymentSpec.from_wire({"app": "apps/echo.py:Echo", "model": bad})
    assert caught.value.field == "model"


def test_a_spec_read_again_is_the_same_object_and_validation_still_tells_values_apart() -> None:
    body = DeploymentSpec("apps/echo.py:Echo", min_replicas=1, max_replicas=2).to_wire()
    first = DeploymentSpec.from_wire(body)
    assert DeploymentSpec.from_wire(dict(body)) is first  # every push-pull carries every record
    with pytest.raises(SpecError):
        DeploymentSpec.from_wire({**body, "min_replicas": True})  # equal to 1 in Python, not a count
    assert DeploymentSpec.from_wire({**body, "max_replicas": 3}).max_replicas == 3


def test_the_shared_wire_form_is_built_once_and_equals_a_fresh_one() -> None:
    body = {"app": "a.py:A", "resources": {"device_kinds": ["cpu"]}, "autoscaling": {"window_s": 3}}
    spec = DeploymentSpec.from_wire({**body, "model": "x"})
    assert spec.wire is spec.wire  # every push-pull carries every record: built once per spec
    assert spec.wire == spec.to_wire()
    mine = spec.to_wire()
    mine["resources"]["device_kinds"].append("cuda")  # a caller's own copy: the shared one is untouched
    assert spec.wire["resources"]["device_kinds"] == ["cpu"]
    assert DeploymentSpec.from_wire(spec.wire) == spec
