"""A model in the store survives a power cut: its bytes reach the disk before its name appears.

A power cut cannot be made here (no device mapper in this kernel for dm-flakey), so the test watches
what the store asks of the kernel: a real process adds, installs and removes models under
``strace``, and the order of its ``fsync`` and ``rename`` calls is checked. Every file and folder of
a model is flushed before the rename that makes it the model, and the store's folder after it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (scripts/setup.sh installs it)"
)

# Adds `tiny` (a copy), installs `pulled` from a partial folder as a pull does, replaces `tiny`
# with other bytes, removes `pulled`.
SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import sys
    from pathlib import Path
    from meshnode.models.store import ModelStore
    from meshnode.models.hashing import hash_file
    from meshnode.mesh.model_manifest import MIN_CHUNK_BYTES, Manifest

    root = Path(sys.argv[1])
    store = ModelStore(root / "model-store")
    store.scan()
    store.add("tiny", root / "src", chunk_bytes=MIN_CHUNK_BYTES)
    partial = store.partial_dir("0" * 64)
    (partial / "sub").mkdir(parents=True)
    (partial / "sub" / "weights.bin").write_bytes(b"w" * 9000)
    (partial / "config.json").write_bytes(b"{}")
    weights = hash_file(partial / "sub" / "weights.bin", MIN_CHUNK_BYTES)
    entries = [dataclasses.replace(weights, path="sub/weights.bin")]
    entries.append(hash_file(partial / "config.json", MIN_CHUNK_BYTES))
    store.install("pulled", Manifest.create(entries, chunk_bytes=MIN_CHUNK_BYTES), partial)
    (root / "src" / "model_index.json").write_bytes(b'{"name": "tiny", "v": 2}')
    store.add("tiny", root / "src", chunk_bytes=MIN_CHUNK_BYTES)
    assert store.remove("pulled")
    """
)
CALL = re.compile(r"^(?:\d+\s+)?(\w+)\((.*)\)\s+= (-?\d+)")
FD_PATH = re.compile(r"<([^>]*)>")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


Calls = list[tuple[str, list[str]]]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Calls, str]:
    """SCRIPT's fsync and rename calls, in order, with the paths they name; and the store's folder."""
    tmp_path = tmp_path_factory.mktemp("durable")
    return trace(tmp_path), str((tmp_path / "model-store").resolve())


def trace(tmp_path: Path) -> Calls:
    """Run SCRIPT under strace: its fsync and rename calls, in order, with the paths they name."""
    source = tmp_path / "src"
    (source / "unet").mkdir(parents=True)
    (source / "model_index.json").write_bytes(b'{"name": "tiny"}')
    (source / "unet" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    log = tmp_path / "strace.log"
    command = ["strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(log)]
    command += ["-e", "trace=fsync,fdatasync,rename,renameat,renameat2"]
    subprocess.run([*command, sys.executable, "-c", SCRIPT, str(tmp_path)], check=True, timeout=120)
    calls = []
    for line in log.read_text().splitlines():
        match = CALL.match(line)
        if match is None or match.group(3) != "0":
            continue
        name, arguments = match.group(1), match.group(2)
        if name in ("fsync", "fdatasync"):
            calls.append(("fsync", FD_PATH.findall(arguments)))
        else:
            calls.append(("rename", QUOTED.findall(arguments)))
    return calls


def placed(calls: Calls, target: str) -> list[int]:
    """Where in `calls` a folder was renamed to `target`."""
    return [at for at, (name, paths) in enumerate(calls) if name == "rename" and paths[-1] == target]


def test_every_file_and_folder_is_flushed_before_its_model_appears(traced: tuple[Calls, str]) -> None:
    calls, store = traced
    synced_at = [(at, paths[0]) for at, (name, paths) in enumerate(calls) if name == "fsync"]
    expected = {
        f"{store}/tiny": ["model_index.json", "unet/weights.bin", ".meshnode-manifest.json", "unet", ""],
        f"{store}/pulled": ["sub/weights.bin", "config.json", ".meshnode-manifest.json", "sub", ""],
    }
    seen = 0
    for target, inside in expected.items():
        for at in placed(calls, target):
            seen += 1
            built = calls[at][1][0]  # the folder renamed into place
            before = {path for when, path in synced_at if when < at}
            for relative in inside:
                path = f"{built}/{relative}".rstrip("/")
                assert path in before, f"{path} was not flushed before it became {target}"
            after = next((path for when, path in synced_at if when > at), None)
            assert after == store, f"the store's folder was not flushed after {target} appeared"
    assert seen == 3  # tiny twice (added, then replaced), pulled once


def test_a_removed_model_stays_removed(traced: tuple[Calls, str]) -> None:
    calls, store = traced
    removed = [
        at
        for at, (name, paths) in enumerate(calls)
        if name == "rename" and paths[0] == f"{store}/pulled" and "/.tmp/rm-pulled-" in paths[-1]
    ]
    assert len(removed) == 1
    after = [paths[0] for name, paths in calls[removed[0] + 1 :] if name == "fsync"]
    assert after[:1] == [store]
