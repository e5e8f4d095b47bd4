"""Fixtures for tests with real agents (the helpers themselves live in ``agents.py``)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agents import Mesh


@pytest.fixture
def start_mesh(tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """``start_mesh(size, **options)``: a running ``Mesh`` whose agents are stopped after the test."""
    counter = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(size: int, **options: Any) -> Mesh:
            return stack.enter_context(Mesh(tmp_path / f"mesh{next(counter)}", size, **options))

        yield start
