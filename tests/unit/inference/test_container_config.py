"""config.yaml of apps in a custom image: the FedML keys, their checks, and what a declaration reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshnode.inference.app_ref import AppLoadError
from meshnode.inference.external_config import ExternalConfig, load_external_config, needs_container


def folder_with(tmp_path: Path, text: str, name: str = "app") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(text)
    return folder


FEDML = """
enable_custom_image: true
inference_image_name: fedml/fedml-default-inference-backend:latest
bootstrap: |
  echo "Installing dependency..."
job: |
  python3 serve_main.py
"""


def test_fedmls_custom_image_folder_loads(tmp_path: Path) -> None:
    config = load_external_config(folder_with(tmp_path, FEDML))
    assert config.enable_custom_image
    assert config.inference_image_name == "fedml/fedml-default-inference-backend:latest"
    assert config.container_runtime is None
    assert config.bootstrap == 'echo "Installing dependency..."\n'


def test_every_custom_image_field(tmp_path: Path) -> None:
    text = """
enable_custom_image: true
inference_image_name: localhost/model:1
container_runtime: docker
container_cpus: 2
container_memory_gb: 1.5
use_gpu: true
job: exec python3 server.py
"""
    config = load_external_config(folder_with(tmp_path, text))
    assert config == ExternalConfig(
        job="exec python3 server.py",
        enable_custom_image=True,
        inference_image_name="localhost/model:1",
        container_runtime="docker",
        container_cpus=2.0,
        container_memory_gb=1.5,
        use_gpu=True,
    )


def test_an_image_name_without_enable_custom_image_is_ignored_as_before(tmp_path: Path) -> None:
    config = load_external_config(folder_with(tmp_path, "inference_image_name: x y z\njob: j\n"))
    assert not config.enable_custom_image
    assert config.inference_image_name is None


def test_the_bootstrap_counts_toward_the_start_in_an_image(tmp_path: Path) -> None:
    host = ExternalConfig(job="j", bootstrap="b", startup_timeout_s=10, bootstrap_timeout_s=50)
    assert host.ready_within_s == 10
    image = ExternalConfig(
        job="j", bootstrap="b", startup_timeout_s=10, bootstrap_timeout_s=50, enable_custom_image=True
    )
    assert image.ready_within_s == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enable_custom_image: yes please\n", "enable_custom_image must be true or false, not 'yes please'"),
        ("enable_custom_image: true\n", "inference_image_name must be a non-empty image reference"),
        (
            "enable_custom_image: true\ninference_image_name: 'python; rm -rf /'\n",
            "inference_image_name must be an image reference: [registry[:port]/]name[:tag][@digest]",
        ),
        (
            "enable_custom_image: true\ninference_image_name: --privileged\n",
            "inference_image_name must be an image reference",
        ),
        (
            "enable_custom_image: true\ninference_image_name: m\ncontainer_runtime: lxc\n",
            "container_runtime must be one of podman, docker, not 'lxc'",
        ),
        ("container_runtime: docker\n", "container_runtime need(s) enable_custom_image: true"),
        (
            "enable_custom_image: true\ninference_image_name: m\ncontainer_cpus: 0\n",
            "container_cpus must be a number in (0, 1024], not 0",
        ),
        (
            "enable_custom_image: true\ninference_image_name: m\ncontainer_memory_gb: lots\n",
            "container_memory_gb must be a number in (0, 1e+06], not 'lots'",
        ),
        ("use_gpu: 1\n", "use_gpu must be true or false, not 1"),
        (
            "enable_custom_image: true\ninference_image_name: m\nenvironment_variables: {'A B': 1, OK: 2}\n",
            "environment_variables names must be letters, digits and _ (not starting with a digit) "
            "to enter a container: A B",
        ),
        (
            "enable_custom_image: true\ninference_image_name: m\nworkspace: ..\n",
            "workspace '..' must lie inside the folder for a custom image",
        ),
    ],
)
def test_bad_custom_image_fields_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_external_config(folder_with(tmp_path, "job: j\n" + text))
    assert message in str(caught.value)


def test_a_folder_that_cannot_be_mounted(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, FEDML, name="a:b")
    with pytest.raises(AppLoadError, match="holds ':' or ',' cannot be mounted in a container"):
        load_external_config(folder)


def test_needs_container_reads_only_folder_apps(tmp_path: Path) -> None:
    image = folder_with(tmp_path, FEDML, name="image")
    host = folder_with(tmp_path, "job: j\n", name="host")
    assert needs_container(str(image))
    assert needs_container("image", base_dir=tmp_path)
    assert not needs_container(str(host))
    assert not needs_container("meshnode.apps.echo:Echo")
    assert not needs_container("apps/echo.py:Echo")  # a file reference: nothing is read
    (host / "config.yaml").write_text("job: [\n")
    with pytest.raises(AppLoadError, match="not valid YAML"):
        needs_container(str(host))
