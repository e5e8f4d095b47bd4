"""Every test run keeps meshnode's per-user files in a folder of its own.

Agents started without a token find or make one in the meshnode home (``$MESHNODE_HOME``, by default
``~/.meshnode``; node/trust/token.py). Pointing it into pytest's temporary folder for the whole run
keeps the tests from writing a token into the home of whoever runs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def meshnode_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """$MESHNODE_HOME in this run's temporary folder, for this process and the agents it starts."""
    before = os.environ.get("MESHNODE_HOME")
    os.environ["MESHNODE_HOME"] = str(tmp_path_factory.mktemp("meshnode-home"))
    yield
    if before is None:
        del os.environ["MESHNODE_HOME"]
    else:
        os.environ["MESHNODE_HOME"] = before
