"""A real agent whose seeds cannot be had says why within seconds: a host name that does not resolve,
an address where nobody answers.

It runs in a namespace of its own, so the name lookup of the unresolvable seed and the connection to
the silent one never leave it (no route to the machine's name server, nobody else on the subnet).
"""

from __future__ import annotations

import secrets
import sys
import uuid
from pathlib import Path

import pytest

from meshnode.config import AgentConfig
from tests.integration.agents import wait_for
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

# The first warning comes after seed_warn_after_s, its probes take up to seed_probe_timeout_s; the
# rest is the agent starting on a busy 2-core machine.
_CONFIG = AgentConfig(name="test")
WARNING_TIMEOUT_S = _CONFIG.seed_warn_after_s + _CONFIG.seed_probe_timeout_s + 60.0
UNRESOLVABLE = "nohost.invalid:8471"  # .invalid never resolves (RFC 2606)


def test_unresolvable_and_silent_seeds_are_named_with_why(tmp_path: Path) -> None:
    require_netns()
    with Bridge("mnseed", 1) as net, (tmp_path / "agent.log").open("wb") as log:
        host = net.hosts[0]
        address = net.address_of(host)
        silent = f"{address.rsplit('.', 1)[0]}.250:8471"  # on the subnet, and nobody is there
        command = [sys.executable, "-m", "meshnode", "join", "--name", "alone", "--no-mdns"]
        command += ["--profile", "local", "--mesh-id", f"netns-{uuid.uuid4().hex[:12]}"]
        command += ["--token", secrets.token_urlsafe(32), "--data-dir", str(tmp_path / "alone")]
        command += ["--http", "127.0.0.1:8470", "--mesh", f"{address}:8471", "--data", f"{address}:0"]
        command += ["--seed", UNRESOLVABLE, "--seed", silent]
        process = net.exec_logged(host, command, log)

        def warnings() -> list[str]:
            assert process.poll() is None, (tmp_path / "agent.log").read_text()
            lines = (tmp_path / "agent.log").read_text(errors="replace").splitlines()
            return [line for line in lines if " WARNING " in line and "seed " in line]

        def both_named() -> bool:
            said = warnings()
            return any(f"seed {UNRESOLVABLE}:" in line for line in said) and any(
                f"seed {silent}:" in line for line in said
            )

        wait_for(both_named, WARNING_TIMEOUT_S, interval=0.2, message=lambda: "\n".join(warnings()))
        said = warnings()
        unresolved = next(line for line in said if f"seed {UNRESOLVABLE}:" in line)
        assert "cannot resolve host 'nohost.invalid'" in unresolved, unresolved
        assert f"No answer from {UNRESOLVABLE} after" in unresolved, unresolved
        quiet = next(line for line in said if f"seed {silent}:" in line)
        # Nobody answers ARP there: the connection times out, or the kernel gives up on the host.
        assert "does not answer TCP" in quiet or "cannot connect to it" in quiet, quiet
        assert f"No answer from {silent} after" in quiet, quiet
