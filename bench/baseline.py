"""Security on and off, side by side: the agents of this checkout, and those of the commit before security.

meshnode has no switch that turns its security off (docs/security.md), so "off" in the benchmarks
is the code as it was just before it had any: commit ``BEFORE_SECURITY``, the last one before issue 11
sealed gossip, put the data plane on CURVE and put a gate on HTTP. Its sources come out of this
repository's history (``git archive``) and are installed, without dependencies, into a folder of their
own; an agent started with that folder first on ``PYTHONPATH`` (``Variant.env``) imports that
meshnode, and its worker processes, which inherit the environment, do too. Everything else (the
interpreter, the dependencies, the machine, the run) is shared, so the difference between the two
columns is what security costs, plus whatever else changed between the two commits: the commits in
between (``git log BEFORE_SECURITY..HEAD``) are the security work itself.

``--baseline-commit`` in the scripts takes another commit to compare with, and ``at_commit`` serves
benchmarks that compare this checkout with any commit (bench/admission.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

BEFORE_SECURITY = "9588113"
REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # the tests' helper that installs another commit is reused here

from tests.integration.releases import install_commit, pythonpath_first  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One side of the comparison: how to start its agents."""

    name: str  # "on" or "off", as the tables print it
    env: dict[str, str]  # the environment of its agents
    join_args: tuple[str, ...] = field(default=())  # extra `meshnode join` arguments

    def describe(self) -> str:
        """Which meshnode its agents import, asked of the interpreter the agents run."""
        where = subprocess.run(
            [sys.executable, "-c", "import meshnode; print(meshnode.__file__)"],
            capture_output=True, text=True, check=True, env=self.env,
        ).stdout.strip()  # fmt: skip
        return f"security {self.name}: meshnode from {where}"


def commit_of(ref: str) -> str:
    """The short hash `ref` names in this repository."""
    return subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def security_on(token: str) -> Variant:
    """This checkout's agents (the interpreter's own meshnode), all given the same mesh token."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESHNODE_TOKEN")}
    return Variant("on", env, ("--token", token))


def security_off(root: Path, commit: str = BEFORE_SECURITY) -> Variant:
    """The agents of `commit` (by default the last before security), installed under `root`."""
    return at_commit(root, commit, "off")


def at_commit(root: Path, commit: str, name: str, join_args: tuple[str, ...] = ()) -> Variant:
    """Agents running the code of `commit`, installed under `root` (``install_commit``)."""
    site = install_commit(commit, root, name)
    env = {k: v for k, v in os.environ.items() if k != "MESHNODE_TOKEN"}
    env["PYTHONPATH"] = pythonpath_first(site)
    return Variant(name, env, join_args)
