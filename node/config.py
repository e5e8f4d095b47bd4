"""The agent's knobs: one frozen dataclass, each field with what it does and why its default.

The CLI (``meshnode join``) builds an ``AgentConfig`` from its flags and takes every default from
here; membership timings live in ``meshnode.mesh.config.MembershipConfig`` and are chosen by
``profile``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .addresses import check_advertised
from .mesh.config import PROFILES, MembershipConfig

DEFAULT_HTTP_PORT = 8470
DEFAULT_MESH_PORT = 8471
# Where client commands (`peers`, `predict`) look for a node unless told otherwise.
DEFAULT_NODE_URL = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}"


def default_data_dir() -> Path:
    """Where a node keeps its id and state unless told otherwise (``$MESHNODE_HOME`` or ~/.meshnode)."""
    return Path(os.environ.get("MESHNODE_HOME", Path.home() / ".meshnode"))


@dataclass(frozen=True)
class AgentConfig:
    """Everything `meshnode join` decides about one agent."""

    # Human-readable node name shown in `meshnode peers`; defaults to the host name.
    name: str
    # HTTP API bind address. 0.0.0.0 serves every interface; the advertised address then uses
    # the first mesh interface.
    http_host: str = "0.0.0.0"
    # HTTP API port (0 picks a free one).
    http_port: int = DEFAULT_HTTP_PORT
    # PEM certificate (chain) and its unencrypted private key: set both to serve HTTPS on the HTTP
    # port, so API keys and payloads never cross the network in clear. Gossiped as the node's
    # `tls` flag, so clients and peers build https:// URLs. None: plain HTTP (loopback, a trusted
    # LAN, or TLS ended by a proxy in front).
    tls_cert: Path | None = None
    # The private key of `tls_cert` (PEM, not passphrase-protected: the agent starts unattended).
    tls_key: Path | None = None
    # Membership (gossip) socket bind address; data traffic has its own (`data_host`), so a large
    # payload never delays a probe.
    mesh_host: str = "0.0.0.0"
    # Membership socket port (0 picks a free one).
    mesh_port: int = DEFAULT_MESH_PORT
    # Data-plane bind address: requests forwarded between agents (sealed TCP links). Its own socket,
    # so a large payload never delays a membership probe.
    data_host: str = "0.0.0.0"
    # Data-plane port. 0 (a free port, advertised in gossip) lets several agents share a machine
    # with no flags; behind a firewall fix it (e.g. 8472) and open it between nodes.
    data_port: int = 0
    # The mesh address peers are told to dial, "host:port", when it is not the bound one: a node
    # behind NAT with a forwarded port, or in a container with a published port (`--advertise-mesh`).
    # Gossiped as this node's address and announced by mDNS; the socket still binds `mesh_host`.
    # "" derives it from the bind as without NAT: `mesh_host`, or for a wildcard the first interface
    # or a local IP, with the bound port. Never a wildcard, nor loopback while a seed or an interface
    # is on another machine (peers there would dial themselves).
    advertise_mesh: str = ""
    # The data-plane address peers are told to dial (`--advertise-data`), likewise; "" derives it from
    # `data_host` and the bound port. Behind NAT, also fix `data_port` so the forwarded port stays
    # right across restarts.
    advertise_data: str = ""
    # "host:port" membership addresses of nodes to join; retried with backoff while alone.
    seeds: tuple[str, ...] = ()
    # A node alone this long after contacting its seeds logs a warning per seed saying why (the host
    # does not resolve, nothing listens, no answer, or an answer that is not gossip). A seed on a
    # working network answers within a round trip; a few seconds leaves room for a seed that starts
    # at the same moment, so a mesh started all at once logs no false alarm.
    seed_warn_after_s: float = 3.0
    # The warning repeats while the node stays alone, each gap twice the one before up to this, so
    # a node left alone all night writes about one line per seed a minute, not one per retry.
    seed_warn_max_interval_s: float = 60.0
    # How long a warning's diagnosis waits for the seed's host name to resolve and its port to take
    # a TCP connection. Longer only delays the warning; a LAN answers in milliseconds.
    seed_probe_timeout_s: float = 2.0
    # Announce and browse `_meshnode._tcp.local.` by mDNS. Only a hint: SWIM decides liveness.
    mdns: bool = True
    # Interfaces (IP addresses) for mDNS and for the advertised address. Never "all": that
    # would send mDNS out of every network card on the machine.
    interfaces: tuple[str, ...] = ()
    # Locality label used by routing and placement.
    region: str = ""
    # Finer locality label within the region (a rack, a room, a cloud zone).
    zone: str = ""
    # Membership timing profile: "lan" (memberlist defaults) or "local" (fast, one machine).
    profile: str = "lan"
    # Fields of the profile set otherwise, as (name, value) pairs: `meshnode join --set
    # relay_keepalive_s=5` for a NAT that forgets idle connections sooner (docs/edge.md).
    membership_knobs: tuple[tuple[str, float], ...] = ()
    # Where the node keeps its state across restarts: node id, incarnation and deployment records
    # (meshnode.db), replica logs, and files apps write.
    data_dir: Path = field(default_factory=default_data_dir)
    # Agents only talk to agents of the same mesh id; lets two meshes share a LAN.
    mesh_id: str = "default"
    # The mesh's join token (at least 32 characters): every gossip packet and data-plane connection
    # is authenticated and encrypted with keys derived from it, so only holders are members. None:
    # `token_file`, then $MESHNODE_TOKEN, then the data dir's or the meshnode home's `token` file,
    # else a new one is made there (node/trust/token.py). Never shown in logs or repr.
    token: str | None = field(default=None, repr=False)
    # A file holding the token (one line, e.g. a mounted secret); read at start.
    token_file: Path | None = None
    # Serve HTTP to every client without an API key, not only to loopback ones. Off by default: an
    # open HTTP port lets anyone who reaches it run any deployment and read the mesh. For a trusted
    # lab network, or a proxy that checks keys itself; the agent says so loudly at start.
    insecure_http: bool = False
    # Pinned deployments NAME=APP (served by the inference runtime).
    deploy: tuple[str, ...] = ()
    # Folders app files may come from besides the node's Python environment: a `path/file.py:Class`
    # or config.yaml folder runs here only if it lies inside one (symlinks and `..` resolved). None
    # by default, so no declaration from the network makes the node import an arbitrary file;
    # `--deploy` of a file adds that file's folder for this node (docs/apps.md).
    app_dirs: tuple[Path, ...] = ()
    # Run config.yaml apps, whose bootstrap and job are shell commands run as the agent's user. Off
    # by default: whoever may declare a deployment could otherwise run any command here. A folder
    # pinned with `--deploy` runs without it: the node's owner typed it.
    allow_external_apps: bool = False
    # How often load is sampled. Cheap (psutil, non-blocking).
    load_sample_interval_s: float = 1.0
    # A change in system CPU use of at least this many percentage points is gossiped as soon as
    # meta_min_interval_s allows (as is any change in requests in flight, or 5 % of memory). Lower
    # costs gossip on a machine whose CPU swings; higher leaves every node's LOAD column that far off.
    load_cpu_change_points: float = 10.0
    # A gossiped load this old is replaced by one that drifted load_cpu_drift_points (or 1 % of
    # memory), so a small lasting change is shown within this time instead of never.
    load_max_age_s: float = 15.0
    # Smaller CPU moves are jitter between one-second samples: never gossiped, so an idle node
    # stays silent.
    load_cpu_drift_points: float = 3.0
    # On SIGTERM/SIGINT: how long to keep gossiping our `left` before exiting.
    leave_timeout_s: float = 3.0
    # Run the agent's event loop on uvloop when it is installed: less CPU per request on the
    # forwarding path (bench/forwarding.py). Off falls back to the standard asyncio loop.
    uvloop: bool = True
    # Deadline of a predict request unless the client sends X-Request-Timeout (seconds).
    request_timeout_s: float = 60.0
    # Largest accepted request body; bigger gets 413 before it is read whole.
    max_request_bytes: int = 16 * 1024 * 1024
    # A Server-Sent Events stream (predict, the OpenAI routes, /v1/events, job events) that sent
    # nothing for this long (a model thinking between tokens) gets a `: keep-alive` comment, so proxies
    # that cut idle responses (often after 30-60 s) keep it open. Lower behind a proxy with a shorter
    # idle timeout; each comment is 14 bytes that every SSE client skips.
    sse_keepalive_s: float = 15.0
    # How long an image URL of `POST /v1/images/generations` (`response_format: "url"`) stays
    # valid: OpenAI's own links live an hour, so clients written for it fetch well within that.
    openai_image_ttl_s: float = 3600.0
    # Disk the images behind those URLs take at most (in `<data_dir>/openai-images`); past it the
    # oldest go first, so a burst of requests shortens older links' lives but never fills the disk.
    # 256 MiB holds ~200 1024x1024 PNGs, more than a node makes in its TTL at CPU speed.
    openai_image_store_bytes: int = 256 * 1024 * 1024
    # Largest data-plane frame (a result, an image) accepted from a worker or peer.
    max_frame_bytes: int = 64 * 1024 * 1024
    # Nodes that keep a copy of each async job (its request, status and result) before the 202:
    # a job survives the loss of all but one of them. Each copy costs a data-plane round trip at
    # submit and the result's bytes on that node's disk. All nodes when the mesh has fewer.
    job_copies: int = 3
    # How long an ended job's status and result stay fetchable (BentoML keeps task results 24 h);
    # then 410, then the copies are deleted.
    job_ttl_s: float = 24 * 3600.0
    # Runs of one job at most when the node running it dies mid-run (each is a full rerun).
    job_max_attempts: int = 3
    # Jobs of one deployment that one node runs at once; more wait in its queue, first come first
    # served. Several nodes run jobs, so the mesh runs up to this many per node that holds some.
    job_running_per_deployment: int = 4
    # Largest job body: it is copied to `job_copies` nodes and kept, so far below predict's limit.
    job_max_body_bytes: int = 1024 * 1024
    # A job's answer larger than this is kept as a file on the node that made it and one other,
    # instead of inside every copy of its record (docs/jobs.md); smaller ones travel with the record.
    job_inline_result_bytes: int = 256 * 1024
    # Jobs one node holds at most (queued, running and ended within the TTL); past it a submit
    # gets 503, so a flood cannot fill the disk.
    job_max_held: int = 100_000
    # The wait after a webhook's first failed try; each later wait doubles, up to an hour, for 10
    # tries in about 2 hours (mesh/webhook_schedule.py). Shorter suits tests and demos.
    job_webhook_first_delay_s: float = 15.0
    # Anti-entropy of job copies (serving/job_sync.py): a node pulls the copies it missed (a write
    # made while it was down, starting or cut off) from each member it sees within this long of its
    # start and each member coming back alive, and from one co-holder in turn this often while it
    # holds an unfinished job. Each pull sends the standing of the jobs both hold (~40 B each).
    job_sync_s: float = 5.0
    # How often a node looks at its jobs when nothing wakes it (membership changes and copies
    # arriving do at once): what to start, take over, expire.
    job_tick_s: float = 0.5
    # Requests this node has outstanding at one peer at most; past it the peer counts as full and
    # the next candidate is tried. Bounds the memory a slow peer can make us hold.
    forward_max_in_flight_per_peer: int = 256
    # Requests one peer may have running here through the data plane at most; more are refused as
    # full (retryable), so one busy router cannot take every slot of this node.
    serve_max_in_flight_per_peer: int = 512
    # How long a request waits for a data-plane connection to a peer that has not connected yet
    # (a new peer). A peer whose connection dropped is skipped at once.
    forward_connect_timeout_s: float = 1.0
    # A data-plane link to a peer (a connection and its buffers) that no request has used this long
    # is closed; the next request to that peer opens it again, one handshake later (a round trip
    # and two X25519 agreements: well under a millisecond on a LAN). Peers that serve this node's traffic keep
    # theirs; a listing of every node's jobs or a finished pull does not hold a connection to each
    # peer for good. 0: never close.
    forward_link_idle_s: float = 60.0
    # Files larger than this travel between agents as several frames, so one big image does not
    # hold up the other requests multiplexed on the same connection.
    forward_chunk_bytes: int = 256 * 1024
    # Hand a peer's link for one deployment, once it asks, to the worker of that deployment's
    # replica here, which answers its calls itself (worker lanes, docs/architecture.md): a forwarded
    # request then costs this agent nothing and the hop about nothing (bench/forwarding.py). Off:
    # every peer's request crosses this agent, as it did before; peers that ask are declined.
    serve_worker_lanes: bool = True
    # Model bytes this node moves per second at most for pulls, in each direction: what all its pulls
    # fetch together, and what it serves to peers pulling from it (docs/models.md). A pull at full
    # speed takes a core for decryption, hashing and writing and fills the link; this bound leaves
    # serving most of the CPU and link (bench/models.py measures what is left: p99 during a pull) and
    # still moves a 10 GB model in under three minutes. 0: no bound (a dedicated link, a first sync).
    model_pull_bytes_per_s: int = 64 * 1024 * 1024
    # Chunk requests a pull keeps outstanding at each holder: two keep the link busy while a chunk is
    # checked and written; more only hold more chunks in memory (up to 16 MiB each).
    model_pull_chunks_per_peer: int = 2
    # A holder that has not answered a chunk request after this long is set aside for the rest of
    # the pull and its chunks asked from the others. Long enough for a chunk behind the holder's own
    # bound (several pullers at once), short enough that a hung peer costs one retry, not the pull.
    model_pull_chunk_timeout_s: float = 60.0
    # How long a replica's setup() and warm-up may take: a worker past it is killed and counts as a
    # failed setup (restarted with backoff; after `replica_setup_attempts` placement moves it on).
    replica_setup_timeout_s: float = 600.0
    # Requests queued per replica beyond what it runs at once; more get 429 with Retry-After.
    replica_queue_size: int = 64
    # A worker still busy with a request this long past the deadline is killed and restarted.
    replica_hang_grace_s: float = 5.0
    # Restart backoff of a crashed worker: first wait, doubled per crash up to the max.
    replica_restart_initial_s: float = 0.5
    # The longest wait between restarts of a worker that keeps crashing.
    replica_restart_max_s: float = 30.0
    # On stop or scale-down: how long in-flight requests may take to finish before the worker stops.
    replica_drain_timeout_s: float = 30.0
    # How often placement and the autoscaler re-run without a trigger (a declaration, a member
    # joining or dying, a request waiting for a cold start re-run them at once).
    placement_interval_s: float = 1.0
    # Placement runs at most this often however many triggers arrive: a large mesh changes its view
    # many times a second as load reports come in, and triggers meanwhile coalesce into one round.
    placement_min_round_gap_s: float = 0.1
    # A placed replica whose setup() fails this many times in a row is stopped and its node sits out
    # that deployment for `replica_failed_hold_s`, so placement tries the next node in rank.
    # Pinned replicas are never moved: they turn `failed` and try again after the hold, instead of
    # restarting every `replica_restart_max_s` forever. 0 never gives up (backoff alone).
    replica_setup_attempts: int = 3
    # How long a node sits out a deployment whose replica failed to start there (for a pinned
    # replica: the wait before its next try). Long, since the app most likely needs a fix first;
    # declaring the deployment with another app places it at once.
    replica_failed_hold_s: float = 300.0
    # A node with no peers yet waits this long before placing replicas on itself, so a node that
    # restarts does not start a replica of every deployment it remembers before it rejoins.
    placement_startup_grace_s: float = 5.0
    # Requests one node holds for one deployment while a replica cold-starts; more get 503 with
    # Retry-After. Each waits at most until its own deadline.
    cold_start_queue_size: int = 256
    # A request for a deployment this node has not heard of waits this long for its declaration to
    # arrive by gossip before the 404, so declaring on one node and calling another at once works.
    # The cost: a request for a misspelt name takes this long to fail.
    unknown_deployment_grace_s: float = 1.0
    # A removed deployment's tombstone is kept this long, so a node that missed the removal cannot
    # bring it back; a node offline for longer may (it then needs `meshnode undeploy` again).
    deployment_tombstone_ttl_s: float = 7 * 86400.0
    # How often expired tombstones are swept from the table and the store (sweeping is a full scan).
    deployment_tombstone_sweep_s: float = 60.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HTTPS needs both --tls-cert and --tls-key (or neither, for plain HTTP)")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        self.membership()  # a knob the profile refuses (a relation between timings) stops here
        if (
            self.job_copies < 1
            or not 1 <= self.job_max_attempts <= 100
            or self.job_running_per_deployment < 1
        ):
            raise ValueError(
                "jobs need job_copies >= 1, job_max_attempts in 1..100, job_running_per_deployment >= 1"
            )
        if min(self.job_tick_s, self.job_ttl_s, self.job_webhook_first_delay_s, self.job_sync_s) <= 0:
            raise ValueError("job_tick_s, job_ttl_s, job_sync_s and job_webhook_first_delay_s must be > 0")
        if self.model_pull_chunks_per_peer < 1 or not self.model_pull_chunk_timeout_s > 0:
            raise ValueError("model_pull_chunks_per_peer must be >= 1 and model_pull_chunk_timeout_s > 0")
        if not 0 <= self.forward_link_idle_s < math.inf:  # NaN too
            raise ValueError("forward_link_idle_s must be >= 0 (0: never close an idle link)")
        if not self.sse_keepalive_s > 0:  # 0 would send comments back to back
            raise ValueError("sse_keepalive_s must be > 0")
        for port_name in ("http_port", "mesh_port", "data_port"):
            port = getattr(self, port_name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{port_name} must be in 0..65535, got {port}")
        for flag, advertised in (
            ("--advertise-mesh", self.advertise_mesh),
            ("--advertise-data", self.advertise_data),
        ):
            if advertised:  # ConfigError naming the flag when peers could not dial it
                check_advertised(flag, advertised, seeds=self.seeds, interfaces=self.interfaces)

    def membership(self) -> MembershipConfig:
        """The membership settings of this agent's profile, with its `membership_knobs` set."""
        profile = MembershipConfig.profile(self.profile)
        knobs: dict[str, Any] = dict(self.membership_knobs)  # each of its field's type (cli/params.Knob)
        return replace(profile, **knobs) if knobs else profile
