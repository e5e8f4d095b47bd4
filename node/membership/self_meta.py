"""What this node says about itself in gossip, kept current: ``NodeMeta`` built from its parts.

The metadata carries the node's addresses and labels (fixed), its device (detected once, in a
subprocess, since accelerators need torch), its load (sampled every ``load_sample_interval_s``),
and what it serves: every replica's entry, loaded models, hints, measured speeds, and requests held
for a cold start; and the models in its store and those it is pulling (``meshnode.models``). A
change in what it serves or holds is published at once (``publish``); load, speeds and
traffic only when they moved (``load.LoadGossip`` and ``mesh/traffic.moved`` say when), and at most
every ``meta_min_interval_s``, since each change costs gossip on every node.

Traffic is the requests this node took from clients over the last ``TRAFFIC_WINDOW_S``, per
deployment and per peer it sent them to: the dashboard's rates, percentiles and links.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..inference.devices import DeviceInfo, detect_full
from ..load import LoadGossip, LoadSample, LoadSampler
from ..mesh.metadata import NodeMeta
from ..mesh.traffic import Totals, Window, moved
from ..serving.replicas import Replicas
from .runner import GossipRunner

__all__ = ["TRAFFIC_WINDOW_S", "SelfMeta"]

# Long enough that a rate of one request a second reads steadily; short enough that a change shows
# on the dashboard within a few gossip updates.
TRAFFIC_WINDOW_S = 10.0


class SelfMeta:
    """Builds this node's metadata from its parts and gossips it when it changes."""

    def __init__(
        self,
        base: NodeMeta,
        *,
        runner: GossipRunner,
        replicas: Replicas,
        waiting: Mapping[str, int],
        device: DeviceInfo,
        sampler: LoadSampler,
        load: LoadSample,
        max_bytes: int,
        traffic: Callable[[], Totals] = Totals,
        store: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
        pulls: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
    ) -> None:
        self._base = base
        self._runner = runner
        self._replicas = replicas
        self._waiting = waiting
        self._device = device
        self._sampler = sampler
        self._load = load
        self._max_bytes = max_bytes
        self._totals = traffic
        # NodeMeta.store and NodeMeta.pulls as the model store and the pulls say now.
        self._store = store
        self._pulls = pulls
        self._traffic: dict[str, Any] = {}

    def build(self) -> NodeMeta:
        """The metadata as of now, cut to fit ``max_meta_bytes``."""
        replicas = self._replicas
        return replace(
            self._base,
            device=self._device.to_wire(),
            load=self._load.to_wire(),
            models=replicas.models,
            hints=replicas.hints,
            speeds=replicas.speeds(asyncio.get_running_loop().time()),
            replicas=replicas.entries(),
            waiting=dict(self._waiting),
            key_ids=tuple(self._runner.keyring.key_ids),
            reach=self._runner.relaying.reach.value,
            relays=self._runner.relaying.relays,
            traffic=self._traffic,
            store={name: dict(entry) for name, entry in self._store().items()},
            pulls={name: dict(entry) for name, entry in self._pulls().items()},
        ).fit(self._max_bytes)

    def publish(self) -> None:
        """Gossip the metadata now (what this node serves changed)."""
        self._runner.publish_meta(self.build())

    async def refresh_forever(self, interval_s: float, rule: LoadGossip) -> None:
        """Sample load and speeds every `interval_s`; gossip them when `rule` says (``load.py``)."""
        loop = asyncio.get_running_loop()
        published = self._load
        published_speeds = self._replicas.speeds(loop.time())
        last_publish = loop.time()
        window = Window(TRAFFIC_WINDOW_S, start=loop.time())
        while True:
            await asyncio.sleep(interval_s)
            sample = self._sampler.sample(in_flight=self._replicas.in_flight)
            speeds = self._replicas.speeds(loop.time())
            traffic = window.observe(loop.time(), self._totals())
            age_s = loop.time() - last_publish
            due = rule.due(published, sample, age_s) or (
                age_s >= rule.min_gap_s
                and (_speeds_moved(published_speeds, speeds) or moved(self._traffic, traffic))
            )
            if due:
                self._load = published = sample
                published_speeds = speeds
                self._traffic = traffic
                last_publish = loop.time()
                self.publish()

    async def detect_devices(self) -> None:
        """Accelerators need torch: detect them in a subprocess, then gossip the result."""
        device = await detect_full(cache_dir=_machine_cache_dir())
        if device != self._device:
            self._device = device
            self.publish()


def _machine_cache_dir() -> Path:
    """Per-user cache shared by every agent on this machine ($XDG_CACHE_HOME/meshnode)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshnode"


def _speeds_moved(before: dict[str, Any], after: dict[str, Any], factor: float = 1.25) -> bool:
    """Whether a replica's measured service time is new or moved by more than `factor` either way,
    or its rate fell to 0 or rose from it.

    Routing takes a speed whose rate is 0 as unmeasured (``mesh/routing.py``): a replica kept back
    by one slow figure gets requests again as soon as peers hear it has served none, not whenever
    something else happens to republish this node's metadata.
    """
    for name, speed in after.items():
        was = before.get(name, {})
        old, new = was.get("service_ms"), speed.get("service_ms")
        if not old or not new or not 1 / factor <= new / old <= factor:
            return True
        if (was.get("rps") == 0) != (speed.get("rps") == 0):
            return True
    return False
