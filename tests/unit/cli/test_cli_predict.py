"""``meshnode predict`` without a mesh: every bad argument is a usage error, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from meshnode.cli import main


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["predict", *args], input=stdin)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["echo", "[1, 2]"], "must be a JSON object"),
        (["echo", "{nope"], "not valid JSON"),
        (["echo", "--stream", "--output", "out.png"], "--stream and --output"),
        (["echo", "--discover", "--node", "http://127.0.0.1:1"], "--discover and --node"),
        (["echo", "--node", "ftp://127.0.0.1:1"], "--node"),
        (["echo", "--timeout", "0"], "--timeout"),
        (["echo", "--discover", "--interface", "not-an-ip"], "--interface"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], complaint: str) -> None:
    code, output = run(*args)
    assert code == 2, output
    assert complaint in output


def test_a_body_from_standard_input_is_checked_too() -> None:
    code, output = run("echo", "-", stdin="[]")
    assert code == 2 and "must be a JSON object" in output
