"""docs/configuration.md is generated from the config dataclasses and must not go stale."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_page_matches_the_dataclasses() -> None:
    generator = runpy.run_path(str(ROOT / "scripts" / "config_docs.py"))
    expected = generator["render"]()
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, "docs/configuration.md is stale: run python scripts/config_docs.py"


def test_every_knob_is_documented() -> None:
    generator = runpy.run_path(str(ROOT / "scripts" / "config_docs.py"))
    for path, name in (
        (ROOT / "mesh" / "config.py", "MembershipConfig"),
        (ROOT / "node" / "config.py", "AgentConfig"),
    ):
        comments = generator["field_comments"](path, name)
        undocumented = [field for field, text in comments.items() if not text]
        assert not undocumented, f"{name} fields without a comment: {undocumented}"
