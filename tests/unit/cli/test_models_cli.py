"""``meshnode models add``, ``ls`` and ``rm`` in-process: what is refused before any node is asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshnode.cli.main import main
from meshnode.cli.models import store_table
from meshnode.cli.text_table import plain

# Nothing listens on the discard port: the add's "tell the node" step finds no node.
NO_NODE = "http://127.0.0.1:9"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "weights.bin").write_bytes(b"w" * 5000)
    return folder


def add(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["models", "add", *args, "--data-dir", str(tmp_path / "data"), "--node", NO_NODE]
    )
    return result.exit_code, result.stdout, result.stderr


def test_add_writes_into_the_data_dirs_store_and_says_no_node_answered(source: Path, tmp_path: Path) -> None:
    code, out, err = add(tmp_path, str(source), "--name", "m1")
    assert code == 0, err
    assert out.startswith("added m1 (") and "5.0 kB" in out and "2 files" in out
    assert "no node answered" in err
    assert (tmp_path / "data" / "model-store" / "m1" / "unet" / "weights.bin").stat().st_size == 5000


def test_add_json_names_the_model_and_that_no_node_saw_it(source: Path, tmp_path: Path) -> None:
    code, out, _ = add(tmp_path, str(source), "--name", "m1", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["name"] == "m1" and len(body["digest"]) == 64
    assert body["bytes"] == 5002 and body["files"] == 2 and body["node"] == "none"


@pytest.mark.parametrize("name", ["../escape", ".partial", "a/b", "x" * 65])
def test_add_refuses_a_bad_name_before_copying(source: Path, tmp_path: Path, name: str) -> None:
    code, _, err = add(tmp_path, str(source), "--name", name)
    assert code == 1
    assert "model name must be 1-64" in err
    assert not any((tmp_path / "data" / "model-store").iterdir())


def test_add_refuses_a_link_out_of_the_folder(source: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("private")
    (source / "stolen").symlink_to(secret)
    code, _, err = add(tmp_path, str(source), "--name", "m1")
    assert code == 1
    assert "links outside the folder being added" in err
    assert not (tmp_path / "data" / "model-store" / "m1").exists()


def test_add_refuses_a_missing_folder(tmp_path: Path) -> None:
    code, _, err = add(tmp_path, str(tmp_path / "nowhere"), "--name", "m1")
    assert code == 2
    assert "does not exist" in err


def test_ls_and_rm_without_a_node_fail_in_one_line() -> None:
    for args in (["ls"], ["rm", "m1"]):
        result = CliRunner().invoke(main, ["models", *args, "--node", NO_NODE])
        assert result.exit_code == 1
        assert "cannot reach a meshnode" in result.stderr


def test_the_table_shows_holders_and_pull_progress() -> None:
    body = {
        "models": [
            {"name": "sd", "digest": "0123456789abcdef", "bytes": 8_100_000, "holders": ["n0", "n2"],
             "pulling": [{"node": "n1", "done": 1, "total": 4}]},
            {"name": "lost", "digest": "fedcba9876543210", "bytes": 10, "holders": [], "pulling": []},
        ],
        "local": [],
    }  # fmt: skip
    lines = plain(store_table(body)).splitlines()
    assert lines[0].split() == ["NAME", "DIGEST", "SIZE", "HOLDERS", "PULLING"]
    assert lines[1].split() == ["sd", "0123456789abcdef", "8.1", "MB", "n0,", "n2", "n1", "25%"]
    assert lines[2].split() == ["lost", "fedcba9876543210", "10", "B", "none", "alive", "-"]
