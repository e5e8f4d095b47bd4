"""Where a node's token comes from, how it is kept, and what is refused (node/trust/token.py)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from meshnode.errors import ConfigError
from meshnode.trust.token import (
    MIN_TOKEN_CHARS,
    TOKEN_ENV,
    MeshToken,
    TokenSource,
    check_token,
    make_token,
    read_token_file,
    resolve_token,
    write_token_file,
)

GOOD = "g" * MIN_TOKEN_CHARS


def resolve(tmp_path: Path, **given: object) -> MeshToken | None:
    options: dict[str, object] = {
        "token": None,
        "token_file": None,
        "environ": {},
        "data_dir": tmp_path / "data",
        "home": tmp_path / "home",
        "create": True,
    }
    options.update(given)
    return resolve_token(**options)  # type: ignore[arg-type]


def test_a_made_token_carries_256_random_bits_and_is_accepted() -> None:
    tokens = {make_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) >= 43 and check_token(token, "test") == token


@pytest.mark.parametrize(
    "bad", ["", "short", "x" * (MIN_TOKEN_CHARS - 1), " " + GOOD, GOOD + "\n", GOOD + "\x00"]
)
def test_unusable_tokens_are_refused_with_the_source_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="--token"):
        check_token(bad, "--token")


def test_a_node_with_no_token_makes_one_in_the_home_readable_by_its_owner_only(tmp_path: Path) -> None:
    made = resolve(tmp_path)
    assert made is not None and made.source is TokenSource.CREATED
    assert made.path == tmp_path / "home" / "token"
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    assert read_token_file(made.path) == made.value
    again = resolve(tmp_path)
    assert again is not None and again.value == made.value and again.source is TokenSource.HOME


def test_the_first_match_wins_flag_file_env_data_dir_home(tmp_path: Path) -> None:
    values = {name: name * 40 for name in "abcde"}
    write_token_file(tmp_path / "file", values["b"])
    write_token_file(tmp_path / "data" / "token", values["d"])
    write_token_file(tmp_path / "home" / "token", values["e"])
    environ = {TOKEN_ENV: values["c"]}
    order = [
        ({"token": values["a"], "token_file": tmp_path / "file", "environ": environ}, "a", TokenSource.FLAG),
        ({"token_file": tmp_path / "file", "environ": environ}, "b", TokenSource.FILE_FLAG),
        ({"environ": environ}, "c", TokenSource.ENV),
        ({}, "d", TokenSource.DATA_DIR),
    ]
    for given, expected, source in order:
        found = resolve(tmp_path, **given)
        assert found is not None and (found.value, found.source) == (values[expected], source)
    (tmp_path / "data" / "token").unlink()
    home = resolve(tmp_path)
    assert home is not None and (home.value, home.source) == (values["e"], TokenSource.HOME)


def test_without_create_a_missing_token_is_none_and_nothing_is_written(tmp_path: Path) -> None:
    assert resolve(tmp_path, create=False) is None
    assert not (tmp_path / "home").exists()


def test_nodes_started_together_on_one_machine_end_up_with_one_token(tmp_path: Path) -> None:
    found: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        token = resolve(tmp_path)
        assert token is not None
        found.append(token.value)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1
    assert read_token_file(tmp_path / "home" / "token") == found[0]
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["token"]  # no temporary files left


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "characters"), (b"\xff" * 40, "UTF-8"), (b"x" * 5000, "characters"), (b"short\n", "characters")],
)
def test_a_bad_token_file_is_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason):
        read_token_file(path)


def test_a_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the token file"):
        resolve(tmp_path, token_file=tmp_path / "nowhere")


def test_the_token_never_shows_in_a_repr(tmp_path: Path) -> None:
    made = resolve(tmp_path)
    assert made is not None and made.value not in repr(made)


def test_a_token_file_with_a_windows_line_end_is_read(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(GOOD.encode() + b"\r\n")
    assert read_token_file(path) == GOOD
    os.chmod(path, 0o644)  # readable by others: still read (the operator's choice), not rewritten
    assert read_token_file(path) == GOOD
