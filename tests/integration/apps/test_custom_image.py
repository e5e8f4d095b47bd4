"""Apps in a custom image with real agents: the commands they run, placement by the runtimes, podman, docker.

- With a fake runtime (always): two agents, ``n0`` whose ``podman`` is a stand-in that records its
  command lines and runs the container's command on the host, ``n1`` whose ``podman`` and
  ``docker`` do not answer. The deployment is placed on ``n0`` only, ``n1`` says why it cannot host
  it, a request through ``n1`` is answered by the app, and the replica's ``run``, ``stop`` and ``rm``
  command lines are exactly those ``inference/container.py`` builds.
- With podman, and with docker (each where it is installed and can run a container here; docker
  also needs its daemon): the example server in an image made on this machine
  (``container_image.py``: no registry), answering through an agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode.inference.container import run_command, run_for
from meshnode.inference.external import ExternalServer, ExternalServerError
from meshnode.inference.external_config import load_external_config
from meshnode.inference.process_group import group_alive
from meshnode.mesh.placement import NO_CONTAINER_RUNTIME
from tests.integration.agents import AgentProcess, wait_for
from tests.integration.apps.container_image import build_python_image, runtime_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "apps" / "external_server"
# A worker spawned, the app's container started and ready, on two busy cores.
READY_TIMEOUT_S = 90.0
CONFIG = """
enable_custom_image: true
inference_image_name: {image}
container_runtime: {runtime}
bootstrap: echo bootstrap in the image && echo yes > /tmp/booted
job: test -f /tmp/booted && exec python3 server.py
readiness_path: /ready
startup_timeout_s: 60
environment_variables: {{GREETING: hello}}
"""
# Stands in for podman: records each command line, and runs a container's command on the host in
# the mounted folder with only the variables named by --env (listening on loopback: the port it is
# given is the host port, as the app's config.yaml leaves port at 0).
FAKE_PODMAN = """#!{python}
import json, os, signal, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
state = os.path.join({state!r}, args[-1] if args else "-")
if args[:1] == ["version"]:
    print("{{}}")
elif args[:1] in (["stop"], ["rm"]):
    try:
        os.killpg(int(open(state).read()), signal.SIGTERM)
    except (OSError, ValueError):
        sys.exit(args[0] == "stop")
elif args[:1] == ["run"]:
    valued = {{"--name", "--security-opt", "--volume", "--workdir", "--publish", "--env", "--entrypoint"}}
    options, index = {{}}, 1
    while args[index].startswith("-"):
        if args[index] in valued:
            options.setdefault(args[index], []).append(args[index + 1])
            index += 1
        index += 1
    source = options["--volume"][0].split(":")[0]
    os.chdir(source + options["--workdir"][0][len("/app"):])
    env = {{name: os.environ[name] for name in options.get("--env", [])}}
    env.update(PATH=os.environ["PATH"], HOST="127.0.0.1")
    with open(os.path.join({state!r}, options["--name"][0]), "w") as out:
        out.write(str(os.getpgid(0)))
    os.execve("/bin/sh", ["/bin/sh", *args[index + 1:]], env)
"""
BROKEN = "#!/bin/sh\necho 'Cannot connect to the runtime: not running' >&2\nexit 1\n"


def put(agent: AgentProcess, name: str, spec: object) -> httpx.Response:
    return httpx.put(f"{agent.url}/v1/deployments/{name}", json=spec, timeout=10, trust_env=False)


def deployment(agent: AgentProcess, name: str) -> dict[str, Any]:
    body: dict[str, Any] = agent.get(f"/v1/deployments/{name}").json()
    return body


def ready_on(agent: AgentProcess, name: str) -> set[str]:
    replicas = deployment(agent, name).get("replicas", [])
    return {replica["node"] for replica in replicas if replica["status"] == "ready"}


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def start(agents: list[AgentProcess]) -> None:
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_ready()


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    apps = tmp_path / "apps"
    folder = apps / "boxed"
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLE / "server.py", folder / "server.py")
    return folder


def fake_runtime(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A folder with the fake podman (and a docker that does not answer), its log and its state."""
    bin_dir, log, state = tmp_path / "bin-runtime", tmp_path / "podman.log", tmp_path / "containers"
    for folder in (bin_dir, state):
        folder.mkdir()
    executable(bin_dir / "podman", FAKE_PODMAN.format(python=sys.executable, log=str(log), state=str(state)))
    executable(bin_dir / "docker", BROKEN)
    return bin_dir, log, state


