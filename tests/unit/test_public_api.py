"""What ``import meshnode`` gives a user: real classes for type checkers, and no heavy imports.

``meshnode/__init__.py`` re-exports its public names lazily (module ``__getattr__``), so that
importing it stays cheap; its ``TYPE_CHECKING`` imports are what type checkers see instead. These
tests keep the two halves in step.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
from mypy import api as mypy_api

import meshnode

# What a user's type checker sees when it reads ``meshnode``, run as a user would (the installed
# package, no project config); ``silent`` keeps mypy's opinions of meshnode's own modules out of it.
MYPY_ARGS = ["--config-file=", "--follow-imports=silent", "--no-error-summary"]


@pytest.fixture(scope="module")
def revealed(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What mypy reveals for ``from meshnode import MeshClient`` and for every lazily exported name.

    One run for all (a cold mypy takes seconds): the class, an instance, then ``sorted(_LAZY)``.
    """
    workdir = tmp_path_factory.mktemp("public_api")
    snippet = workdir / "snippet.py"
    snippet.write_text(
        "import meshnode\n"
        "from meshnode import MeshClient\n"
        "reveal_type(MeshClient)\n"
        "reveal_type(MeshClient('10.0.0.1:8470'))\n"
        + "".join(f"reveal_type(meshnode.{name})\n" for name in sorted(meshnode._LAZY))
    )
    stdout, stderr, status = mypy_api.run([*MYPY_ARGS, f"--cache-dir={workdir / 'cache'}", str(snippet)])
    assert status == 0, stdout + stderr
    return re.findall(r'Revealed type is "(.*)"', stdout)


def test_type_checkers_see_the_client_class_not_any(revealed: list[str]) -> None:
    constructor, instance = revealed[:2]
    assert constructor.endswith("-> meshnode.client.sync.MeshClient")
    assert instance == "meshnode.client.sync.MeshClient"


def test_every_lazy_name_is_typed_as_what_it_resolves_to(revealed: list[str]) -> None:
    names = sorted(meshnode._LAZY)
    assert len(revealed) == 2 + len(names)
    for name, seen in zip(names, revealed[2:], strict=True):
        if inspect.isfunction(getattr(meshnode, name)):  # verify_webhook: its signature, not Any
            assert seen.startswith("def ("), (name, seen)
        else:
            assert seen.endswith(f"-> {meshnode._LAZY[name]}.{name}"), (name, seen)


def test_the_exported_names_are_sorted_and_resolve_lazily() -> None:
    assert meshnode.__all__ == sorted(meshnode.__all__)
    for name in meshnode._LAZY:
        assert getattr(meshnode, name).__module__ == meshnode._LAZY[name]


def test_importing_meshnode_imports_no_heavy_library() -> None:
    heavy = ["httpx", "zmq", "fastapi", "torch", "uvicorn"]
    probe = (
        "import sys, meshnode\n"
        "meshnode.__version__\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({heavy!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
