"""A blocking sealed link to an agent's data port, dialed as a member would (or a stranger with
another token): for tests that send what no meshnode part would send, or must see each frame.

It runs the product's own handshake and frames (``meshnode.trust.sealed``) over a plain socket,
so a test needs no event loop of its own.
"""

from __future__ import annotations

import socket

from zmq.utils import z85

from meshnode.mesh.stream_frames import HEADER_BYTES, frame_header
from meshnode.trust.sealed import ClientHandshake


class MemberLink:
    """One sealed link to the data port at `addr` whose gossiped key is `key`, holding `token`."""

    def __init__(self, addr: str, token: str, key: str, timeout_s: float = 10.0) -> None:
        host, port = addr.rsplit(":", 1)
        self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
        try:
            handshake = ClientHandshake(token, z85.decode(key.encode("ascii")))
            self._write(handshake.hello())
            self._keys = handshake.welcome(self._read())
            if self._keys.receive.open(self._read()) != b"":
                raise ConnectionError("the server's proof was not empty")
            self._write(self._keys.send.seal(b""))
        except BaseException:
            self._sock.close()
            raise

    def send(self, payload: bytes) -> None:
        """Seal and send one envelope's bytes (or any bytes at all)."""
        self._write(self._keys.send.seal(payload))

    def receive(self, timeout_s: float) -> bytes | None:
        """The next payload (heartbeats skipped); None when none came within `timeout_s`."""
        self._sock.settimeout(timeout_s)
        try:
            while True:
                payload = self._keys.receive.open(self._read())
                if payload:
                    return payload
        except TimeoutError:
            return None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MemberLink:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _write(self, body: bytes) -> None:
        self._sock.sendall(frame_header(len(body)) + body)

    def _read(self) -> bytes:
        size = int.from_bytes(self._exactly(HEADER_BYTES), "big")
        return self._exactly(size)

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            piece = self._sock.recv(size - len(data))
            if not piece:
                raise ConnectionError("the node closed the link")
            data += piece
        return bytes(data)
