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

import click

from meshnode.cli.config_file import CONFIG_ENV, config_key
from meshnode.cli.join import join
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
`meshnode join --set job_copies=2 --set job_ttl_s=3600`. Every flag may also come from the
environment or a config file ([below](#flags-from-the-environment-and-a-config-file)).

"""

# A config file that `tests/unit/cli/test_join_config.py` runs through `meshnode join`.
EXAMPLE_TOML = """\
# /etc/meshnode/join.toml: meshnode join --config /etc/meshnode/join.toml
name = "gpu-box-1"
http = "0.0.0.0:8470"
mesh = "0.0.0.0:8471"
data = "0.0.0.0:8472"
seed = ["10.0.0.1:8471", "10.0.0.2:8471"]
mdns = false
region = "eu-west"
zone = "rack-3"
token-file = "/run/secrets/meshnode-token"   # a relative path is from this file's folder
deploy = ["echo=meshnode.apps.echo:Echo"]
log-format = "json"

[set]                                        # the --set knobs, merged name by name
job_copies = 2
request_timeout_s = 120.0
"""

EXAMPLE_YAML = """\
# join.yaml: the same in YAML
name: gpu-box-1
seed: [10.0.0.1:8471, 10.0.0.2:8471]
mdns: false
log_format: json        # dashes or underscores
set:
  job_copies: 2
"""

SOURCES = f"""
## Flags from the environment and a config file

Every flag of `meshnode join` may also be given as an environment variable or in a config file
(`--config FILE`, or `${CONFIG_ENV}`). For each flag the first of these that has it wins:

1. the command line;
2. the environment: `MESHNODE_` and the flag's name in capitals, dashes as underscores
   (`--mesh-id` is `MESHNODE_MESH_ID`). A repeatable flag takes its values separated by spaces
   (`MESHNODE_SEED="10.0.0.1:8471 10.0.0.2:8471"`, `MESHNODE_SET="job_copies=2 uvloop=false"`),
   except `--app-dir`, whose folders are separated by `:` as in `$PATH`. A switch takes
   `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off` (`MESHNODE_MDNS=false`);
3. the config file: TOML (`.toml`) or YAML (`.yaml`, `.yml`), keys the flags' names without `--`
   (dashes or underscores), a list for a repeatable flag, `true`/`false` for a switch, a table
   `set` for the `--set` knobs. A relative path in the file is taken from the file's folder;
4. the default: the field of `AgentConfig` below.

A repeatable flag given in a higher layer replaces the lower layer's list, except `--set`: its
knobs are merged name by name, the higher layer winning (`--set` on the command line replaces
`$MESHNODE_SET`, as for any flag; both go over the file's `set` table).

The mesh token keeps its own order (docs/security.md): `--token`, `--token-file`, then
`$MESHNODE_TOKEN`, so `--token` has no `MESHNODE_TOKEN` of its own. A `token` or `token-file` in
the config file gives way to `$MESHNODE_TOKEN`, and a file's `token` to a `--token-file` of the
command line or the environment. A config file holding `token` must be private to its owner
(mode 0600): it is refused otherwise, since config files get copied and committed; prefer
`token-file` pointing at a secret.

A file that cannot be used stops `meshnode join` with exit code 2 and one line naming the file and
the key: unreadable, not valid TOML or YAML, an unknown key (with the closest flag's name), a value
of the wrong type, or a value the flag refuses. A bad environment variable names its flag, as a bad
flag does.

```toml
{EXAMPLE_TOML}```

```yaml
{EXAMPLE_YAML}```

| flag | environment variable | config file key | what it does |
|---|---|---|---|
"""

TAIL = """
## Logs

`meshnode join` logs to standard error. `--log-level debug|info|warning|error` (default `info`);
`debug` adds a line per HTTP request on the node that took it (method, path, status, time) and a
line per request forwarded to it on the node that runs it. `--log-format text|json`:

- `text` (default): `2026-12-04 00:49:07,507 INFO meshnode.agent: node gpu-box-1 (1024f220) up: ...`.
  On a terminal, a status line under the log says how joining goes (`joining: 0 peers; seeds
  tried: ...`, then `joined: 2 peers; serving on http://...`); anywhere else the log lines say it.
- `json`: one object per line, for log collectors:
  `{"ts": "2026-12-04T00:49:07.507+00:00", "level": "info", "logger": "meshnode.agent",
  "message": "...", "node": "gpu-box-1", "request_id": "..."}`. `ts` is UTC with milliseconds;
  `request_id` is there on every line a request caused (the `X-Request-Id` of its answer), on the
  node that took it and on the node that ran it, so one search finds the whole request;
  `exception` holds the traceback when there is one.

A request's id is the client's `X-Request-Id` when it sent a short plain one, else a new one. Calls
that one request makes several of (an OpenAI request with `n` > 1) carry the id with `.1`, `.2`,
... on the nodes that run them; a job's run, made by the node that holds the job rather than by a
request, carries `job-ID-ATTEMPT` on a node it is forwarded to.
Workers (replica processes) write text to their own log file per replica in the data dir, without
request ids.

## Shell completion

click completes `meshnode`'s commands, flags and choices in bash, zsh and fish. Generate the script
once and source it from the shell's start-up file:

```sh
_MESHNODE_COMPLETE=bash_source meshnode > ~/.meshnode-complete.bash  # then in ~/.bashrc:
. ~/.meshnode-complete.bash
_MESHNODE_COMPLETE=zsh_source meshnode > ~/.meshnode-complete.zsh    # then in ~/.zshrc:
. ~/.meshnode-complete.zsh
_MESHNODE_COMPLETE=fish_source meshnode > ~/.config/fish/completions/meshnode.fish
```
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
    agent = AGENT_HEADER + "\n".join(agent_rows) + "\n"
    return HEADER + "\n".join(rows + derived) + "\n" + agent + SOURCES + "\n".join(flag_rows()) + "\n" + TAIL


def flag_rows() -> list[str]:
    """One row per flag of `meshnode join`: its variable, its key in a file, its help."""
    rows = []
    for param in join.params:
        if not isinstance(param, click.Option):
            continue
        flags = " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        env = f"`{param.envvar}`" if isinstance(param.envvar, str) else "(`$MESHNODE_TOKEN`, see above)"
        key = "(none)" if config_key(param) == "config" else f"`{config_key(param)}`"
        repeat = " In a file: a list." if param.multiple and config_key(param) != "set" else ""
        repeat = " In a file: a table `set` (or a list)." if config_key(param) == "set" else repeat
        what = " ".join((param.help or "").split()).replace("|", "\\|")
        rows.append(f"| {flags} | {env} | {key} | {what}{repeat} |")
    return rows


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.exists() and TARGET.read_text() == text else 1)
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
