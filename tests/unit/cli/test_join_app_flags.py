"""``meshnode join --app-dir DIR ... --allow-external-apps``: from flags to the agent's config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshnode.cli import main
from meshnode.config import AgentConfig


def test_app_dirs_and_external_apps_reach_the_config(started: list[AgentConfig], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = ["join", "--app-dir", str(tmp_path / "a"), "--app-dir", str(tmp_path / "b")]
    result = CliRunner().invoke(main, [*args, "--allow-external-apps"])
    assert result.exit_code == 0, result.output
    [config] = started
    assert config.app_dirs == (tmp_path / "a", tmp_path / "b")
    assert config.allow_external_apps is True


def test_by_default_no_app_folder_and_no_external_apps(started: list[AgentConfig]) -> None:
    assert CliRunner().invoke(main, ["join", "--name", "n1"]).exit_code == 0
    [config] = started
    assert (config.app_dirs, config.allow_external_apps) == ((), False)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_app_dir_that_is_not_a_folder_exits_2_naming_the_flag(
    started: list[AgentConfig], tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("")
    result = CliRunner().invoke(main, ["join", "--app-dir", str(target)])
    assert result.exit_code == 2, result.output
    assert "--app-dir" in result.output and "Traceback" not in result.output
    assert started == []
