"""What a pull is measured against, in the same run (``bench/models.py`` part A): the same files
copied by the kernel, copied with every check a pull makes, and streamed over ZeroMQ with and
without the data plane's encryption (CURVE), with nothing checked or written.

The streams are the ceiling of any transfer on the data plane: a holder reads and sends, a puller
receives, and libzmq's I/O threads encrypt and decrypt on the way. A pull does all that and more
(a hash of every piece, a write), so it cannot pass the CURVE stream's rate on this machine.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

import zmq

__all__ = ["copy_rate", "stream_rate", "verified_copy_rate"]

# A holder sends a chunk as pieces of this size (node/models/chunk_server.py).
PIECE_BYTES = 256 * 1024


def copy_rate(source: Path, root: Path) -> float:
    """Bytes per second of shutil.copyfile of every file of `source` into a fresh folder."""
    target = root / f"copy-{time.monotonic_ns()}"
    target.mkdir()
    files = sorted(source.iterdir())
    began = time.perf_counter()
    for path in files:
        shutil.copyfile(path, target / path.name)
    took = time.perf_counter() - began
    shutil.rmtree(target)
    return _size(files) / took


def verified_copy_rate(source: Path, root: Path, chunk_bytes: int = 4 * 1024 * 1024) -> float:
    """Bytes per second of a copy that checks what a pull checks, on this one process and core.

    Each 4 MiB piece is read, hashed (sha256) and written, then every written file is hashed again
    whole, as a pull checks each chunk against its manifest and the install checks each file: the
    least a hash-checked transfer does, without a network, encryption or a second process.
    """
    target = root / f"verified-{time.monotonic_ns()}"
    target.mkdir()
    files = sorted(source.iterdir())
    began = time.perf_counter()
    for path in files:
        with path.open("rb") as reading, (target / path.name).open("wb") as writing:
            while piece := reading.read(chunk_bytes):
                hashlib.sha256(piece).digest()
                writing.write(piece)
        whole = hashlib.sha256()
        with (target / path.name).open("rb") as written:
            while piece := written.read(chunk_bytes):
                whole.update(piece)
    took = time.perf_counter() - began
    shutil.rmtree(target)
    return _size(files) / took


def stream_rate(source: Path, encrypted: bool) -> float:
    """Bytes per second of every file of `source` read and sent in pieces from one ZeroMQ context
    to another over TCP on 127.0.0.1, CURVE-encrypted when `encrypted`, received and dropped."""
    files = sorted(source.iterdir())
    sending, receiving = zmq.Context(), zmq.Context()
    receiver, sender = receiving.socket(zmq.PULL), sending.socket(zmq.PUSH)
    try:
        if encrypted:
            server_public, server_secret = zmq.curve_keypair()
            client_public, client_secret = zmq.curve_keypair()
            receiver.curve_server = True
            receiver.curve_secretkey, receiver.curve_publickey = server_secret, server_public
            sender.curve_serverkey = server_public
            sender.curve_publickey, sender.curve_secretkey = client_public, client_secret
        port = receiver.bind_to_random_port("tcp://127.0.0.1")
        sender.connect(f"tcp://127.0.0.1:{port}")
        pieces = sum(-(-path.stat().st_size // PIECE_BYTES) for path in files)

        def send() -> None:
            for path in files:
                with path.open("rb", buffering=0) as reading:
                    while piece := reading.read(PIECE_BYTES):
                        sender.send(piece, copy=False)

        thread = threading.Thread(target=send, daemon=True)
        began = time.perf_counter()
        thread.start()
        for _ in range(pieces):
            receiver.recv(copy=False)
        took = time.perf_counter() - began
        thread.join()
    finally:
        receiver.close(linger=0)
        sender.close(linger=0)
        sending.term()
        receiving.term()
    return _size(files) / took


def _size(files: list[Path]) -> int:
    return sum(path.stat().st_size for path in files)
