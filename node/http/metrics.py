"""Prometheus metrics (``GET /metrics``), read from the agent's counters at scrape time.

A custom collector rather than counters incremented on the hot path: the gossip shell keeps plain
integers, and a scrape turns them into metric families. Requests are counted the same way by two
meters, per deployment on the predict lane (``request_metrics.py``) and per route for the rest
(``route_metrics.py``). Each agent has its own registry, so several agents in one process (tests)
never share series. docs/observability.md lists every metric and what a sum() over nodes means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..mesh.bounds import REFUSAL_REASONS
from ..mesh.load_gate import COUNTS as LOAD_NEWS_COUNTS
from .openai.models import Members
from .prometheus_targets import add_targets_route
from .request_metrics import RequestMeter
from .route_metrics import RouteMeter


class _Families(Protocol):
    def families(self) -> Iterator[Metric]: ...


class _FamiliesCollector(Collector):
    """Collects what a meter (``request_metrics.py``, ``route_metrics.py``) builds at scrape time."""

    def __init__(self, source: _Families) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return self._source.families()


class _AgentCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        packets = CounterMetricFamily(
            "meshnode_gossip_packets", "Membership packets by direction.", labels=["direction"]
        )
        packets.add_metric(["in"], stats["received"])
        packets.add_metric(["out"], stats["sent"])
        yield packets
        traffic = CounterMetricFamily(
            "meshnode_gossip_bytes", "Membership bytes by direction.", labels=["direction"]
        )
        traffic.add_metric(["in"], stats["bytes_in"])
        traffic.add_metric(["out"], stats["bytes_out"])
        yield traffic
        dropped = CounterMetricFamily(
            "meshnode_gossip_dropped",
            "Membership packets dropped: not sealed by this mesh's token (unsealed, unknown_key, forged), "
            "malformed, oversized, version, mesh, multipart, error, send.",
            labels=["reason"],
        )
        reasons = ("unsealed", "unknown_key", "forged", "malformed", "oversized", "version", "mesh")
        for reason in (*reasons, "multipart", "error"):
            dropped.add_metric([reason], stats["dropped"].get(reason, 0))
        dropped.add_metric(["send"], stats["send_dropped"])
        yield dropped
        queued = GaugeMetricFamily(
            "meshnode_gossip_queued",
            "News waiting in this node's broadcast queue: foreground (failure detection, changes) and "
            "background (load only). A foreground backlog that stays means gossip is saturated.",
            labels=["class"],
        )
        for kind, count in stats["gossip_queued"].items():
            queued.add_metric([kind], count)
        yield queued
        load_news = CounterMetricFamily(
            "meshnode_gossip_load_news",
            "This node's load updates gossiped as a delta (sent) or whole (sent_whole: a member takes "
            "no deltas); peers' deltas applied, or not: stale (copies), unbased (a change not held "
            "here), unfit.",
            labels=["outcome"],
        )
        for outcome in LOAD_NEWS_COUNTS:
            load_news.add_metric([outcome], stats["load_news"].get(outcome, 0))
        yield load_news
        refused = CounterMetricFamily(
            "meshnode_gossip_refused",
            "Gossiped values past this node's bounds (docs/membership.md, Bounds): claims cut to the "
            "step (incarnation, meta_version), records stamped too far ahead dropped (stamp_ahead).",
            labels=["reason"],
        )
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], stats["refused"].get(reason, 0))
        yield refused
        http_refused = CounterMetricFamily(
            "meshnode_http_refused",
            "HTTP requests refused for their API key: unauthenticated (401), forbidden (403, scope).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.get("http_refused", {}).items()):
            http_refused.add_metric([reason], count)
        yield http_refused
        data_frames = CounterMetricFamily(
            "meshnode_data_frames", "Data-plane frames received from peers.", labels=["direction"]
        )
        data_frames.add_metric(["in"], stats["data_received"])
        yield data_frames
        yield CounterMetricFamily(
            "meshnode_data_links_handed",
            "Peers' links this node handed to a replica's worker, which answers their calls itself.",
            value=stats["data_links_handed"],
        )
        data_dropped = CounterMetricFamily(
            "meshnode_data_dropped",
            "Data-plane connections and frames dropped: unauthenticated (connections that failed the "
            "handshake), malformed, unexpected (requests in), reply_* (answers in).",
            labels=["reason"],
        )
        for reason, count in sorted(stats["data_dropped"].items()):
            data_dropped.add_metric([reason], count)
        yield data_dropped
        routed = CounterMetricFamily(
            "meshnode_requests_routed",
            "Predict requests committed to a replica on this node or a peer.",
            labels=["where"],
        )
        refused = CounterMetricFamily(
            "meshnode_attempts_refused",
            "Attempts that moved on to the next replica (full, not ready, peer lost or unreachable).",
            labels=["kind"],
        )
        unserved = CounterMetricFamily(
            "meshnode_requests_unserved",
            "Requests no replica took: every candidate refused (full, or busy past the deadline).",
            labels=["reason"],
        )
        routing = stats["routing"]
        for where in ("local", "peer"):
            routed.add_metric([where], routing.get(f"served_{where}", 0))
        for reason in ("exhausted",):
            unserved.add_metric([reason], routing.get(f"unserved_{reason}", 0))
        for key, count in sorted(routing.items()):
            if key.startswith("refused_"):
                refused.add_metric([key.removeprefix("refused_")], count)
        yield routed
        yield CounterMetricFamily(
            "meshnode_failovers",
            "Requests served by another replica than the first one tried (meshnode_attempts_refused_total "
            "counts each refused attempt by its reason).",
            value=routing.get("failovers", 0),
        )
        yield CounterMetricFamily(
            "meshnode_cold_start_waits",
            "Requests that found no ready replica and waited for one to start (a cold start).",
            value=routing.get("cold_start_waits", 0),
        )
        yield refused
        yield unserved
        outstanding = GaugeMetricFamily(
            "meshnode_forward_in_flight", "Requests this node has outstanding at each peer.", labels=["peer"]
        )
        for peer, count in sorted(stats["forward_in_flight"].items()):
            outstanding.add_metric([peer], count)
        yield outstanding
        links = GaugeMetricFamily(
            "meshnode_data_links_open",
            "Data-plane links this node has open to peers, by lane (serving, bulk, worker: straight to "
            "a peer's worker); a link no request used for forward_link_idle_s is closed.",
            labels=["lane"],
        )
        for lane, count in stats["data_links_open"].items():
            links.add_metric([lane], count)
        yield links
        members = GaugeMetricFamily(
            "meshnode_members", "Members in this node's view by status.", labels=["status"]
        )
        for status, count in stats["members"].items():
            members.add_metric([status], count)
        yield members
        changes = CounterMetricFamily(
            "meshnode_member_changes",
            "Members this node saw change into each status: suspect (suspicions), dead, left, alive "
            "(joins and recoveries).",
            labels=["status"],
        )
        for status in stats["members"]:
            changes.add_metric([status], stats["member_changes"].get(status, 0))
        yield changes
        yield CounterMetricFamily(
            "meshnode_refutations",
            "Suspicions of this node that it refuted (each raises its incarnation).",
            value=stats["refutations"],
        )
        yield CounterMetricFamily(
            "meshnode_stalls",
            "Times this node's failure detector ran a probe timeout or more late: the process was "
            "paused or starved; its timers waited for it rather than accuse its peers.",
            value=stats["stalls"],
        )
        yield from _deployment_metrics(stats["deployments"])
        yield from _job_metrics(stats["jobs"])
        yield _batch_metrics(stats.get("batches", {}))
        refused = CounterMetricFamily(
            "meshnode_moderation_refused",
            "Requests this node answered with a moderation refusal (400), by deployment and category.",
            labels=["deployment", "reason"],
        )
        for (deployment, reason), count in sorted(stats.get("moderation", {}).items()):
            refused.add_metric([deployment, reason], count)
        yield refused
        yield GaugeMetricFamily(
            "meshnode_incarnation", "This node's incarnation.", value=stats["incarnation"]
        )
        yield GaugeMetricFamily(
            "meshnode_local_health", "Lifeguard awareness score (0 = healthy).", value=stats["awareness"]
        )


def _deployment_metrics(deployments: dict[str, Any]) -> Iterator[Metric]:
    """Per deployment, this node's share only (so a sum() over nodes counts each replica once)."""
    desired = GaugeMetricFamily(
        "meshnode_deployment_desired_replicas",
        "Replicas placement wants on this node (hosts it, or pinned here): 0 or 1; sum() over nodes "
        "is the mesh's desired count.",
        labels=["deployment"],
    )
    ready = GaugeMetricFamily(
        "meshnode_deployment_ready_replicas",
        "Replicas serving on this node (0 or 1); sum() over nodes is the mesh's ready count.",
        labels=["deployment"],
    )
    replicas = GaugeMetricFamily(
        "meshnode_replicas",
        "Replicas on this node by state (starting, ready, draining, failed...).",
        labels=["deployment", "state"],
    )
    queue = GaugeMetricFamily(
        "meshnode_replica_queue_depth",
        "Requests admitted by this node's replica and not finished (running and waiting for a slot).",
        labels=["deployment"],
    )
    waiting = GaugeMetricFamily(
        "meshnode_cold_start_waiting",
        "Requests held on this node until a replica of the deployment serves.",
        labels=["deployment"],
    )
    for name, numbers in sorted(deployments["by_name"].items()):
        desired.add_metric([name], numbers["desired_here"])
        ready.add_metric([name], numbers["ready_here"])
        if numbers["state_here"]:
            replicas.add_metric([name, numbers["state_here"]], 1)
            queue.add_metric([name], numbers["queue_here"])
        waiting.add_metric([name], numbers["waiting"])
    yield from (replicas, queue)
    actions = CounterMetricFamily(
        "meshnode_placement_actions",
        "Replicas this node started, promoted from backup, demoted, stopped, or gave up on.",
        labels=["action"],
    )
    for action in ("start", "promote", "demote", "stop", "give_up"):
        actions.add_metric([action], deployments["actions"].get(action, 0))
    yield from (desired, ready, waiting, actions)


