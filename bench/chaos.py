"""Chaos benchmark: the chaos suite's scenarios, run longer, one Markdown table row per load phase.

Usage:  python bench/chaos.py [--load-s 30] [--overload-s 30] [--partition-s 30] [--loss-s 120]
                             [--only kill pause restart overload partition loss clock regions]
                             [--soak-minutes 30] [--seed 1] [--workdir DIR]
        python bench/chaos.py --only --soak-minutes 30 --partition-s 10   # the soak alone

Runs the scenarios of ``tests/netns/chaos_*.py`` (real agents in network namespaces, so root only;
docs/testing.md, "Chaos") with the durations given, and prints for each load phase: requests,
failed by status, retried (requests that needed more than one attempt), p50 / p99 / max latency,
the time the mesh took to be whole again after the fault, and notes (healthy nodes suspected, what
the scenario measured). ``--soak-minutes N`` then runs one mesh for N minutes under random faults
from the list (``chaos_soak.py``) and prints a row per fault and the soak's totals.

It measures and prints; it never asserts. The machine is shared and noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the chaos suite's harness is reused here

from tests.netns.chaos_clock import clock_step  # noqa: E402
from tests.netns.chaos_faults import overload, pause_replica, rolling_restart, sigkill_replica  # noqa: E402
from tests.netns.chaos_load import LoadStats, Outcome, Plan  # noqa: E402
from tests.netns.chaos_network import loss, partition  # noqa: E402
from tests.netns.chaos_regions import regions  # noqa: E402
from tests.netns.chaos_soak import soak  # noqa: E402

SCENARIOS: dict[str, Callable[[Path, Plan], Outcome]] = {
    "kill": sigkill_replica,
    "pause": pause_replica,
    "restart": rolling_restart,
    "overload": overload,
    "partition": partition,
    "loss": loss,
    "clock": clock_step,
    "regions": regions,
}
HEADER = (
    "| scenario | phase | requests | failed by status | retried | p50 / p99 / max ms | recover s | notes |\n"
    "|---|---|---|---|---|---|---|---|"
)
# Facts too long for a table cell.
LEFT_OUT = {"served_by", "replicas_before", "replicas_after", "own_side_deaths"}


def row(scenario: str, phase: str, stats: LoadStats, recover_s: float | None, notes: str) -> str:
    """One table row."""
    summary = stats.summary
    failed = ", ".join(f"{status}: {count}" for status, count in sorted(stats.failed.items())) or "0"
    latency = f"{summary['p50_ms']} / {summary['p99_ms']} / {summary['max_ms']}"
    recover = "-" if recover_s is None else f"{recover_s:.1f}"
    return (
        f"| {scenario} | {phase or '-'} | {stats.requests} | {failed} | {summary['retried']} | {latency} "
        f"| {recover} | {notes} |"
    )


def notes(outcome: Outcome) -> str:
    """Healthy nodes suspected, and the scenario's other counts."""
    facts = {key: value for key, value in outcome.facts.items() if key not in LEFT_OUT}
    shown = "; ".join(f"{key} {value}" for key, value in facts.items())
    return f"healthy suspected {len(outcome.suspected)}; {shown}".replace("|", "/")


def commit() -> str:
    """This checkout's commit, marked when the tree has changes."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def main() -> None:
    """Run the chosen scenarios, then the soak, printing as they finish."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--load-s", type=float, default=30.0, help="load around one fault")
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--partition-s", type=float, default=30.0)
    parser.add_argument("--loss-s", type=float, default=120.0)
    parser.add_argument(
        "--only", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS), help="none: the soak alone"
    )
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1, help="the soak's sequence of faults")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the agents' logs here")
    arguments = parser.parse_args()
    plan = Plan(
        load_s=arguments.load_s,
        overload_s=arguments.overload_s,
        partition_s=arguments.partition_s,
        loss_s=arguments.loss_s,
    )
    print(f"commit {commit()}, {time.strftime('%Y-%m-%d')}; {plan}\n", flush=True)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="meshnode-chaos-") as temporary:
        scratch = arguments.workdir or Path(temporary)
        for name in arguments.only:
            began = time.monotonic()
            workdir = scratch / name
            workdir.mkdir(parents=True)
            try:
                outcome = SCENARIOS[name](workdir, plan)
            except AssertionError as exc:
                # A scenario that could not even reach its steady state: say so and go on.
                print(
                    f"| {name} | - | - | - | - | - | - | did not complete: {str(exc)[:300]!r} |", flush=True
                )
                continue
            for phase, stats in outcome.loads.items():
                print(row(outcome.scenario, phase, stats, outcome.recover_s, notes(outcome)), flush=True)
            print(f"<!-- {name} took {time.monotonic() - began:.0f} s -->", flush=True)
        if arguments.soak_minutes > 0:
            workdir = scratch / "soak"
            workdir.mkdir(parents=True)
            print(f"\nsoak: {arguments.soak_minutes:g} minutes, seed {arguments.seed}", file=sys.stderr)
            stats, records = soak(
                workdir,
                arguments.soak_minutes,
                random.Random(arguments.seed),
                plan,
                lambda line: print(line, file=sys.stderr, flush=True),
            )
            for failure in stats.summary["failures"][:5]:
                print(f"failed: {failure}", file=sys.stderr)
            print(
                "\n| soak fault | times | longest recovery s | healthy suspected | false deaths |\n|---|---|---|---|---|"
            )
            for fault in sorted({record.fault for record in records}):
                mine = [record for record in records if record.fault == fault]
                print(
                    f"| {fault} | {len(mine)} | {max(r.recover_s for r in mine):.1f} "
                    f"| {sum(r.suspicions for r in mine)} | {sum(len(r.false_deaths) for r in mine)} |"
                )
            print("\n" + HEADER)
            deaths = sum(len(record.false_deaths) for record in records)
            print(
                row(
                    f"soak {arguments.soak_minutes:g} min",
                    f"{len(records)} faults",
                    stats,
                    None,
                    f"false deaths {deaths}",
                )
            )


if __name__ == "__main__":
    main()
