"""Build the CPU image and run a two-node mesh in containers: only with MESHNODE_TEST_IMAGES=1.

Minutes of building and a container runtime that can run containers, so never in CI (skipped with
that reason); run it by hand after changing deploy/docker/ (docs/deploy-images.md):

    MESHNODE_TEST_IMAGES=1 .venv/bin/python -m pytest -q tests/unit/deploy/test_docker_image.py

It builds deploy/docker/Dockerfile, starts two containers on a network of their own, n2 joining by
the seed `n1:8471` with a token read from a file and serving a pinned echo, then checks from the
outside what the image promises: the nodes form a mesh advertising their container addresses, a
request entering n1 is served by n2, the agent runs as uid 10001, the health check answers, and n2
restarted on its volume rejoins as the same node. Everything it made is removed at the end.

The machine decides how containers can be built and run, so four variables adapt it:

- MESHNODE_TEST_RUNTIME: the runtime command (default: podman if installed, else docker), e.g.
  "podman --runtime runc";
- MESHNODE_TEST_BASE_IMAGE: --build-arg BASE_IMAGE (default: the Dockerfile's own);
- MESHNODE_TEST_BUILD_ARGS, MESHNODE_TEST_RUN_ARGS: more arguments for `build` and `run`,
  split as a shell would.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
TAG = "localhost/meshnode:test-image"
NETWORK = "meshnode-test-image"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("MESHNODE_TEST_IMAGES") != "1",
        reason="builds and runs the image (minutes, needs a container runtime): MESHNODE_TEST_IMAGES=1",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]


def _runtime() -> list[str]:
    given = os.environ.get("MESHNODE_TEST_RUNTIME")
    if given:
        return shlex.split(given)
    for name in ("podman", "docker"):
        if shutil.which(name):
            return [name]
    pytest.skip("no container runtime: install podman or docker, or set MESHNODE_TEST_RUNTIME")


def _run(args: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> Iterator[list[str]]:
    runtime = _runtime()
    build = [*runtime, "build", "-f", "deploy/docker/Dockerfile", "-t", TAG]
    if runtime[0] == "podman":
        build += ["--format", "docker"]  # OCI image format has no HEALTHCHECK
    base = os.environ.get("MESHNODE_TEST_BASE_IMAGE")
    if base:
        build += ["--build-arg", f"BASE_IMAGE={base}"]
    build += shlex.split(os.environ.get("MESHNODE_TEST_BUILD_ARGS", ""))
    _run([*build, str(ROOT)], timeout=1500)
    yield runtime
    _run([*runtime, "rmi", "-f", TAG], check=False)


@pytest.fixture
def mesh(image: list[str], tmp_path: Path) -> Iterator[list[str]]:
    runtime = image
    _cleanup(runtime)
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o444)  # read by uid 10001 in the container
    _run([*runtime, "network", "create", NETWORK])
    extra = shlex.split(os.environ.get("MESHNODE_TEST_RUN_ARGS", ""))
    common = [*runtime, "run", "-d", *extra, "--network", NETWORK, "-e", "MESHNODE_PROFILE=local"]
    common += ["-v", f"{token}:/run/secrets/meshnode-token:ro"]
    common += ["-e", "MESHNODE_TOKEN_FILE=/run/secrets/meshnode-token"]
    try:
        _run(
            [
                *common,
                "--name",
                "n1",
                "-e",
                "MESHNODE_NAME=n1",
                "-v",
                "meshnode-test-n1:/var/lib/meshnode",
                TAG,
            ]
        )
        _run(
            [
                *common,
                *("--name", "n2", "-e", "MESHNODE_NAME=n2", "-e", "MESHNODE_SEED=n1:8471"),
                *("-e", "MESHNODE_DEPLOY=echo=meshnode.apps.echo:Echo"),
                *("-v", "meshnode-test-n2:/var/lib/meshnode", TAG),
            ]
        )
        yield runtime
    finally:
        for name in ("n1", "n2"):
            logs = _run([*runtime, "logs", name], check=False)
            print(f"--- {name}\n{logs.stdout}{logs.stderr}")
        _cleanup(runtime)


def _cleanup(runtime: list[str]) -> None:
    _run([*runtime, "rm", "-f", "n1", "n2"], check=False)
    _run([*runtime, "volume", "rm", "-f", "meshnode-test-n1", "meshnode-test-n2"], check=False)
    _run([*runtime, "network", "rm", NETWORK], check=False)


Members = dict[str, dict[str, Any]]


def _members(runtime: list[str]) -> Members:
    done = _run([*runtime, "exec", "n1", "meshnode", "peers", "--json"], check=False)
    if done.returncode != 0:
        return {}
    return {member["name"]: member for member in json.loads(done.stdout)["members"]}


def _wait_for(runtime: list[str], what: str, ok: Callable[[Members], bool], timeout_s: float = 90) -> Members:
    """n1's view of the mesh once `ok` holds for it."""
    deadline = time.monotonic() + timeout_s
    members: Members = {}
    while time.monotonic() < deadline:
        members = _members(runtime)
        if ok(members):
            return members
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout_s} s; n1 sees {members}")


_PREDICT = """
import json, urllib.request
request = urllib.request.Request("http://127.0.0.1:8470/v1/predict/echo", data=b'{"hello": "image"}')
with urllib.request.urlopen(request, timeout=30) as response:
    print(json.dumps({"status": response.status, "route": response.headers["X-Mesh-Route"],
                      "body": json.loads(response.read())}))
"""


def test_two_containers_form_a_mesh_and_serve(mesh: list[str]) -> None:
    runtime = mesh

    def both_alive(members: Members) -> bool:
        return all(members.get(name, {}).get("status") == "alive" for name in ("n1", "n2"))

    members = _wait_for(runtime, "n1 and n2 alive", both_alive)
    for name in ("n1", "n2"):
        host = members[name]["mesh"].rpartition(":")[0]
        assert host not in ("0.0.0.0", "127.0.0.1"), f"{name} advertises {host}"
        assert members[name]["mesh"].endswith(":8471")

    deadline = time.monotonic() + 120
    while True:  # the echo replica's setup may still run
        done = _run([*runtime, "exec", "n1", "python", "-c", _PREDICT], check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"status": 200, "route": "n1,n2", "body": {"echo": {"hello": "image"}}}

    assert _run([*runtime, "exec", "n1", "id", "-u"]).stdout.strip() == "10001"
    _run([*runtime, "exec", "n1", "/opt/meshnode/bin/python", "/opt/meshnode/healthcheck.py"])

    n2_id = members["n2"]["id"]
    _run([*runtime, "restart", "-t", "10", "n2"])

    def n2_back(members: Members) -> bool:
        n2 = members.get("n2", {})
        return n2.get("status") == "alive" and int(n2.get("incarnation", 0)) > 0

    members = _wait_for(runtime, "n2 back", n2_back)
    assert members["n2"]["id"] == n2_id, "restarted on its volume, n2 is the same node"
