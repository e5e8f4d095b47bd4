"""The tables every node holds a copy of, gossiped with membership: deployments and API keys.

Both ride on membership's dissemination: a version that wins here is queued like membership news,
and every push-pull carries both tables whole, so a change reaches every node and a healed
partition merges both sides. Each table's merge is commutative, associative and idempotent, so
every node that saw the same versions holds the same table:

- deployments (``records.py``): last writer wins by hybrid-logical-clock stamp, with tombstones;
  a record stamped too far past this node's clock is refused (``admission.py``);
- API keys (``access.py``): a key is immutable except for revocation, which is final, so a key
  revoked on any node stays revoked everywhere whatever order versions arrive in. At most
  ``MAX_KEYS`` are held; more are refused and counted.
- the keyring (``keyring_record.py``): the mesh's tokens, one record, newest stamp wins, written
  by the steps of a token rotation; refused like a deployment record when stamped too far ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .access import MAX_KEYS, ApiKey, KeyTable
from .admission import Admission
from .bounds import stamp_ahead
from .deployment import DeploymentSpec
from .effects import Effect, KeyChanged, KeyringChanged, RecordChanged
from .keyring_record import KeyringRecord
from .records import COUNTER_BITS, DeploymentTable, Record
from .types import NodeId

__all__ = ["Shared", "SharedTables"]

# One gossiped item of a shared table.
Shared = Record | ApiKey | KeyringRecord


class SharedTables:
    """One node's copy of the deployment and key tables, and the rules for taking versions in."""

    def __init__(self, node_id: NodeId, admission: Admission, push: Callable[[Shared], None]) -> None:
        self.deployments = DeploymentTable()
        self.keys = KeyTable()
        self.keyring: KeyringRecord | None = None  # None until a rotation writes one
        self._node_id = node_id
        self._admission = admission
        self._push = push  # queue news for every peer (membership's dissemination)
        self.refused = admission.refused

    def declare(self, name: str, spec: DeploymentSpec | None, wall_ms: int) -> list[Effect]:
        """Write a deployment record here (spec None removes it) and gossip it."""
        record = self.deployments.write(name, spec, self._node_id, wall_ms)  # a local write always wins
        self._push(record)
        return [RecordChanged(record)]

    def merge_record(self, record: Record, wall_ms: int) -> list[Effect]:
        """Take a record (from the wire or the node's database) unless stamped too far past `wall_ms`."""
        # Equal to what we hold: nothing new. Checked first, as merge's tie-break encodes both specs.
        fresh = self.deployments.get(record.name) != record and self._admission.record(record, wall_ms)
        if not (fresh and self.deployments.merge(record)):
            return []
        self._push(record)
        return [RecordChanged(record)]

    def merge_key(self, key: ApiKey) -> list[Effect]:
        """Take an API key (made or revoked here, gossiped, or restored); gossip it if it is news."""
        if key.id not in self.keys.keys and len(self.keys.keys) >= MAX_KEYS:
            self.refused["keys_full"] += 1
            return []
        if not self.keys.merge(key):
            return []
        self._push(key)
        return [KeyChanged(key)]

    def write_keyring(self, tokens: tuple[str, ...], wall_ms: int) -> list[Effect]:
        """A rotation step made here: the tokens every node should hold from now on, primary first."""
        record = KeyringRecord(tokens, self.deployments.clock.stamp(wall_ms), self._node_id)
        return self.merge_keyring(record, wall_ms)

    def merge_keyring(self, record: KeyringRecord, wall_ms: int) -> list[Effect]:
        """Take a keyring record if it is newer than the one held and not stamped too far ahead."""
        if stamp_ahead(record.stamp >> COUNTER_BITS, wall_ms, self._admission.max_offset_ms):
            self.refused["stamp_ahead"] += 1
            return []
        if not record.newer_than(self.keyring):
            return []
        self.deployments.clock.observe(record.stamp)
        self.keyring = record
        self._push(record)
        return [KeyringChanged(record)]

    def merge(self, item: Shared, wall_ms: int) -> list[Effect]:
        """Take one gossiped item of any table."""
        match item:
            case Record():
                return self.merge_record(item, wall_ms)
            case ApiKey():
                return self.merge_key(item)
            case KeyringRecord():
                return self.merge_keyring(item, wall_ms)

    def take(self, items: Iterable[Shared], wall_ms: int) -> list[Effect]:
        """Everything new in a peer's full state (push-pull)."""
        effects: list[Effect] = []
        for item in items:
            effects.extend(self.merge(item, wall_ms))
        return effects

    def snapshot(self) -> tuple[tuple[Record, ...], tuple[ApiKey, ...], KeyringRecord | None]:
        """Every table whole, for a push-pull."""
        return tuple(self.deployments.all()), tuple(self.keys.all()), self.keyring
