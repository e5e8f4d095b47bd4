"""Chaos scenario on time: one node's wall clock stepped by minutes while the mesh serves.

libfaketime (Debian's ``faketime`` package) is preloaded into one agent, reading its offset from a
file that the scenario rewrites, so the clock steps while the agent runs, as an NTP step or a
wrong manual setting would. Only the wall clock moves (``FAKETIME_DONT_FAKE_MONOTONIC``): the
monotonic clock, which every timer of the agent runs on, is left alone, as by a real step.

What must hold (docs/membership.md, "Bounds"): membership does not notice at all (it runs on the
monotonic clock), and the effect on deployment records is bounded by ``max_clock_offset_s``: a
declaration stamped further ahead of a receiver's clock is refused there (and counted as
``stamp_ahead``); one stamped ahead within the bound is taken, and a later write from a node
that saw it still wins over it, since hybrid clocks move past every stamp they observe.
"""

from __future__ import annotations

import email.utils
import glob
import time
from pathlib import Path

from meshnode.mesh.config import MembershipConfig
from tests.integration.agents import wait_for
from tests.netns.chaos import ECHO_APP, LOAD_OPTIONS, PHASE_TIMEOUT_S, POLL_INTERVAL_S, ChaosMesh, replicated
from tests.netns.chaos_load import Outcome, Plan

__all__ = ["clock_step", "faketime_env", "faketime_library", "step_clock"]

STEPPED = 2
# Past the bound (300 s) by minutes, then within it by minutes.
BOUND_S = MembershipConfig.local().max_clock_offset_s
BEYOND_S = 600
WITHIN_S = 120
# Declared with no replica, so the records under test start nothing.
IDLE = {"app": ECHO_APP, "min_replicas": 0, "max_replicas": 1}
REFUSED = ("meshnode_gossip_refused_total", "reason")
# Each client pauses this long after an answer: about 150 requests/s with 4 clients. The subject is
# the clock, and the assertion is that no member changes state at all; a saturating load on two
# shared cores adds event-loop starvation on top (CI once saw the stepped node, which also hosts a
# replica, miss its probes for a moment and refute), which the overload scenario covers.
THINK_S = 0.025


def faketime_library() -> str | None:
    """The path of libfaketime's shared library, or None when Debian's ``faketime`` is not installed."""
    found = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1")
    )
    return found[0] if found else None


