"""Job policy: holders by rendezvous, the runner's takeover rules, queue order and budgets."""

from __future__ import annotations

import random

from meshnode.mesh.job_policy import (
    Action,
    decide,
    delivery_due,
    expired,
    holders,
    holders_may_move,
    next_to_start,
    queue_positions,
    ranking,
)
from meshnode.mesh.jobs import Delivery, JobRecord, JobStatus
from meshnode.mesh.types import NodeId

NODES = [NodeId(f"node-{i}") for i in range(6)]


def job(
    job_id: str = "J" * 22, deployment: str = "echo", created_ms: int = 0, **changes: object
) -> JobRecord:
    record = JobRecord(
        id=job_id,
        deployment=deployment,
        body={},
        accept="",
        hint=None,
        created_ms=created_ms,
        max_attempts=2,
        timeout_ms=1000,
    )
    return record.written(NodeId("w"), **changes) if changes else record


def ids(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return ["".join(rng.choice(alphabet) for _ in range(22)) for _ in range(count)]


def test_holders_are_the_same_from_any_order_and_move_only_when_one_leaves() -> None:
    for job_id in ids(50):
        chosen = holders(job_id, NODES, 3)
        assert chosen == holders(job_id, list(reversed(NODES)), 3) and len(set(chosen)) == 3
        dead = NODES[3]
        after = holders(job_id, [n for n in NODES if n != dead], 3)
        if dead not in chosen:
            assert after == chosen
        else:  # the others keep their order and the next in rank joins
            assert [n for n in chosen if n != dead] == after[:2]
    assert holders("J" * 22, NODES[:2], 3) == ranking("J" * 22, NODES[:2])


def test_holders_may_move_is_never_false_when_the_holders_moved_and_mostly_false_otherwise() -> None:
    """Seeded random changes of the live set (joins, deaths, both): the cheap check (a hash per node
    added) never says "unchanged" where ranking every job again finds new holders."""
    rng = random.Random(7)
    everyone = [NodeId(f"node-{i}") for i in range(40)]
    skipped = moved = 0
    for job_id in ids(300, seed=3):
        before = set(rng.sample(everyone, rng.randint(1, 30)))
        after = (before - set(rng.sample(sorted(before), rng.randint(0, min(2, len(before)))))) | set(
            rng.sample(everyone, rng.randint(0, 3))
        )
        last = holders(job_id, before, 3)
        changed = holders(job_id, after, 3) != last
        may = holders_may_move(job_id, last, after, after - before, 3)
        assert may or not changed, (job_id, before, after)
        moved += changed
        skipped += not may
    assert moved > 20 and skipped > 100  # both kinds of change were drawn; most jobs skip the ranking


def test_jobs_spread_over_the_nodes_as_runners() -> None:
    runners = [holders(job_id, NODES, 3)[0] for job_id in ids(600)]
    assert all(60 <= runners.count(node) <= 140 for node in NODES), [runners.count(n) for n in NODES]


def test_a_queued_job_starts_on_its_runner_only() -> None:
    record = job()
    order = ranking(record.id, NODES)
    first, second = order[0], order[1]
    assert decide(record, first, NODES, NODES, running_here=False, rerun_safe=True).action == Action.START
    assert decide(record, second, NODES, NODES, running_here=False, rerun_safe=True).action == Action.WAIT
    survivors = [n for n in NODES if n != first]
    assert (
        decide(record, second, survivors, survivors, running_here=False, rerun_safe=True).action
        == Action.START
    )


def test_a_running_job_moves_only_when_its_runner_is_gone() -> None:
    order = ranking("J" * 22, NODES)
    first, second = order[0], order[1]
    record = job(status=JobStatus.RUNNING, runner=first, attempts=1)
    survivors = [n for n in NODES if n != first]
    # Suspected (present but not alive): it keeps the job.
    assert decide(record, second, survivors, NODES, running_here=False, rerun_safe=True).action == Action.WAIT
    # Dead: the next in rank runs it again, or fails it when it may not.
    assert (
        decide(record, second, survivors, survivors, running_here=False, rerun_safe=True).action
        == Action.RERUN
    )
    refused = decide(record, second, survivors, survivors, running_here=False, rerun_safe=False)
    assert refused.action == Action.FAIL and "not safe" in refused.reason
    spent = job(status=JobStatus.RUNNING, runner=first, attempts=2)
    out = decide(spent, second, survivors, survivors, running_here=False, rerun_safe=True)
    assert out.action == Action.FAIL and "2 attempts" in out.reason
    # Others than the next in rank leave it alone.
    third = order[2]
    assert (
        decide(record, third, survivors, survivors, running_here=False, rerun_safe=True).action == Action.WAIT
    )


def test_a_run_lost_to_a_restart_is_settled_by_its_own_node() -> None:
    order = ranking("J" * 22, NODES)
    restarted = order[2]  # not first in rank: still its own run to settle
    record = job(status=JobStatus.RUNNING, runner=restarted, attempts=1)
    assert decide(record, restarted, NODES, NODES, running_here=False, rerun_safe=True).action == Action.RERUN
    assert decide(record, restarted, NODES, NODES, running_here=True, rerun_safe=True).action == Action.WAIT
    assert decide(record, order[0], NODES, NODES, running_here=False, rerun_safe=True).action == Action.WAIT


def test_cancel_and_terminal_records() -> None:
    assert (
        decide(job(cancel_requested=True), NODES[5], NODES, NODES, running_here=False, rerun_safe=True).action
        == Action.CANCEL
    )
    done = job(status=JobStatus.COMPLETED)
    assert (
        decide(done, ranking(done.id, NODES)[0], NODES, NODES, running_here=False, rerun_safe=True).action
        == Action.WAIT
    )


def test_queues_are_first_come_first_served_per_deployment_within_budgets() -> None:
    a = [job(f"{'a' * 21}{i}", "alpha", created_ms=10 - i) for i in range(4)]
    b = [job(f"{'b' * 21}{i}", "beta", created_ms=i) for i in range(3)]
    records = a + b + [job("c" * 22, "alpha", status=JobStatus.RUNNING)]
    positions = queue_positions(records)
    assert [positions[r.id] for r in a] == [3, 2, 1, 0]
    assert [positions[r.id] for r in b] == [0, 1, 2]
    assert "c" * 22 not in positions
    started = next_to_start(records, {"alpha": 1}, {"alpha": 2, "beta": 2})
    assert [r.id for r in started] == [a[3].id, b[0].id, b[1].id]


def test_expiry_and_webhook_due() -> None:
    done = job(status=JobStatus.COMPLETED, expires_ms=100, webhook="http://x", delivery=Delivery(next_ms=50))
    assert not expired(done, 99) and expired(done, 100)
    assert not expired(job(expires_ms=1), 10)  # only ended jobs expire
    assert not delivery_due(done, 49) and delivery_due(done, 50)
    delivered = job(status=JobStatus.COMPLETED, webhook="http://x", delivery=Delivery(state="delivered"))
    assert not delivery_due(delivered, 10**9)


def test_a_suspected_runner_keeps_its_queued_jobs_until_it_is_declared_dead() -> None:
    record = job()
    first, second = ranking(record.id, NODES)[:2]
    alive = [n for n in NODES if n != first]  # first is suspected: present, not alive
    assert decide(record, second, alive, NODES, running_here=False, rerun_safe=True).action == Action.WAIT
    assert decide(record, second, alive, alive, running_here=False, rerun_safe=True).action == Action.START
