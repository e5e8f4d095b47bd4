"""config.yaml of external-server apps: defaults, FedML keys, and a clear error for every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshnode.inference.app_ref import AppLoadError
from meshnode.inference.external_config import ExternalConfig, load_external_config

REPO = Path(__file__).resolve().parents[3]


def folder_with(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "app"
    folder.mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(text)
    return folder


def test_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    config = load_external_config(folder_with(tmp_path, "job: python3 server.py\n"))
    assert config == ExternalConfig(job="python3 server.py")
    assert config.readiness_path is None  # probes /ready, then /health


def test_the_shipped_example_is_valid() -> None:
    config = load_external_config(REPO / "apps" / "external_server")
    assert config.bootstrap is not None
    assert config.readiness_path == "/ready"
    assert config.port == 0


def test_every_field(tmp_path: Path) -> None:
    text = """
        bootstrap: echo hi
        job: ./serve.sh
        workspace: .
        port: 8123
        readiness_path: /healthz
        predict_path: /v1/infer
        request_timeout_s: 5
        startup_timeout_s: 2.5
        bootstrap_timeout_s: 30
        max_concurrency: 2
        environment_variables: {MODEL: tiny, THREADS: 2}
    """
    config = load_external_config(folder_with(tmp_path, text.replace("\n        ", "\n")))
    assert config == ExternalConfig(
        job="./serve.sh",
        bootstrap="echo hi",
        port=8123,
        readiness_path="/healthz",
        predict_path="/v1/infer",
        request_timeout_s=5.0,
        startup_timeout_s=2.5,
        bootstrap_timeout_s=30.0,
        max_concurrency=2,
        environment_variables={"MODEL": "tiny", "THREADS": "2"},
    )


def test_fedml_keys_are_accepted_and_the_probe_path_is_read(tmp_path: Path) -> None:
    text = (
        "workspace: ./\n"
        "inference_image_name: some/image\n"
        "enable_serverless_container: true\n"
        "deploy_timeout_sec: 900\n"
        "readiness_probe:\n  httpGet:\n    path: /health\n"
        "job: python3 main.py\n"
    )
    config = load_external_config(folder_with(tmp_path, text))
    assert config.readiness_path == "/health"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("bootstrap: echo\n", "job must be a non-empty shell command"),
        ("job: ''\n", "job must be a non-empty shell command"),
        ("job: [a, b]\n", "job must be a non-empty shell command"),
        ("job: x\nbootstrap: 3\n", "bootstrap must be a non-empty shell command"),
        ("job: x\nport: 70000\n", r"port must be an integer in 0\.\.65535"),
        ("job: x\nport: '80'\n", "port must be an integer"),
        ("job: x\nport: true\n", "port must be an integer"),
        ("job: x\nreadiness_path: ready\n", "readiness_path must be a URL path starting with '/'"),
        ("job: x\npredict_path: /a b\n", "predict_path must be a URL path"),
        ("job: x\nrequest_timeout_s: 0\n", "request_timeout_s must be a number of seconds"),
        ("job: x\nstartup_timeout_s: soon\n", "startup_timeout_s must be a number of seconds"),
        ("job: x\nbootstrap_timeout_s: -1\n", "bootstrap_timeout_s must be a number of seconds"),
        ("job: x\nmax_concurrency: 0\n", "max_concurrency must be an integer"),
        ("job: x\nenvironment_variables: [A]\n", "environment_variables must be a mapping"),
        ("job: x\nworkspace: missing\n", "workspace 'missing' is not a folder"),
        ("job: x\nreadiness_probe: yes\n", "readiness_probe must be a mapping"),
        ("job: x\nreadiness_path: /a\nreadiness_probe: {httpGet: {path: /b}}\n", "not both"),
        ("job: x\nreadines_path: /ready\n", "unknown key.s. readines_path"),
        ("- job\n", "expected a mapping"),
        ("job: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(AppLoadError, match=complaint) as caught:
        load_external_config(folder_with(tmp_path, text))
    assert "config.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("job: [unclosed\nbootstrap: x\n", "line 2, column 10: expected ',' or ']', but got ':'"),
        ("job: x\n  bad: : y\n", "line 2, column 6: mapping values are not allowed here"),
        ("job: x\n\tport: 1\n", "line 2, column 1: found character '\\t' that cannot start any token"),
    ],
)
def test_invalid_yaml_says_what_the_parser_found_and_where_on_one_line(
    tmp_path: Path, text: str, where: str
) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_external_config(folder_with(tmp_path, text))
    message = str(caught.value)
    assert f"config.yaml: not valid YAML: {where}" in message
    # A failed start is reported by the worker log's last line: the whole complaint must be on it.
    assert "\n" not in message and "^" not in message