def faketime_env(offset: Path) -> dict[str, str]:
    """The environment that runs an agent on a wall clock ``offset`` (a file) sets; starts at +0."""
    library = faketime_library()
    assert library is not None, "libfaketime is missing (apt-get install faketime)"
    offset.write_text("+0\n")
    return {
        "LD_PRELOAD": library,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        # The file is read again at most every second: a step lands within a second.
        "FAKETIME_CACHE_DURATION": "1",
        # libfaketime 0.9.10 then fails Python's time.sleep with EINVAL (clock_nanosleep on the
        # monotonic clock): the load on such a node asks for no ``delay_s``.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def clock_step(workdir: Path, plan: Plan) -> Outcome:
    """Step one node's clock 2 minutes ahead, 10, then back, under load; a declaration from it at each."""
    offset = workdir / "stepped.faketime"
    env = faketime_env(offset)
    with replicated("mnct", workdir, 3, env={STEPPED: env}) as (mesh, hosts, entry):
        load = mesh.load([entry], concurrency=plan.concurrency, think_s=THINK_S, **LOAD_OPTIONS)
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mark = mesh.mark()
        others = [index for index in range(mesh.agents) if index != STEPPED]
        refused_at_start = _refused(mesh, others)

        # 1. Two minutes ahead: within the bound, taken everywhere; a later write elsewhere still
        # wins, since the other nodes' hybrid clocks moved past the stamp they took.
        step_clock(mesh, STEPPED, offset, WITHIN_S)
        stepped_at = time.monotonic()
        _declare(mesh, "within", IDLE, STEPPED)
        wait_for(
            lambda: len(_declared_on(mesh, "within")) == mesh.agents,
            PHASE_TIMEOUT_S,
            interval=POLL_INTERVAL_S,
            message=mesh.diagnosis,
        )
        _declare(mesh, "within", {**IDLE, "max_replicas": 2}, others[0])
        wait_for(
            lambda: _max_replicas(mesh, "within") == dict.fromkeys(range(mesh.agents), 2),
            PHASE_TIMEOUT_S,
            interval=POLL_INTERVAL_S,
            message=lambda: f"{_max_replicas(mesh, 'within')}\n{mesh.diagnosis()}",
        )

        # 2. Ten minutes ahead, past the bound: its declaration stays its own; the others refuse it.
        step_clock(mesh, STEPPED, offset, BEYOND_S)
        refused_before = _refused(mesh, others)
        _declare(mesh, "ahead", IDLE, STEPPED)
        _wait_refused(mesh, others, refused_before)
        ahead_on = _declared_on(mesh, "ahead")

        # 3. Stepped back: its hybrid clock never runs backwards, so its stamps stay ten minutes
        # ahead, and refused, until real time catches up with them (docs/membership.md, "Bounds").
        step_clock(mesh, STEPPED, offset, 0)
        refused_before = _refused(mesh, others)
        _declare(mesh, "after", IDLE, STEPPED)
        _wait_refused(mesh, others, refused_before)
        after_on = _declared_on(mesh, "after")
        load.at(plan.fault_at_s + plan.load_s)
        stats = load.stop()
        refused = _refused(mesh, others) - refused_at_start
        return Outcome(
            f"one clock stepped +{WITHIN_S // 60} min, +{BEYOND_S // 60} min, back",
            {"": stats},
            None,
            # Any change at all: membership must not notice a step of the wall clock.
            mesh.transitions(mark),
            {
                "stepped": mesh.names[STEPPED],
                "bound_s": BOUND_S,
                "ahead_declared_on": sorted(mesh.names[i] for i in ahead_on),
                "within_declared_on": sorted(mesh.names[i] for i in _declared_on(mesh, "within")),
                "after_declared_on": sorted(mesh.names[i] for i in after_on),
                "stamp_ahead_refusals": int(refused),
                "observed_s": round(time.monotonic() - stepped_at, 1),
                "replicas": sorted(hosts),
            },
            mesh.logs(),
        )


def step_clock(mesh: ChaosMesh, index: int, offset: Path, seconds: int) -> None:
    """Set agent ``index``'s clock ``seconds`` ahead (``faketime_env``); wait until its Date shows it."""
    offset.write_text(f"{seconds:+d}\n")

    def shows_it() -> bool:
        answer = mesh.calls([(index, "GET", "/health", None)])[0]
        if answer.date is None:
            return False
        ahead = email.utils.parsedate_to_datetime(answer.date).timestamp() - time.time()
        # The Date header has whole seconds and the call takes some: a few seconds of slack.
        return abs(ahead - seconds) < 5

    wait_for(shows_it, PHASE_TIMEOUT_S, interval=POLL_INTERVAL_S, message=mesh.diagnosis)


def _declared_on(mesh: ChaosMesh, name: str) -> list[int]:
    """The agents that list deployment ``name``."""
    return [index for index, body in mesh.get(f"/v1/deployments/{name}").items() if body is not None]


def _max_replicas(mesh: ChaosMesh, name: str) -> dict[int, int | None]:
    """``max_replicas`` of deployment ``name`` as each agent holds it."""
    return {i: body and body.get("max_replicas") for i, body in mesh.get(f"/v1/deployments/{name}").items()}


def _declare(mesh: ChaosMesh, name: str, spec: dict[str, object], via: int) -> None:
    """Declare ``name`` on agent ``via``, which must accept it (whatever the others do with it)."""
    put = mesh.deploy(name, spec, via=via)
    assert put.status in (200, 201), f"PUT {name} on {mesh.names[via]} answered {put.status}: {put.body}"


def _refused(mesh: ChaosMesh, indexes: list[int]) -> float:
    """Records the given agents refused as stamped too far ahead, in total."""
    return sum(mesh.metric(i, *REFUSED).get("stamp_ahead", 0.0) for i in indexes)


def _wait_refused(mesh: ChaosMesh, indexes: list[int], before: float) -> None:
    """Wait until the given agents refused another record as stamped too far ahead."""
    wait_for(
        lambda: _refused(mesh, indexes) > before,
        PHASE_TIMEOUT_S,
        interval=POLL_INTERVAL_S,
        message=mesh.diagnosis,
    )
