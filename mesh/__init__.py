"""Pure distributed core: membership (SWIM + Lifeguard), gossip, wire types. No I/O, no clocks.

Every module here is logic only: time and randomness come in as arguments, effects go out as
values, and the shells in ``meshnode`` (the ``node/`` folder) carry them out. The map, by concern:

Membership (docs/membership.md)
    ``membership.py`` the SWIM state machine, which drives ``probe.py`` (failure detection),
    ``suspicion.py`` (Lifeguard's timeouts), ``awareness.py`` (local health), ``stalls.py`` (its
    own pauses held against nobody), ``seeds.py`` (joining),
    ``broadcast_queue.py`` (dissemination), ``load_news.py`` and ``load_gate.py`` (load as a
    delta), ``exchange.py`` (full state in parts), ``anti_entropy.py`` (when to exchange it), and
    ``shared_tables.py`` (the tables gossiped with it); ``member.py``, ``metadata.py``,
    ``effects.py``, ``types.py`` are its nouns; ``config.py`` its knobs; ``admission.py`` and
    ``bounds.py`` the limits on what it accepts; ``view_versions.py`` its change counters;
    ``reachability.py`` and ``relay_wire.py`` nodes nobody can dial; ``simulation.py`` runs many
    cores on a seeded event loop.
Wire
    ``wire.py`` (gossip packets) and ``wire_fields.py`` (their checked fields), ``envelope.py``,
    ``envelope_frames.py`` (a worker's Reply read as bytes), ``reply_pieces.py`` (a file answer in
    frames), ``worker_link.py`` (a link handed to a worker) and ``bulk_frames.py`` (the data
    plane), ``stream_frames.py`` (frames on a sealed link's byte stream, and its handshake frames),
    ``validated.py`` (validation kept by bytes).
Shared tables
    ``records.py`` and ``deployment.py`` (deployments), ``access.py`` (API keys),
    ``keyring_record.py`` (the mesh's tokens), ``jobs.py``, ``job_policy.py``, ``job_listing.py``
    (pages of the mesh's jobs) and ``webhook_schedule.py`` (async jobs).
Routing (docs/architecture.md)
    ``routing.py`` the policy over ``route_types.py`` and ``route_candidates.py``; ``affinity.py``
    (prefix affinity), ``queueing.py`` (a replica's queue and deadlines); ``traffic.py`` (the
    requests each node gossips it forwarded and served, for the dashboard and ``meshnode top``);
    ``deadlines.py`` (the deadlines of the calls in flight, kept for one timer).
Placement and scaling
    ``placement.py``, ``autoscale.py``, ``prewarm.py``; the replicas as gossiped in
    ``replica_state.py``, ``replica_index.py``, ``replica_view.py``; ``restarts.py`` and
    ``backoff.py`` for a replica's worker.
Models and moderation
    ``model_manifest.py``, ``pull_plan.py``, ``token_bucket.py`` (model pulls); ``moderation.py``,
    ``moderation_checks.py``, ``moderation_patterns.py``.
"""
