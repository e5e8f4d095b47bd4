"""Who holds a job, who runs it, what to do with it now, and in which order queued jobs start.

Pure decisions over a job record and the live members; ``node/serving/jobs.py`` carries them out.

- **Holders** (``holders``): the ``k`` nodes a job's copies live on, by rendezvous hashing of its id
  over the live members (``placement.score``), as replicas are placed. Every node computes the same
  list from the same view with no coordination; when a holder dies the next in rank replaces it,
  and only the jobs that one held move. ``holders_may_move`` says, from a job's last holders alone,
  whether a change of the live set can have moved them, so a node holding many ended jobs ranks
  again only those (ranking one job costs a hash per live member: 1 ms at 1,000).
- **The runner** is the first node of that ranking that is alive or suspected. It starts the job
  when its deployment has room (``next_to_start``), writes each change, delivers the webhook. When
  it dies, the next in rank takes over (``decide``): a queued job starts there; a running one runs
  again (``attempts`` + 1) while attempts remain and its app is safe to rerun, and fails with the
  reason otherwise. A runner that is only suspected keeps its jobs, queued and running: taking them
  over at once would run a job twice on every brief suspicion; they move when the failure detector
  declares it dead.
- **Order** (``queue_positions``, ``next_to_start``): per deployment, first come first served by
  creation time (then id, so every node agrees), and each deployment has its own budget of jobs
  running at once on a runner, so a flood of one deployment's jobs never holds up another's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from .jobs import JobRecord, JobStatus
from .placement import score
from .types import NodeId

__all__ = [
    "Action",
    "Decision",
    "decide",
    "delivery_due",
    "expired",
    "holders",
    "holders_may_move",
    "next_to_start",
    "queue_positions",
    "ranking",
    "runner_of",
]


class Action(Enum):
    """What this node should do with a job it holds, now."""

    WAIT = "wait"  # not ours to run, or already running, or ended
    START = "start"  # queued, and this node is its runner
    RERUN = "rerun"  # its runner died mid-run; run it again here
    FAIL = "fail"  # its runner died mid-run and it may not run again
    CANCEL = "cancel"  # queued and a cancel was asked for: it ends cancelled at once


@dataclass(frozen=True, slots=True)
class Decision:
    """An action and, for FAIL, why."""

    action: Action
    reason: str = ""


def ranking(job_id: str, nodes: Iterable[NodeId]) -> list[NodeId]:
    """Every node, best holder of `job_id` first (ties by node id, so one order everywhere)."""
    scored = sorted(((score(f"job\0{job_id}", node, 1.0), node) for node in set(nodes)), key=_best_first)
    return [node for _, node in scored]


def holders(job_id: str, live: Iterable[NodeId], k: int) -> list[NodeId]:
    """The `k` live nodes that keep copies of `job_id` (all of them when fewer), runner first."""
    return ranking(job_id, live)[: max(k, 1)]


def holders_may_move(
    job_id: str, last: Collection[NodeId], live: Collection[NodeId], added: Iterable[NodeId], k: int
) -> bool:
    """Whether `job_id`'s holders over `live` can differ from `last`, its holders over the live set
    before `added` joined it (and others maybe left). False only when it is certain they do not:
    every one of `last` is still live, and no node added ranks above the last of them. `last` may
    hold more than its holders (then the answer errs towards True: a ranking again, never a miss).
    """
    if len(last) < max(k, 1) or any(node not in live for node in last):
        return True
    key = f"job\0{job_id}"
    worst = min(score(key, node, 1.0) for node in last)
    return any(score(key, node, 1.0) >= worst for node in added)  # a tie errs towards True


def runner_of(job_id: str, live: Iterable[NodeId]) -> NodeId | None:
    """The node that runs `job_id` and delivers its webhook: the first live one of its ranking."""
    return next(iter(ranking(job_id, live)), None)


def decide(
    record: JobRecord,
    me: NodeId,
    live: Collection[NodeId],
    present: Collection[NodeId],
    *,
    running_here: bool,
    rerun_safe: bool,
) -> Decision:
    """What `me` does with `record`: `live` are alive members, `present` alive or suspect (me in both).

    `running_here`: this process is running it now. A record naming this node as its runner that
    is not running here was running when this node stopped: it is taken over like a dead runner's.
    """
    if record.status.terminal:
        return Decision(Action.WAIT)
    # Ranked over alive and suspected members: a suspected runner keeps its queued jobs too, until
    # it is declared dead; moving them at once would start a job twice when the suspect was alive.
    runner = runner_of(record.id, present)
    if record.status == JobStatus.QUEUED:
        if record.cancel_requested:
            return Decision(Action.CANCEL)  # any holder may: nothing is running to stop
        return Decision(Action.START if runner == me else Action.WAIT)
    # Running: its runner carries on while it is around, even suspected. This node's own run that
    # did not survive its restart is its own to settle, whoever ranks first now.
    if record.runner == me:
        if running_here:
            return Decision(Action.WAIT)
    elif runner != me or record.runner in present:
        return Decision(Action.WAIT)
    if record.cancel_requested:
        return Decision(Action.CANCEL)
    if not rerun_safe:
        return Decision(Action.FAIL, "its node died while it ran, and its app is not safe to run again")
    if record.attempts >= record.max_attempts:
        return Decision(Action.FAIL, f"its node died while it ran, after {record.attempts} attempts")
    return Decision(Action.RERUN)


def queue_positions(records: Iterable[JobRecord]) -> dict[str, int]:
    """Each queued job's place in its deployment's queue (0: next to start)."""
    positions: dict[str, int] = {}
    for queue in _queues(records).values():
        for position, record in enumerate(queue):
            positions[record.id] = position
    return positions


def next_to_start(
    records: Iterable[JobRecord], running: Mapping[str, int], budget: Mapping[str, int]
) -> list[JobRecord]:
    """The queued jobs to start now: per deployment, the oldest, up to its budget less what runs."""
    chosen: list[JobRecord] = []
    for deployment, queue in sorted(_queues(records).items()):
        room = budget.get(deployment, 0) - running.get(deployment, 0)
        chosen.extend(queue[: max(room, 0)])
    return chosen


def expired(record: JobRecord, now_ms: int) -> bool:
    """Whether an ended job's result is past its time to live (then it answers 410, then goes)."""
    return record.status.terminal and record.expires_ms is not None and record.expires_ms <= now_ms


def delivery_due(record: JobRecord, now_ms: int) -> bool:
    """Whether an ended job's webhook should be tried now."""
    delivery = record.delivery
    return (
        record.status.terminal
        and record.webhook is not None
        and delivery is not None
        and delivery.state == "pending"
        and delivery.next_ms <= now_ms
    )


def _queues(records: Iterable[JobRecord]) -> dict[str, list[JobRecord]]:
    queues: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        if record.status == JobStatus.QUEUED and not record.cancel_requested:
            queues[record.deployment].append(record)
    for queue in queues.values():
        queue.sort(key=lambda record: (record.created_ms, record.id))
    return queues


def _best_first(pair: tuple[float, NodeId]) -> tuple[float, str]:
    return (-pair[0], pair[1])
