"""Writes docs/configuration.md from the config dataclasses, so no default is written twice.

Each field's documentation is the comment block above it in the source. Run
`python scripts/config_docs.py` after changing a config; tests/unit/test_config_docs.py fails when
the page is stale.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

from meshnode.config import AgentConfig
from meshnode.mesh.config import MembershipConfig

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "configuration.md"

HEADER = """# Configuration

Generated from `mesh/config.py` and `node/config.py` by `scripts/config_docs.py`; edit those, not
this page. Each knob's documentation is the comment above its field.

## Membership (`meshnode.mesh.config.MembershipConfig`)

SWIM + Lifeguard timings. `meshnode join --profile lan` (default) uses memberlist's
`DefaultLANConfig`; `--profile local` overrides a few fields for agents on one machine or a quiet LAN.
Derived values at a given mesh size N come from memberlist's formulas:
suspicion min = `suspicion_mult * max(1, log10 N) * probe_interval_s`,
max = `suspicion_max_timeout_mult * min`, retransmits = `retransmit_mult * ceil(log10(N + 1))`
([membership.md](membership.md) derives the detection time from them).

"""

AGENT_HEADER = """
## Agent (`meshnode.config.AgentConfig`)

What `meshnode join` decides about one agent. The CLI flags map onto these fields
(`--http HOST:PORT` sets `http_host` and `http_port`, `--mesh` and `--data` likewise; `--name`,
`--seed` and `--interface` (both repeatable), `--mdns/--no-mdns`, `--region`, `--zone`, `--profile`,
`--data-dir`, `--mesh-id` and `--deploy NAME=APP` (repeatable) set the field of that name). The
fields from `load_sample_interval_s` on have no flag of their own; any of them that is a number or
a switch is set with `--set NAME=VALUE` (repeatable), e.g.
`meshnode join --set job_copies=2 --set job_ttl_s=3600`.

"""


def field_comments(path: Path, class_name: str) -> dict[str, str]:
    """The comment block directly above each annotated field of `class_name`."""
    source = path.read_text().splitlines()
    tree = ast.parse("\n".join(source))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    comments: dict[str, str] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = []
            index = node.lineno - 2
            while index >= 0 and source[index].strip().startswith("#"):
                lines.insert(0, source[index].strip().lstrip("#").strip())
                index -= 1
            comments[node.target.id] = " ".join(lines)
    return comments


def fmt(value: object) -> str:
    if isinstance(value, Path):
        return "`$MESHNODE_HOME` or `~/.meshnode`"
    if isinstance(value, tuple) and not value:
        return "none"
    return f"`{value!r}`"


def render() -> str:
    lan, local = MembershipConfig.lan(), MembershipConfig.local()
    comments = field_comments(ROOT / "mesh" / "config.py", "MembershipConfig")
    rows = ["| field | lan | local | what it does |", "|---|---|---|---|"]
    for field in dataclasses.fields(MembershipConfig):
        lan_value, local_value = getattr(lan, field.name), getattr(local, field.name)
        local_cell = fmt(local_value) if local_value != lan_value else "same"
        rows.append(f"| `{field.name}` | {fmt(lan_value)} | {local_cell} | {comments.get(field.name, '')} |")
    derived = [
        "",
        "Derived at a few sizes (local profile):",
        "",
        "| N | suspicion min s | max s | retransmits | predicted detection s |",
        "|---|---|---|---|---|",
    ]
    for n in (5, 10, 20, 100, 1000):
        derived.append(
            f"| {n} | {local.suspicion_min_s(n):.2f} | {local.suspicion_max_s(n):.2f} | "
            f"{local.retransmit_limit(n)} | {local.expected_detection_s(n):.2f} |"
        )
    agent_comments = field_comments(ROOT / "node" / "config.py", "AgentConfig")
    agent_rows = ["| field | default | what it does |", "|---|---|---|"]
    for field in dataclasses.fields(AgentConfig):
        if field.default is not dataclasses.MISSING:
            default = fmt(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = fmt(field.default_factory())
        else:
            default = "required (`--name` defaults to the host name)"
        agent_rows.append(f"| `{field.name}` | {default} | {agent_comments.get(field.name, '')} |")
    return HEADER + "\n".join(rows + derived) + "\n" + AGENT_HEADER + "\n".join(agent_rows) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.exists() and TARGET.read_text() == text else 1)
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
