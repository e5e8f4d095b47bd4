"""The node's persisted state: one sqlite file, ``<data_dir>/meshnode.db``.

Today it holds the node's identity (table ``identity``, a single row with id 1): the node id, fixed for
the life of the data directory, and the last incarnation number used. SWIM orders a node's claims about
itself by incarnation, so every start must come back with a number higher than any it gossiped before;
``load_identity`` therefore bumps the stored value on every call, inside one write transaction so two
processes opening the same directory never hand out the same number.

Table ``deployments`` holds the node's copy of the mesh-wide deployment table (``mesh/records.py``):
one row per name, the winning record, tombstones included, so a restarted node comes back knowing
every deployment (and every removal) it knew, before it hears from anyone. A row that no longer
validates is skipped with a warning, never fatal: gossip brings the record back.

Table ``api_keys`` holds the mesh's API keys (``mesh/access.py``): their digests, names, scopes and
whether they are revoked, never a secret; revoked keys stay, so a restarted node cannot bring one back.

The file is checked before anything is written to it (``_check_file``): a data directory without a
``meshnode.db`` is a new node, but a file that is there and cannot be read as this node's state (zero
bytes after a crash or a full disk, garbage, a damaged image, another program's database, or one
written by a newer meshnode, ``PRAGMA user_version`` above ``SCHEMA_VERSION``) stops the start with
``StoreError`` naming the file: starting over would silently forget the node's identity and
deployments, so only the user may decide that, by moving the file aside.

Incarnations and stamps are sqlite ``INTEGER`` (an int64), which holds every value up to their
documented maxima (``mesh/bounds.py``). A value outside them is refused with ``StoreError`` before
anything is written; at the maximum incarnation a restart keeps it rather than overflow (peers hold
a node's incarnation far below it: see ``bounds.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .errors import StoreError
from .mesh.access import ApiKey
from .mesh.bounds import MAX_INCARNATION, MAX_STAMP, in_range
from .mesh.deployment import DeploymentSpec, SpecError, check_name
from .mesh.records import Record
from .mesh.types import NodeId

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "Identity", "NodeStore", "StoreError"]

DB_FILENAME = "meshnode.db"
#: ``PRAGMA user_version`` of the tables below; raised by a change an older meshnode cannot read.
#: Files from before it was kept say 0 and hold the same tables.
SCHEMA_VERSION = 1
log = logging.getLogger(__name__)

# The identity table always holds exactly this one row.
_IDENTITY_ROW_ID = 1
# The columns each table of ours needs, to tell this node's file from another program's.
_COLUMNS = {
    "identity": {"id", "node_id", "incarnation"},
    "deployments": {"name", "stamp", "origin", "spec"},
    "api_keys": {"id", "name", "scope", "digest", "created_ms", "revoked"},
}


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
        if self.path.exists() and self.path.stat().st_size == 0:
            # sqlite would take an empty file for a new database: the node would forget who it was.
            raise StoreError(self._refusal("is empty (0 bytes; a crash or a full disk?)"))
        try:
            self._db = sqlite_utils.Database(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open node database {self.path}: {exc}") from exc
        try:
            self._check_file()
        except sqlite3.Error as exc:  # not an sqlite file, or a damaged one
            self._db.close()
            raise StoreError(self._refusal(f"is unreadable ({exc})")) from exc
        except StoreError:
            self._db.close()
            raise
        try:
            self._db.table("identity").create(
                {"id": int, "node_id": str, "incarnation": int},
                pk="id",
                not_null=["node_id", "incarnation"],
                if_not_exists=True,
            )
            self._db.table("deployments").create(
                {"name": str, "stamp": int, "origin": str, "spec": str},
                pk="name",
                not_null=["stamp", "origin"],
                if_not_exists=True,
            )
            # Marks a file from before versions were kept (0) as this layout, which it is.
            self._db.execute(f"pragma user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:  # a read-only file or directory, a full disk
            self._db.close()
            raise StoreError(f"cannot write node database {self.path}: {exc}") from exc

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
                saved = rows[0]["incarnation"]
                if not in_range(saved, MAX_INCARNATION):
                    raise StoreError(
                        f"{self.path} holds incarnation {saved!r}, outside [0, {MAX_INCARNATION}]"
                    )
                identity = Identity(node_id=rows[0]["node_id"], incarnation=min(saved + 1, MAX_INCARNATION))
                self._db.execute(
                    "update identity set incarnation = ? where id = ?",
                    [identity.incarnation, _IDENTITY_ROW_ID],
                )
                return identity
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read identity from {self.path}: {exc}") from exc

    def save_incarnation(self, incarnation: int) -> None:
        """Record an incarnation reached while running (refuting a suspicion); never lowers the value."""
        if not in_range(incarnation, MAX_INCARNATION):
            raise StoreError(f"incarnation {incarnation!r} is outside [0, {MAX_INCARNATION}]: not saved")
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

    def save_record(self, record: Record) -> None:
        """Keep the winning record of one deployment (a tombstone has no spec)."""
        if not in_range(record.stamp, MAX_STAMP):
            raise StoreError(
                f"deployment {record.name!r} is stamped {record.stamp!r}, outside [0, {MAX_STAMP}]"
            )
        spec = None if record.spec is None else json.dumps(record.spec.wire)
        row = {"name": record.name, "stamp": record.stamp, "origin": record.origin, "spec": spec}
        try:
            self._db.table("deployments").upsert(row, pk="name")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save deployment {record.name!r} to {self.path}: {exc}") from exc

    def forget_records(self, names: list[str]) -> None:
        """Drop expired tombstones."""
        try:
            for name in names:
                self._db.execute("delete from deployments where name = ?", [name])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete deployments from {self.path}: {exc}") from exc

    def load_records(self) -> list[Record]:
        """Every deployment record saved here; rows that no longer validate are skipped."""
        try:
            rows = list(self._db.query("select name, stamp, origin, spec from deployments order by name"))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read deployments from {self.path}: {exc}") from exc
        records = []
        for row in rows:
            try:
                if not in_range(row["stamp"], MAX_STAMP):
                    raise ValueError(f"stamp {row['stamp']!r} is outside [0, {MAX_STAMP}]")
                spec = None if row["spec"] is None else DeploymentSpec.from_wire(json.loads(row["spec"]))
                records.append(Record(check_name(row["name"]), row["stamp"], NodeId(row["origin"]), spec))
            except (SpecError, ValueError, TypeError) as exc:
                log.warning("skipping saved deployment %r: %s", row["name"], exc)
        return records

    def save_key(self, key: ApiKey) -> None:
        """Keep one API key (its digest, never a secret), revoked or not."""
        row = {
            "id": key.id,
            "name": key.name,
            "scope": key.scope.value,
            "digest": key.digest.hex(),
            "created_ms": key.created_ms,
            "revoked": int(key.revoked),
        }
        try:
            self._db.table("api_keys").upsert(row, pk="id")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save API key {key.id} to {self.path}: {exc}") from exc

    def load_keys(self) -> list[ApiKey]:
        """Every API key saved here; rows that no longer validate are skipped."""
        if not self._db.table("api_keys").exists():
            return []
        query = "select id, name, scope, digest, created_ms, revoked from api_keys order by id"
        try:
            rows = list(self._db.query(query))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read API keys from {self.path}: {exc}") from exc
        keys = []
        for row in rows:
            try:
                digest = bytes.fromhex(row["digest"])
                fields = [
                    row["id"],
                    row["name"],
                    row["scope"],
                    digest,
                    row["created_ms"],
                    row["revoked"] == 1,
                ]
                keys.append(ApiKey.from_wire(fields))
            except (ValueError, TypeError) as exc:
                log.warning("skipping saved API key %r: %s", row["id"], exc)
        return keys

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

    def _check_file(self) -> None:
        """Raise StoreError for a file that is not this node's state in a layout this meshnode reads."""
        problems = [row[0] for row in self._db.execute("pragma quick_check").fetchall()]
        if problems != ["ok"]:
            raise StoreError(self._refusal(f"is damaged ({'; '.join(map(str, problems[:3]))})"))
        version = self._db.execute("pragma user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            newer = (
                f"was written by a newer meshnode (schema {version}; this one reads up to {SCHEMA_VERSION})"
            )
            raise StoreError(self._refusal(newer, first_way="run the meshnode that wrote it, or "))
        tables = set(self._db.table_names())
        for table in sorted(tables & _COLUMNS.keys()):
            missing = _COLUMNS[table] - set(self._db[table].columns_dict)
            if missing:
                raise StoreError(self._refusal(f"has a table {table!r} without {', '.join(sorted(missing))}"))
        if tables and "identity" not in tables:
            raise StoreError(
                self._refusal(f"holds no node identity (its tables: {', '.join(sorted(tables))})")
            )

    def _refusal(self, problem: str, *, first_way: str = "") -> str:
        """Why the node does not start on this file, and the way out, which is the user's to take."""
        return (
            f"node database {self.path} {problem}. The node did not start and changed nothing: "
            f"{first_way}to start as a new node (a new id, no saved deployments) move the file aside, "
            f"e.g. mv {self.path} {self.path}.broken"
        )