def test_the_job_in_a_container_restarts_and_stops_through_the_runtime(
    tmp_path: Path, app_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (app_folder / "config.yaml").write_text(CONFIG.format(image="localhost/boxed:1", runtime="podman"))
    bin_dir, log, state = fake_runtime(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:{_path()}")
    monkeypatch.setenv("MESHNODE_REPLICA_ID", "boxed-0123abcd")
    name = "meshnode-boxed-0123abcd"
    server = ExternalServer(app_folder, tmp_path / "data")
    groups = []
    try:
        server.setup()
        groups.append(server.pid)
        assert server.predict({"n": 1}) == {"external": {"n": 1}}
        first = int((state / name).read_text())
        os.killpg(first, signal.SIGKILL)  # the container dies: the watchdog starts another
        wait_for(lambda: server.pid not in (None, first), 30, message=lambda: str(_commands(log)))
        groups.append(server.pid)
        # A request may meet the old keep-alive connection, reset: it then fails, as on the host.
        wait_for(lambda: _answers(server, {"n": 2}), 30)
        commands = [args[0] for args in _commands(log) if args[:1] != ["version"]]
        # each start removes a leftover first; the dead one is stopped and removed before the next
        assert commands == ["rm", "run", "stop", "rm", "rm", "run"], _commands(log)
    finally:
        server.close()
    assert _commands(log)[-2:] == [["stop", "-t", "5", name], ["rm", "--force", name]]
    assert not [group for group in groups if group is not None and group_alive(group)]


def test_placed_where_a_runtime_answers_and_run_with_exactly_these_commands(
    tmp_path: Path, app_folder: Path
) -> None:
    (app_folder / "config.yaml").write_text(CONFIG.format(image="localhost/boxed:1", runtime="podman"))
    with_runtime, log, _ = fake_runtime(tmp_path)
    without = tmp_path / "bin-none"
    without.mkdir()
    executable(without / "podman", BROKEN)
    executable(without / "docker", BROKEN)
    flags = ["--allow-external-apps", "--app-dir", str(app_folder.parent)]
    mesh_id = f"test-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex * 2
    n0 = AgentProcess(
        "n0", tmp_path, mesh_id=mesh_id, token=token, extra_args=flags,
        env={"PATH": f"{with_runtime}:{_path()}"},
    )  # fmt: skip
    n1 = AgentProcess(
        "n1", tmp_path, mesh_id=mesh_id, token=token, seeds=[n0.mesh], extra_args=flags,
        env={"PATH": f"{without}:{_path()}"},
    )  # fmt: skip
    try:
        start([n0, n1])

        def runtimes() -> dict[str, list[str]]:
            members = n1.members()
            return {m["name"]: m["device"].get("container_runtimes", []) for m in members.values()}

        wait_for(lambda: runtimes() == {"n0": ["podman"], "n1": []}, 30, message=lambda: str(runtimes()))

        declared = put(n1, "boxed", {"app": str(app_folder), "min_replicas": 2, "max_replicas": 2})
        assert declared.status_code == 201, declared.text
        assert declared.json()["spec"]["resources"]["container"] is True
        wait_for(
            lambda: ready_on(n1, "boxed") == {"n0"},
            READY_TIMEOUT_S,
            message=lambda: f"{deployment(n1, 'boxed')}\n{n0.describe()}",
        )
        answer = httpx.post(f"{n1.url}/v1/predict/boxed", json={"text": "hi"}, timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"external": {"text": "hi"}}
        why = deployment(n1, "boxed")["unschedulable"]
        assert f"1 node(s): {NO_CONTAINER_RUNTIME}" in why

        name = f"meshnode-boxed-{n0.node_id[:8]}"
        runs = [args for args in _commands(log) if args[:1] == ["run"]]
        assert len(runs) == 1, runs
        host_port = int(runs[0][runs[0].index("--publish") + 1].split(":")[1])
        runtime = ("podman", str(with_runtime / "podman"))
        run, env = run_for(load_external_config(app_folder), app_folder.resolve(), runtime, name, host_port)
        assert [runtime[1], *runs[0]] == run_command(run)
        assert env == {"HOST": "0.0.0.0", "PYTHON": "python3", "GREETING": "hello", "PORT": str(host_port)}
        assert ["rm", "--force", name] in _commands(log)[: _commands(log).index(runs[0])]

        assert httpx.delete(f"{n1.url}/v1/deployments/boxed", timeout=10, trust_env=False).status_code == 200
        wait_for(
            lambda: (
                ["stop", "-t", "5", name] in _commands(log) and _commands(log)[-1] == ["rm", "--force", name]
            ),
            60,
            message=lambda: "\n".join(map(str, _commands(log)[-5:])),
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{host_port}/ready", timeout=2, trust_env=False)
    finally:
        n1.stop_all()
        n0.stop_all()


@pytest.fixture(scope="module", params=["podman", "docker"])
def runtime_image(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(runtime, CLI, image, environment it needs): an image made here, removed after the module."""
    runtime: str = request.param
    cli = shutil.which(runtime)
    if cli is None:
        pytest.skip(f"{runtime} is not installed (scripts/setup.sh installs podman)")
    answer = subprocess.run([cli, "version"], capture_output=True, text=True, timeout=30)
    if answer.returncode != 0:
        pytest.skip(f"`{runtime} version` fails here: {(answer.stderr.strip().splitlines() or ['?'])[-1]}")
    workdir = tmp_path_factory.mktemp(f"image-{runtime}")
    image = f"localhost/meshnode-test-python:{uuid.uuid4().hex[:8]}"
    why = build_python_image(cli, image, workdir)
    if why is not None:
        pytest.skip(f"cannot make a test image without a registry: {why}")
    try:
        env, why = runtime_settings(cli, runtime, image, workdir)
        if why is not None:
            pytest.skip(why)
        yield runtime, cli, image, env
    finally:
        subprocess.run([cli, "rmi", "--force", image], capture_output=True, timeout=60)


def test_an_app_in_an_image_serves_through_an_agent(
    tmp_path: Path, app_folder: Path, runtime_image: tuple[str, str, str, dict[str, str]]
) -> None:
    runtime, cli, image, env = runtime_image
    (app_folder / "config.yaml").write_text(CONFIG.format(image=image, runtime=runtime))
    flags = ["--allow-external-apps", "--app-dir", str(app_folder.parent)]
    agent = AgentProcess("n0", tmp_path, mesh_id=f"test-{uuid.uuid4().hex[:12]}", extra_args=flags, env=env)

    def containers(*options: str) -> str:
        listed = subprocess.run(
            [cli, "ps", *options, "--filter", f"name={name}"],
            capture_output=True, text=True, timeout=30, env={**os.environ, **env},
        )  # fmt: skip
        return listed.stdout.strip()

    try:
        start([agent])
        name = f"meshnode-boxed-{agent.node_id[:8]}"
        wait_for(
            lambda: runtime in agent.members()[agent.node_id]["device"].get("container_runtimes", []), 30
        )
        declared = put(agent, "boxed", {"app": str(app_folder)})
        assert declared.status_code == 201, declared.text
        wait_for(
            lambda: ready_on(agent, "boxed") == {"n0"},
            READY_TIMEOUT_S,
            message=lambda: f"{deployment(agent, 'boxed')}\n{agent.describe()}",
        )
        listed = containers("--format", "{{.Image}} {{.Ports}}")
        assert listed.startswith(image) and "127.0.0.1:" in listed, listed
        answer = httpx.post(f"{agent.url}/v1/predict/boxed", json={"text": "hi"}, timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"external": {"text": "hi"}}
        with httpx.stream(
            "POST", f"{agent.url}/v1/predict/boxed", json={"stream": True}, timeout=30, trust_env=False
        ) as streamed:
            body = streamed.read().decode()
        assert body.count('"seq"') == 3, body
        log = (agent.data_dir / "logs").glob("boxed-*.log")
        assert any("bootstrap in the image" in path.read_text() for path in log)

        assert (
            httpx.delete(f"{agent.url}/v1/deployments/boxed", timeout=10, trust_env=False).status_code == 200
        )
        wait_for(
            lambda: containers("--all", "--quiet") == "", 60, interval=0.5, message="the container lived on"
        )
    finally:
        agent.stop_all()


def _answers(server: ExternalServer, request: dict[str, Any]) -> bool:
    try:
        return bool(server.predict(request) == {"external": request})
    except ExternalServerError:
        return False


def _commands(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")
