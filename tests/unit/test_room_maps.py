"""Every room's ``__init__`` docstring maps its files: each module of a package is named in it.

A reader finds a concern by opening a folder's ``__init__`` (DESIGN.md, "Layout and rooms"); a module
added without a line there is one the map does not show. Checked on the syntax trees, no imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = sorted(
    init.parent
    for folder in ("node", "mesh", "inference", "apps")
    for init in (ROOT / folder).rglob("__init__.py")
)


@pytest.mark.parametrize("room", ROOMS, ids=lambda room: str(room.relative_to(ROOT)))
def test_every_module_of_a_room_is_on_its_map(room: Path) -> None:
    doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
    unnamed = [
        path.name for path in sorted(room.glob("*.py")) if path.name != "__init__.py" and path.name not in doc
    ]
    assert not unnamed, f"{room.relative_to(ROOT)}/__init__.py does not name {', '.join(unnamed)}"
