"""Images kept for ``response_format: "url"``: a file per image, a capability URL, an expiry.

OpenAI answers ``url`` with a link the client fetches later. The node that took the request (the
entry node) keeps each PNG as a file in ``<data dir>/openai-images`` and hands out
``<the scheme and Host the client used>/v1/images/files/<token>.png``:

- the token is 128 random bits (``secrets.token_urlsafe(16)``): unguessable, so the URL itself is
  the permission to read that one image (a capability URL, as OpenAI's own signed links are);
  ``GET /v1/images/files/...`` therefore needs no API key (``mesh/access.py``), which lets the
  link go where a key cannot (an ``<img src>``, a browser, another program). Making one needs the
  key that ``POST /v1/images/generations`` needs;
- a URL is valid ``openai_image_ttl_s`` (node config; an hour by default, as OpenAI's) after the
  image was made, then 404;
- the files take at most ``openai_image_store_bytes`` together: past it the oldest images go
  first, so a burst of requests can shorten how long older links live but never fill the disk.

The file name starts with the first 8 hex digits of the node's id (``<node>-<token>.png``): any
other node asked for it redirects (307) to the node that keeps it, by its gossiped HTTP address, so
a link works on every node of the mesh (``routes.py``). The index lives in memory: a restarted node
forgets its links (it deletes the folder's leftovers when it opens it), so a URL lives at most until
its node restarts. File reads and writes run in a thread, never on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...config import AgentConfig
from ...errors import NotFound, PayloadTooLarge, StoreError

__all__ = ["FILES_PREFIX", "ImageStore"]

FILES_PREFIX = "/v1/images/files/"
_TOKEN_BYTES = 16  # 128 bits
_NAME = re.compile(r"([0-9a-f]{8})-([A-Za-z0-9_-]{22})\.png")
OWNER_CHARS = 8


@dataclass(frozen=True)
class _Kept:
    path: Path
    size: int
    expires: float


class ImageStore:
    """PNG files behind capability URLs, each kept until it expires or room is needed."""

    def __init__(
        self,
        folder: Path,
        *,
        ttl_s: float,
        max_bytes: int,
        owner: str = "0" * OWNER_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.owner = owner[:OWNER_CHARS]  # the node id's first hex digits: where a link points
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._kept: collections.OrderedDict[str, _Kept] = collections.OrderedDict()  # oldest first
        self._bytes = 0

    @classmethod
    def open(cls, folder: Path, *, ttl_s: float, max_bytes: int, owner: str) -> ImageStore:
        """A store in `folder`, emptied of a previous run's files (blocking: call it in a thread)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, ttl_s=ttl_s, max_bytes=max_bytes, owner=owner)

    @classmethod
    async def of_node(cls, config: AgentConfig, node_id: str) -> ImageStore:
        """The node's store, in its data dir's ``openai-images`` folder, opened off the event loop."""
        folder = config.data_dir / "openai-images"
        ttl_s, max_bytes = config.openai_image_ttl_s, config.openai_image_store_bytes
        return await asyncio.to_thread(cls.open, folder, ttl_s=ttl_s, max_bytes=max_bytes, owner=node_id)

    def owner_of(self, name: str) -> str | None:
        """The node-id prefix a URL's file name carries, or None for a name no node made."""
        match = _NAME.fullmatch(name)
        return match[1] if match else None

    async def put(self, png: bytes) -> str:
        """Keep `png`; return the file name of its URL (``<token>.png``)."""
        if len(png) > self.max_bytes:
            raise PayloadTooLarge(
                f"an image of {len(png)} bytes is over the node's image store ({self.max_bytes} bytes)"
            )
        now = self._clock()
        gone = self._expire(now)
        while self._kept and self._bytes + len(png) > self.max_bytes:
            gone.append(self._drop(next(iter(self._kept))))
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        path = self.folder / f"{self.owner}-{token}.png"
        self._kept[token] = _Kept(path, len(png), now + self.ttl_s)
        self._bytes += len(png)
        try:
            await asyncio.to_thread(_replace_files, path, png, gone)
        except OSError as exc:
            if token in self._kept:
                self._drop(token)
            raise StoreError(f"cannot keep the image for its URL: {exc.strerror or exc}") from exc
        return path.name

    async def get(self, name: str) -> tuple[bytes, float]:
        """The PNG behind a URL's file name and its seconds left; NotFound when unknown or expired."""
        match = _NAME.fullmatch(name)
        kept = self._kept.get(match[2]) if match and match[1] == self.owner else None
        now = self._clock()
        if kept is None or kept.expires <= now:
            await asyncio.to_thread(_replace_files, None, b"", self._expire(now))
            raise NotFound("no such image: its link expired, or was never made here")
        try:
            data = await asyncio.to_thread(kept.path.read_bytes)
        except OSError:
            raise NotFound("no such image: it was removed to make room for newer ones") from None
        return data, kept.expires - now

    @property
    def used_bytes(self) -> int:
        """Bytes the kept images take."""
        return self._bytes

    def _expire(self, now: float) -> list[Path]:
        gone = []
        while self._kept:
            token, kept = next(iter(self._kept.items()))
            if kept.expires > now:
                break
            gone.append(self._drop(token))
        return gone

    def _drop(self, token: str) -> Path:
        kept = self._kept.pop(token)
        self._bytes -= kept.size
        return kept.path


def _replace_files(path: Path | None, data: bytes, gone: list[Path]) -> None:
    """Delete `gone`, then write `data` to `path` (in a thread)."""
    for old in gone:
        with contextlib.suppress(OSError):
            old.unlink()
    if path is not None:
        # Written aside and renamed: a reader never sees half an image.
        scratch = path.with_suffix(".part")
        scratch.write_bytes(data)
        scratch.replace(path)
