"""The node's persisted state: one sqlite file, ``<data_dir>/meshnode.db``.

Today it holds the node's identity (table ``identity``, a single row with id 1): the node id, fixed for
the life of the data directory, and the last incarnation number used. SWIM orders a node's claims about
itself by incarnation, so every start must come back with a number higher than any it gossiped before;
``load_identity`` therefore bumps the stored value on every call, inside one write transaction so two
processes opening the same directory never hand out the same number. Later tables (deployments) live
in the same file, one table per concept.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .errors import StoreError

__all__ = ["DB_FILENAME", "Identity", "NodeStore", "StoreError"]

DB_FILENAME = "meshnode.db"

# The identity table always holds exactly this one row.
_IDENTITY_ROW_ID = 1


@dataclass(frozen=True)
class Identity:
    """Who this node is: a stable id and the incarnation it starts this run with."""

    node_id: str
    incarnation: int


class NodeStore:
    """The node's sqlite database inside its data directory."""

    def __init__(self, data_dir: Path) -> None:
        """Open (creating if needed) ``data_dir`` and the database file inside it."""
        self.path = Path(data_dir) / DB_FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {self.path.parent}: {exc}") from exc
        try:
            self._db = sqlite_utils.Database(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open node database {self.path}: {exc}") from exc
        try:
            self._db.table("identity").create(
                {"id": int, "node_id": str, "incarnation": int},
                pk="id",
                not_null=["node_id", "incarnation"],
                if_not_exists=True,
            )
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(
                f"node database {self.path} is unreadable ({exc}); move it away to start as a new node"
            ) from exc

    def load_identity(self) -> Identity:
        """Return the node id and a fresh incarnation, higher than any returned before for this file."""
        try:
            with self._write_transaction():
                rows = list(
                    self._db.query(
                        "select node_id, incarnation from identity where id = ?", [_IDENTITY_ROW_ID]
                    )
                )
                if not rows:
                    identity = Identity(node_id=uuid.uuid4().hex, incarnation=0)
                    self._db.table("identity").insert(
                        {"id": _IDENTITY_ROW_ID, "node_id": identity.node_id, "incarnation": 0}
                    )
                    return identity
                identity = Identity(node_id=rows[0]["node_id"], incarnation=rows[0]["incarnation"] + 1)
                self._db.execute(
                    "update identity set incarnation = ? where id = ?",
                    [identity.incarnation, _IDENTITY_ROW_ID],
                )
                return identity
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read identity from {self.path}: {exc}") from exc

    def save_incarnation(self, incarnation: int) -> None:
        """Record an incarnation reached while running (refuting a suspicion); never lowers the value."""
        try:
            # max() in SQL keeps the raise-only rule atomic against a concurrent writer.
            cursor = self._db.execute(
                "update identity set incarnation = max(incarnation, ?) where id = ?",
                [incarnation, _IDENTITY_ROW_ID],
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save incarnation to {self.path}: {exc}") from exc
        if cursor.rowcount == 0:
            raise StoreError(f"no identity in {self.path} yet: call load_identity() first")

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock before the read, so two processes sharing a data directory
        # cannot both read incarnation N and both start with N + 1 (a plain BEGIN would let them).
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
