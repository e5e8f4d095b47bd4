"""The mesh's join token: a shared secret that makes a node a member.

Every key of the mesh is derived from it (``keyring.py``): a node with another token, or none,
cannot read or write gossip, so it never becomes a member. A token is any string of
``MIN_TOKEN_CHARS`` to ``MAX_TOKEN_CHARS`` printable characters; one made here carries 256 bits
from the operating system's random source.

Where a node's token comes from, first match wins (``resolve_token``):

1. ``--token TOKEN``; 2. ``--token-file PATH``; 3. ``$MESHNODE_TOKEN``;
4. ``token`` in the node's data dir; 5. ``token`` in the machine user's meshnode home
   (``$MESHNODE_HOME`` or ``~/.meshnode``), so several nodes of one user on one machine form one
   mesh with no flags;
6. none anywhere: a new token is made and kept in that home (mode 0600), and the node says how
   another machine joins.
"""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "MAX_TOKEN_CHARS",
    "MIN_TOKEN_CHARS",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "MeshToken",
    "TokenSource",
    "check_token",
    "make_token",
    "read_token_file",
    "resolve_token",
    "write_token_file",
]

TOKEN_ENV = "MESHNODE_TOKEN"
TOKEN_FILE = "token"
# 32 characters: 256 bits as base64, or a passphrase long enough to resist guessing offline.
MIN_TOKEN_CHARS = 32
# Bounds what a file or variable can make the node hold and hash; far above any real token.
MAX_TOKEN_CHARS = 1024
_TOKEN_BYTES = 32  # 256 bits from the OS random source


class TokenSource(enum.Enum):
    """Where a node's token came from (said at start, so an operator knows which file matters)."""

    FLAG = "--token"
    FILE_FLAG = "--token-file"
    ENV = TOKEN_ENV
    DATA_DIR = "the data dir"
    HOME = "the meshnode home"
    CREATED = "created"


@dataclass(frozen=True)
class MeshToken:
    """A checked token and where it came from (the path, for files)."""

    value: str
    source: TokenSource
    path: Path | None = None

    def __repr__(self) -> str:  # never print the secret by accident
        return f"MeshToken(source={self.source.name}, path={self.path})"


def make_token() -> str:
    """A new token: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def check_token(value: str, where: str) -> str:
    """`value` if it is a usable token; ConfigError naming `where` otherwise."""
    if not MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS:
        raise ConfigError(
            f"the token from {where} has {len(value)} characters; a token has "
            f"{MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} (make one with `meshnode token --new`)"
        )
    if not value.isprintable() or value != value.strip():
        raise ConfigError(f"the token from {where} must be printable characters with no surrounding spaces")
    return value


def read_token_file(path: Path) -> str:
    """The token in `path` (one line; a trailing newline is fine); ConfigError if unusable."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_TOKEN_CHARS + 2)
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not UTF-8 text") from None
    return check_token(text, str(path))


def write_token_file(path: Path, value: str, *, replace: bool = True) -> bool:
    """Write `value` to `path`, readable by its owner only, never half-written.

    With ``replace=False`` an existing file wins (False is returned): nodes started together on one
    machine then all use the first token written, not one each.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(value + "\n")
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # atomic, and fails when the file exists
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def resolve_token(
    *,
    token: str | None,
    token_file: Path | None,
    environ: Mapping[str, str],
    data_dir: Path,
    home: Path,
    create: bool,
) -> MeshToken | None:
    """This node's token by the rule in the module docstring; None when there is none and not `create`."""
    if token is not None:
        return MeshToken(check_token(token, "--token"), TokenSource.FLAG)
    if token_file is not None:
        return MeshToken(read_token_file(token_file), TokenSource.FILE_FLAG, token_file)
    if environ.get(TOKEN_ENV):
        return MeshToken(check_token(environ[TOKEN_ENV], f"${TOKEN_ENV}"), TokenSource.ENV)
    for folder, source in ((data_dir, TokenSource.DATA_DIR), (home, TokenSource.HOME)):
        path = folder / TOKEN_FILE
        if path.exists():
            return MeshToken(read_token_file(path), source, path)
    if not create:
        return None
    path = home / TOKEN_FILE
    try:
        created = write_token_file(path, make_token(), replace=False)
    except OSError as exc:
        raise ConfigError(f"cannot keep a new token in {path}: {exc.strerror or exc}") from exc
    if not created:  # another node of this machine made it a moment ago
        return MeshToken(read_token_file(path), TokenSource.HOME, path)
    return MeshToken(read_token_file(path), TokenSource.CREATED, path)
