"""The jobs this node holds, in sqlite: ``<data dir>/jobs.db``, apart from the node's own state.

One row per job: the record packed with msgpack (``JobRecord.to_wire``), plus the columns a listing
or a clean-up filters on. Written before the node acknowledges a copy, so a job survives the
node's restart; read back at start and checked like a copy from the wire (a row that no longer
parses is skipped and logged, never fatal). Calls block: the job service runs them on a thread of
their own, never on the event loop.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import msgpack
import sqlite_utils

from ..errors import StoreError
from ..mesh.jobs import JobRecord, JobWireError

__all__ = ["JOBS_DB_FILENAME", "JobStore"]

log = logging.getLogger(__name__)

JOBS_DB_FILENAME = "jobs.db"


class JobStore:
    """Job records on disk: put, delete, load."""

    def __init__(self, data_dir: Path) -> None:
        """Open (creating if needed) the jobs database in ``data_dir``."""
        self.path = Path(data_dir) / JOBS_DB_FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite_utils.Database(self.path)
            self._db.execute("pragma journal_mode = wal")
            # A commit survives the process being killed (WAL), not the machine losing power before
            # the OS wrote it out: a job is on k nodes before its 202, so an fsync per copy (about a
            # millisecond or more each) buys little; the node's own state (meshnode.db) keeps fsync.
            self._db.execute("pragma synchronous = normal")
            self._db.table("jobs").create(
                {"id": str, "deployment": str, "status": str, "created_ms": int, "record": bytes},
                pk="id",
                not_null=["deployment", "status", "created_ms", "record"],
                if_not_exists=True,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the jobs database {self.path}: {exc}") from exc

    def put(self, records: Iterable[JobRecord]) -> None:
        """Keep these copies (replacing older ones of the same jobs), in one transaction."""
        rows = [
            {
                "id": record.id,
                "deployment": record.deployment,
                "status": record.status.value,
                "created_ms": record.created_ms,
                "record": msgpack.packb(record.to_wire(), use_bin_type=True),
            }
            for record in records
        ]
        if rows:
            # Plain SQL: sqlite-utils' upsert_all reads the table's columns on every call, which
            # made each copy's write cost more than the write itself.
            with self._db.conn:
                self._db.conn.executemany(
                    "insert or replace into jobs (id, deployment, status, created_ms, record)"
                    " values (:id, :deployment, :status, :created_ms, :record)",
                    rows,
                )

    def delete(self, ids: Iterable[str]) -> None:
        """Forget these jobs."""
        with self._db.conn:
            for job_id in ids:
                self._db.execute("delete from jobs where id = ?", [job_id])

    def load(self) -> list[JobRecord]:
        """Every job kept; rows that do not parse are logged and skipped."""
        records = []
        for row in self._db.query("select id, record from jobs"):
            try:
                records.append(JobRecord.from_wire(msgpack.unpackb(row["record"], raw=False)))
            except (JobWireError, ValueError, msgpack.UnpackException) as exc:
                log.warning("skipping job %s in %s: %s", row["id"], self.path, exc)
        return records

    def close(self) -> None:
        """Close the database file."""
        self._db.close()
