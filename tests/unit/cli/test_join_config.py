"""``meshnode join`` flags from ``$MESHNODE_*`` and ``--config FILE``: precedence, shapes, refusals."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from meshnode.cli import main
from meshnode.cli.config_file import config_key, env_var_name, without_flag_vars
from meshnode.cli.join import join
from meshnode.config import AgentConfig

TOKEN = "t" * 40
ROOT = Path(__file__).resolve().parents[3]


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """``meshnode join ARGS`` with `env` added to (and MESHNODE_TOKEN removed from) the environment."""
    return CliRunner().invoke(main, ["join", *args], env={"MESHNODE_TOKEN": None, **(env or {})})


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_file_sets_flags_and_the_rest_stays_agent_config_defaults(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "join.toml",
        'name = "edge"\nhttp = "127.0.0.1:9000"\nseed = ["10.0.0.1:8471", "10.0.0.2:8471"]\n'
        'mdns = false\nmesh_id = "lab"\nlog-format = "json"\n[set]\njob_copies = 2\nuvloop = false\n',
    )
    result = invoke(["--config", str(config)])
    assert result.exit_code == 0, result.output
    [got] = started
    assert (got.name, got.http_host, got.http_port, got.mesh_id) == ("edge", "127.0.0.1", 9000, "lab")
    assert got.seeds == ("10.0.0.1:8471", "10.0.0.2:8471")
    assert (got.mdns, got.job_copies, got.uvloop) == (False, 2, False)
    expected = AgentConfig(name="edge")
    untouched = {"mesh_port", "data_port", "profile", "job_ttl_s", "region", "deploy"}
    assert {name: getattr(got, name) for name in untouched} == {
        name: getattr(expected, name) for name in untouched
    }


def test_yaml_file_is_the_same_as_toml(started: list[AgentConfig], tmp_path: Path) -> None:
    config = write(
        tmp_path / "join.yaml",
        "name: edge\nhttp: 127.0.0.1:9000\nseed: [10.0.0.1:8471]\nmdns: false\nset:\n  job_copies: 2\n",
    )
    result = invoke(["--config", str(config)])
    assert result.exit_code == 0, result.output
    [got] = started
    assert (got.http_port, got.seeds, got.mdns, got.job_copies) == (9000, ("10.0.0.1:8471",), False, 2)


def test_command_line_beats_environment_beats_file_beats_default(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "j.toml", 'http = "127.0.0.1:1001"\nregion = "file"\nzone = "file"\nprofile = "local"\n'
    )
    env = {"MESHNODE_HTTP": "127.0.0.1:1002", "MESHNODE_REGION": "env"}
    result = invoke(["--config", str(config), "--http", "127.0.0.1:1003", "--name", "n"], env)
    assert result.exit_code == 0, result.output
    [got] = started
    assert got.http_port == 1003  # command line over environment and file
    assert got.region == "env"  # environment over file
    assert (got.zone, got.profile) == ("file", "local")  # file over default
    assert got.mesh_port == AgentConfig(name="n").mesh_port  # default


def test_a_list_from_a_higher_layer_replaces_the_files(started: list[AgentConfig], tmp_path: Path) -> None:
    config = write(tmp_path / "j.toml", 'seed = ["10.0.0.1:8471", "10.0.0.2:8471"]\n')
    result = invoke(["--config", str(config)], {"MESHNODE_SEED": "10.0.0.9:8471"})
    assert result.exit_code == 0, result.output
    assert started[0].seeds == ("10.0.0.9:8471",)


def test_set_knobs_merge_name_by_name(started: list[AgentConfig], tmp_path: Path) -> None:
    config = write(tmp_path / "j.toml", "[set]\njob_copies = 2\njob_ttl_s = 60\nrelay_count = 3\n")
    env = {"MESHNODE_SET": "job_copies=4 relay_count=4"}
    result = invoke(["--config", str(config), "--set", "relay_count=5"], env)
    assert result.exit_code == 0, result.output
    [got] = started
    # --set on the command line replaces $MESHNODE_SET (click's rule for one flag), not the file's table.
    assert (got.job_copies, got.job_ttl_s, got.membership().relay_count) == (2, 60.0, 5)


def test_environment_lists_and_switches(started: list[AgentConfig], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b c").mkdir()
    env = {
        "MESHNODE_SEED": "10.0.0.1:8471  10.0.0.2:8471",
        "MESHNODE_INTERFACE": "127.0.0.1",
        "MESHNODE_APP_DIR": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b c'}",  # as $PATH: spaces kept
        "MESHNODE_DEPLOY": "echo=meshnode.apps.echo:Echo",
        "MESHNODE_MDNS": "false",
        "MESHNODE_INSECURE_HTTP": "yes",
        "MESHNODE_SET": "job_copies=2 uvloop=false",
        "MESHNODE_NAME": "from-env",
    }
    result = invoke([], env)
    assert result.exit_code == 0, result.output
    [got] = started
    assert got.name == "from-env"
    assert got.seeds == ("10.0.0.1:8471", "10.0.0.2:8471")
    assert got.interfaces == ("127.0.0.1",)
    assert got.app_dirs == (tmp_path / "a", tmp_path / "b c")
    assert got.deploy == ("echo=meshnode.apps.echo:Echo",)
    assert (got.mdns, got.insecure_http, got.job_copies, got.uvloop) == (False, True, 2, False)


def test_config_file_from_the_environment(started: list[AgentConfig], tmp_path: Path) -> None:
    config = write(tmp_path / "j.yml", "region: eu\n")
    result = invoke([], {"MESHNODE_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert started[0].region == "eu"


def test_relative_paths_in_the_file_are_from_its_folder(
    started: list[AgentConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc" / "apps").mkdir(parents=True)
    config = write(tmp_path / "etc" / "j.toml", 'app-dir = "apps"\ndata-dir = "state"\n')
    monkeypatch.chdir(tmp_path)
    result = invoke(["--config", str(config)])
    assert result.exit_code == 0, result.output
    [got] = started
    assert (got.app_dirs, got.data_dir) == ((tmp_path / "etc" / "apps",), tmp_path / "etc" / "state")


def test_a_single_string_for_a_repeatable_flag_is_a_list_of_one(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    result = invoke(["--config", str(write(tmp_path / "j.toml", 'seed = "10.0.0.1:8471"\n'))])
    assert result.exit_code == 0, result.output
    assert started[0].seeds == ("10.0.0.1:8471",)


BAD_FILES = [
    ("j.toml", 'htp = "127.0.0.1:1"\n', "key 'htp': no such flag of 'meshnode join'; did you mean 'http'?"),
    ("j.toml", "http = 8470\n", "key 'http': takes a string, not a number"),
    ("j.toml", 'http = "a b"\n', "key 'http': expected HOST:PORT"),
    ("j.toml", 'mdns = "no"\n', "key 'mdns': takes true or false, not a string"),
    ("j.toml", 'name = ["a"]\n', "key 'name': takes a string, not a list"),
    ("j.toml", "seed = [1, 2]\n", "key 'seed': takes a list of strings"),
    ("j.toml", 'seed = ["10.0.0.1"]\n', "key 'seed': "),
    ("j.toml", 'profile = "wan"\n', "key 'profile': "),
    ("j.toml", 'app-dir = ["missing"]\n', "key 'app-dir': "),
    ("j.toml", "[set]\nno_such_knob = 1\n", "key 'set': expected NAME=VALUE"),
    ("j.toml", '[set]\njob_copies = "three"\n', "key 'set': job_copies takes an integer"),
    ("j.toml", "set = 3\n", "key 'set': takes a table of NAME = VALUE, not a number"),
    ("j.toml", 'app-dir = ["."]\napp_dir = ["."]\n', "key 'app_dir': given twice (also as 'app-dir')"),
    ("j.toml", 'config = "other.toml"\n', "key 'config': no such flag"),
    ("j.toml", "http = \n", "not valid TOML: "),
    ("j.yaml", "http: [\n", "not valid YAML: "),
    ("j.yaml", "- http\n", "expected a table of flag names at the top, got a list"),
    ("j.yaml", "1: x\n", "key 1: keys are flag names"),
    ("j.ini", "http = x\n", "unknown format; name the file .toml, .yaml or .yml"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES)
def test_a_bad_file_is_one_line_naming_file_and_key_and_exit_2(
    started: list[AgentConfig], tmp_path: Path, name: str, text: str, expected: str
) -> None:
    config = write(tmp_path / name, text)
    result = invoke(["--config", str(config)])
    assert_one_error_line(result, f"Error: {config}: ", expected)
    assert started == []


def test_an_unreadable_or_missing_file_is_one_line_and_exit_2(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    assert_one_error_line(invoke(["--config", str(missing)]), f"Error: {missing}: ", "cannot read it")
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert_one_error_line(invoke(["--config", str(folder)]), f"Error: {folder}: ", "cannot read it")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    assert_one_error_line(invoke(["--config", str(binary)]), f"Error: {binary}: ", "not UTF-8 text")
    assert started == []


def assert_one_error_line(result: Result, prefix: str, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(prefix) and expected in lines[0], result.output


def test_a_token_in_a_file_others_may_read_is_refused(started: list[AgentConfig], tmp_path: Path) -> None:
    config = write(tmp_path / "j.toml", f'token = "{TOKEN}"\n', mode=0o644)
    result = invoke(["--config", str(config)])
    assert_one_error_line(result, f"Error: {config}: ", "key 'token': the file holds the mesh's token but")
    assert "chmod 600" in result.output and TOKEN not in result.output
    assert started == []


def test_a_bad_token_in_a_private_file_is_one_line_naming_the_key(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    config = write(tmp_path / "j.toml", 'token = "short"\n', mode=0o600)
    assert_one_error_line(
        invoke(["--config", str(config)]), f"Error: {config}: ", "key 'token': the token from"
    )
    assert started == []


def test_a_token_in_a_private_file_is_used_unless_a_higher_layer_gives_one(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    config = write(tmp_path / "j.toml", f'token = "{TOKEN}"\n', mode=0o600)
    assert invoke(["--config", str(config)]).exit_code == 0
    assert started[-1].token == TOKEN
    # $MESHNODE_TOKEN outranks the file: the agent's resolve_token then reads the variable.
    assert invoke(["--config", str(config)], {"MESHNODE_TOKEN": "e" * 40}).exit_code == 0
    assert started[-1].token is None
    # So does a --token-file given on the command line (or as $MESHNODE_TOKEN_FILE).
    token_file = write(tmp_path / "token", "f" * 40, mode=0o600)
    assert invoke(["--config", str(config), "--token-file", str(token_file)]).exit_code == 0
    assert (started[-1].token, started[-1].token_file) == (None, token_file)


def test_a_token_file_in_the_file_gives_way_to_the_environments_token(
    started: list[AgentConfig], tmp_path: Path
) -> None:
    config = write(tmp_path / "j.toml", 'token-file = "token"\n')
    assert invoke(["--config", str(config)]).exit_code == 0
    assert started[-1].token_file == tmp_path / "token"
    assert invoke(["--config", str(config)], {"MESHNODE_TOKEN": "e" * 40}).exit_code == 0
    assert started[-1].token_file is None


def test_a_bad_environment_value_exits_2_naming_the_flag(started: list[AgentConfig]) -> None:
    result = invoke([], {"MESHNODE_MDNS": "perhaps"})
    assert result.exit_code == 2 and "--mdns" in result.output, result.output
    result = invoke([], {"MESHNODE_SEED": "10.0.0.1:8471 nope"})
    assert result.exit_code == 2 and "--seed" in result.output, result.output
    assert started == []


def test_every_join_flag_has_its_environment_variable_but_token() -> None:
    options = [param for param in join.params if isinstance(param, click.Option)]
    named = {config_key(option): option.envvar for option in options}
    assert named["token"] is None  # $MESHNODE_TOKEN ranks below --token-file (trust/token.py)
    assert named["mesh-id"] == "MESHNODE_MESH_ID"
    assert named["mdns"] == "MESHNODE_MDNS"
    for option in options:
        if config_key(option) != "token":
            assert (
                option.envvar
                == env_var_name(option)
                == "MESHNODE_" + config_key(option).upper().replace("-", "_")
            )
            assert option.show_envvar


def test_help_shows_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["join", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "env var: MESHNODE_HTTP" in result.output and "env var: MESHNODE_CONFIG" in result.output


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "_meshnode_completion()"), ("zsh", "#compdef meshnode"), ("fish", "complete")],
)
def test_the_completion_script_is_printed(shell: str, marker: str) -> None:
    result = CliRunner().invoke(main, [], prog_name="meshnode", env={"_MESHNODE_COMPLETE": f"{shell}_source"})
    assert result.exit_code == 0, result.output
    assert marker in result.output and "_MESHNODE_COMPLETE" in result.output


def test_completion_knows_joins_flags_and_values() -> None:
    def complete(words: str) -> list[str]:
        env = {
            "_MESHNODE_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        result = CliRunner().invoke(main, [], prog_name="meshnode", env=env)
        assert result.exit_code == 0, result.output
        return [line.split(",", 1)[1] for line in result.output.splitlines()]

    assert complete("meshnode join --log-f") == ["--log-format"]
    assert complete("meshnode join --log-format j") == ["json"]


@pytest.mark.parametrize(("example", "suffix"), [("EXAMPLE_TOML", ".toml"), ("EXAMPLE_YAML", ".yaml")])
def test_the_documented_examples_are_accepted(
    started: list[AgentConfig], tmp_path: Path, example: str, suffix: str
) -> None:
    text = runpy.run_path(str(ROOT / "scripts" / "config_docs.py"))[example]
    result = invoke(["--config", str(write(tmp_path / f"join{suffix}", text))])
    assert result.exit_code == 0, result.output
    [got] = started
    assert (got.name, got.seeds, got.mdns, got.job_copies) == (
        "gpu-box-1",
        ("10.0.0.1:8471", "10.0.0.2:8471"),
        False,
        2,
    )


def test_agents_a_command_starts_itself_get_none_of_the_users_flag_variables() -> None:
    environ = {
        "MESHNODE_SEED": "10.0.0.1:8471",
        "MESHNODE_CONFIG": "/etc/j.toml",
        "MESHNODE_HOME": "/h",
        "PATH": "/bin",
    }
    assert without_flag_vars(environ, join) == {"MESHNODE_HOME": "/h", "PATH": "/bin"}