def add_metrics_route(
    app: FastAPI,
    stats: Callable[[], dict[str, Any]],
    meter: RequestMeter | None = None,
    members: Members | None = None,
    routes: RouteMeter | None = None,
    collectors: Sequence[Collector] = (),
) -> None:
    """Serve ``GET /metrics`` from `stats`, the meters and `collectors` (parts with families of their
    own); with `members`, ``/v1/prometheus/targets`` too."""
    registry = CollectorRegistry()
    registry.register(_AgentCollector(stats))
    for collector in collectors:
        registry.register(collector)
    for source in (meter, routes):
        if source is not None:
            registry.register(_FamiliesCollector(source))
    if members is not None:
        add_targets_route(app, members)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# Batch sizes as apps set them (max_batch_size, a text generator's engine): powers of two.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _batch_metrics(batches: dict[str, dict[int, int]]) -> Metric:
    """Requests per batch of this node's replicas, from their workers' reports."""
    family = HistogramMetricFamily(
        "meshnode_batch_size",
        "Requests run together per batch by this node's replica (predict_batch, or a text "
        "generator's engine); counts start again when its worker restarts.",
        labels=["deployment"],
    )
    for name, counts in sorted(batches.items()):
        if not counts:
            continue
        buckets = [
            (str(bound), float(sum(n for size, n in counts.items() if size <= bound)))
            for bound in BATCH_BUCKETS
        ]
        buckets.append(("+Inf", float(sum(counts.values()))))
        family.add_metric([name], buckets, float(sum(size * n for size, n in counts.items())))
    return family


