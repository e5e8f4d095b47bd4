"""``meshnode doctor``'s checks of why peers doubt the node itself: its id, or its own stalls.

Pure functions from the node's counters (``doctor_facts.py``) and what peers and seeds hold:

- ``duplicate_findings``: another process running with the node's id (a copied data dir): peers
  or seeds holding the id at another address, or refutations piling up.
- ``stall_findings``: the node's failure detector running late (``meshnode_stalls_total``): the
  process was paused or starved of CPU, so its peers heard nothing from it for that long and may
  have suspected it (docs/membership.md, "A node that stalls accuses nobody").
"""

from __future__ import annotations

from collections.abc import Sequence

from .doctor_facts import Counters, Finding, Seen

__all__ = ["duplicate_findings", "stall_findings"]

# A healthy node refutes rarely (a false suspicion after a pause or a restart: a few a day). Two
# processes with one id refute each other whenever one hears of the other: in bursts, at least once
# per push-pull interval (10-30 s). Either many while the doctor looks, or a steady rate since start.
DUPLICATE_REFUTATIONS = 3
DUPLICATE_TOTAL = 5
DUPLICATE_PER_HOUR = 60.0


def duplicate_findings(
    me: Seen,
    refuted: float,
    window_s: float,
    held_elsewhere: Sequence[tuple[str, Seen]],
    refuted_total: float = 0.0,
    uptime_s: float = 0.0,
) -> list[Finding]:
    """Another process with this node's id.

    `refuted`: refutations while the doctor looked (`window_s`); `refuted_total`: since the node
    started, `uptime_s` ago; `held_elsewhere`: (who, how it holds this node's id).
    """
    tried = (
        f"this node's refutations (GET /metrics) over {window_s:.0f} s and since it started, and where "
        f"{len(held_elsewhere)} peer(s) and seed(s) hold its id"
    )
    fix = (
        "a copied data dir gives two nodes one id: start the other with its own --data-dir (or remove "
        "meshnode.db from its copy, so it makes a new id)"
    )
    by_addr: dict[str, list[str]] = {}
    for who, seen in held_elsewhere:
        if seen.node == me.node and seen.addr != me.addr:
            by_addr.setdefault(seen.addr, []).append(who)
    found = [
        Finding(
            "fail",
            "id",
            f"{', '.join(whom)} {'holds' if len(whom) == 1 else 'hold'} this node's id ({me.node[:8]}) at "
            f"{addr}, but this node is at {me.addr}: another process runs with the same node id",
            tried,
            fix,
        )
        for addr, whom in by_addr.items()
    ]
    if refuted >= DUPLICATE_REFUTATIONS or (
        refuted_total >= DUPLICATE_TOTAL and _per_hour(refuted_total, uptime_s) >= DUPLICATE_PER_HOUR
    ):
        found.append(
            Finding(
                "fail",
                "id",
                f"this node refuted {_refuted(refuted, window_s, refuted_total, uptime_s)} (a healthy node: "
                "a few a day): another process is claiming its id",
                tried,
                fix,
            )
        )
    elif refuted > 0 and not found:
        found.append(
            Finding(
                "warn",
                "id",
                f"this node refuted a claim about itself while the doctor looked ({refuted_total:.0f} since "
                "it started): normal after a pause, a duplicate id when it goes on",
                tried,
                "run the doctor again, or watch meshnode_refutations_total",
            )
        )
    if not found:
        found.append(Finding("ok", "id", f"no other process claims this node's id ({me.node[:8]})", tried))
    return found


def _refuted(refuted: float, window_s: float, total: float, uptime_s: float) -> str:
    """How many claims about itself a node refuted, in the doctor's window and since it started."""
    since = f"{total:.0f} claims about itself {_since_start(uptime_s)}"
    return f"{refuted:.0f} claims about itself in {window_s:.0f} s, {since}" if refuted else since


# A node stalls when its timers run a probe timeout or more late: after a pause of its process (a
# debugger, a suspended machine), or on a core other work keeps busy. A few in a day are pauses;
# one while the doctor looks, or a steady rate since start, is a starved node.
STALLS_PER_HOUR = 6.0
STALLS_TOTAL = 3


def stall_findings(before: Counters, after: Counters, window_s: float, uptime_s: float) -> list[Finding]:
    """Whether the node's failure detector ran late: `after` read `window_s` after `before`."""
    tried = f"this node's stalls (GET /metrics) over {window_s:.0f} s and since it started"
    recent = after.stalls - before.stalls
    since = f"{after.stalls:.0f} {_since_start(uptime_s)}"
    if recent > 0 or (after.stalls >= STALLS_TOTAL and _per_hour(after.stalls, uptime_s) >= STALLS_PER_HOUR):
        when = f"{recent:.0f} while the doctor looked, {since}" if recent > 0 else since
        return [
            Finding(
                "warn",
                "stalls",
                f"this node's failure detector ran a probe timeout or more late ({when}): the process "
                "was paused or starved of CPU, and its peers, hearing nothing from it meanwhile, may "
                "suspect it now and then",
                tried,
                "give the agent CPU: look at the machine's load (top), a container's CPU limit "
                "(throttling), swapping; longer membership timeouts (--profile lan rather than local, "
                "or --set probe_timeout_s=...) ride out shorter pauses",
            )
        ]
    earlier = f" ({since}: pauses, not a starved node)" if after.stalls else ""
    detail = f"this node's failure detector ran on time while the doctor looked{earlier}"
    return [Finding("ok", "stalls", detail, tried)]


def _per_hour(total: float, uptime_s: float) -> float:
    """`total` events since a start `uptime_s` ago, as a rate per hour (a minute at least)."""
    return total * 3600 / max(uptime_s, 60.0)


def _since_start(uptime_s: float) -> str:
    return f"since it started {max(uptime_s, 60) / 60:.0f} min ago"
