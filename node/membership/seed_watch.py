"""Telling the user how joining through ``--seed`` goes, instead of only ``/ready`` knowing.

While the node is alone, ``SeedWatch`` (``mesh/seeds.py``) says when to warn: a few seconds after
the start, then at doubling gaps up to a minute. Each warning names every seed and why it has not
answered, from a probe made for the occasion (``probe_seed``): its host name does not resolve,
nothing listens on its port, its port does not answer at all (a host down, a firewall), or the port
takes connections but no gossip came back (another mesh id or token, or not a meshnode). When the
node has peers at last, one INFO line says who answered. Gossip itself is not touched: the core
keeps retrying the seeds on its own schedule (``SeedRetry``) whatever is logged here.

The probe is a name lookup and one TCP connection that sends nothing, made at most once per seed
per warning; the news is for a person, so the watch only looks twice a second whether the node is
still alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from ..addresses import parse_host_port
from ..config import AgentConfig
from ..errors import ConfigError
from ..mesh.seeds import SeedNews, SeedWatch
from ..mesh.types import Status
from .runner import GossipRunner

__all__ = ["probe_seed", "seed_warning", "watch_seeds"]

log = logging.getLogger(__name__)

# How often the watch looks whether the node is still alone (the INFO line is this late at most).
_LOOK_S = 0.5


async def watch_seeds(config: AgentConfig, runner: GossipRunner) -> None:
    """Log how joining through the seeds of `config` goes, for as long as the agent runs."""
    seeds = config.seeds
    if not seeds:
        return
    loop = asyncio.get_running_loop()
    watch = SeedWatch(config.seed_warn_after_s, config.seed_warn_max_interval_s, loop.time())
    while True:
        await asyncio.sleep(min(_LOOK_S, max(0.0, watch.next_at - loop.time())))
        now = loop.time()
        match watch.update(now, alone=not runner.has_peers()):
            case SeedNews.STILL_ALONE:
                waited_s = now - watch.alone_since
                probes = (probe_seed(seed, config.seed_probe_timeout_s) for seed in seeds)
                reasons = await asyncio.gather(*probes)
                for seed, reason in zip(seeds, reasons, strict=True):
                    log.warning("%s", seed_warning(seed, reason, waited_s, watch.next_at - loop.time()))
            case SeedNews.JOINED:
                log.info("joined the mesh: %s answered (seeds: %s)", _first_peer(runner), ", ".join(seeds))


def seed_warning(seed: str, reason: str, waited_s: float, next_in_s: float) -> str:
    """The warning line for one seed that has not answered in `waited_s`: which, why, what next."""
    stop = "" if reason.endswith("?") else "."
    return (
        f"seed {seed}: {reason}{stop} No answer from {seed} after {waited_s:.0f} s; still trying, "
        f"alone meanwhile (next report in {max(0.0, next_in_s):.0f} s)"
    )


async def probe_seed(seed: str, timeout_s: float) -> str:
    """Why `seed` ("host:port") has not answered, as far as a name lookup and a TCP connection tell."""
    try:
        host, port = parse_host_port(seed)
    except ConfigError as exc:
        return exc.message
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    except UnicodeError as exc:  # a name the resolver's IDNA encoding refuses
        return f"cannot resolve host {host!r} ({exc})"
    except TimeoutError:
        return f"cannot resolve host {host!r} (the name server did not answer within {timeout_s:g} s)"
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return (
            f"its port does not answer TCP within {timeout_s:g} s (the host is down, or a firewall drops it)"
        )
    except ConnectionRefusedError:
        return (
            "nothing listens on its port (connection refused): is its agent running, with that --mesh port?"
        )
    except OSError as exc:
        return f"cannot connect to it ({exc.strerror or exc})"
    writer.close()
    return (
        "it takes TCP connections but sends no gossip back: is it a meshnode of this mesh "
        "(the same --mesh-id and token)?"
    )


def _first_peer(runner: GossipRunner) -> str:
    """The name and address of a peer for the joined line: an alive one, else a suspect one (a
    peer that just started on a busy machine may miss its first probes, yet it answered)."""
    members = [m for m in runner.members() if m.node != runner.core.node_id and m.status in _JOINED_BY]
    if not members:
        return "a peer"
    member = min(members, key=lambda found: found.status != Status.ALIVE)  # the first alive one
    return f"{member.meta.name or member.node[:8]} at {member.addr}"


_JOINED_BY = (Status.ALIVE, Status.SUSPECT)