def _job_metrics(jobs: dict[str, Any]) -> Iterator[Metric]:
    """The async jobs this node holds copies of, and the webhooks it tried."""
    held = GaugeMetricFamily(
        "meshnode_jobs",
        "Jobs this node holds a copy of, by deployment and status.",
        labels=["deployment", "status"],
    )
    for (deployment, status), count in sorted(jobs["held"].items()):
        held.add_metric([deployment, status], count)
    yield held
    age = GaugeMetricFamily(
        "meshnode_job_queue_age_seconds",
        "Age of the oldest queued job held here, per deployment.",
        labels=["deployment"],
    )
    for deployment, seconds in sorted(jobs["queue_age_s"].items()):
        age.add_metric([deployment], seconds)
    yield age
    yield GaugeMetricFamily(
        "meshnode_jobs_running", "Jobs this node is running now.", value=jobs["running_here"]
    )
    ended = CounterMetricFamily(
        "meshnode_jobs_ended",
        "Jobs this node ended (ran to completion or failure, or cancelled), by deployment and status; "
        "one node ends each job, so a sum() over nodes counts it once.",
        labels=["deployment", "status"],
    )
    for (deployment, status), count in sorted(jobs["ended"].items()):
        ended.add_metric([deployment, status], count)
    yield ended
    tries = CounterMetricFamily(
        "meshnode_webhook_deliveries",
        "Webhook tries made by this node, by outcome: delivered, retry (failed, tried again later), gave_up.",
        labels=["outcome"],
    )
    for outcome in ("delivered", "retry", "gave_up"):
        tries.add_metric([outcome], jobs["webhook_tries"].get(outcome, 0))
    yield tries
