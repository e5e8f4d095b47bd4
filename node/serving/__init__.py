"""Serving: this node's replicas, and its share of leaderless placement.

- ``replicas.py``: ``Replicas``, the one table of this node's replicas and what others ask of it
- ``replica.py``: ``Replica``, supervises one worker process and carries requests to it;
  ``replica_settings.py``: its knobs; ``replica_model.py``: its model from the mesh's stores, here first;
  ``submitted.py``: ``Submitted``, a request that wants only its last answer, handed over by callback
  ``in_flight.py``: ``InFlight``, its requests at the worker, their answers' sinks and deadlines
- ``worker_process.py``: the worker as an operating-system process: start, stop, why it failed
- ``worker_run.py``: one run of a worker until it exits, and how it ended (a failed start or not)
- ``worker.py``: the worker process's own shell (``python -m meshnode.serving.worker``)
- ``pipe.py``: ``FramePipe``, the link between the agent and one worker (a socket pair, framed)
- ``handoff.py``: what crosses a worker's handoff socket: peers' links down, its reports back;
  ``handed_links.py``: ``HandedLinks``, the agent's end; ``worker_links.py``: ``WorkerLinks``, the
  worker's, which answers the calls of the links handed to it
- ``deployments.py``: ``Deployments``, runs the autoscaler and placement, starts and stops replicas here
- ``decisions.py``: ``Decisions``, each round's autoscaler, pre-warm forecast and plan per deployment
- ``plans.py``: placement plans, cached per live host set, and what an app needs of a node
- ``cold_start.py``: ``ColdStarts``, requests held until a replica of their deployment serves
- ``moderation.py``: ``Moderator``, each deployment's moderation applied to the calls this node commits
- ``views.py``: what ``GET /v1/deployments`` shows, built from the gossiped view
- ``jobs.py``: ``JobService``, async jobs for HTTP, and the loop that runs this node's share of them
- ``job_table.py``: ``JobTable``, the one table of job copies held here, and their copies elsewhere
- ``job_peers.py``: the other holders, reached over the data plane (``JOBS_CHANNEL``)
- ``job_sync.py``: ``JobSync``, which peers a node pulls the job copies it missed from, and when
- ``job_store.py``: ``JobStore``, the job copies on disk (``<data dir>/jobs.db``)
- ``job_files.py``: ``JobFiles``, large results as files by SHA-256, kept on two nodes
- ``job_result_files.py``: ``ResultFiles``, those files copied to and read from peers, in pieces
- ``job_limits.py``: ``JobLimits``, the job knobs of ``AgentConfig``
- ``job_runs.py``: one run of a job through the forwarder, its progress reports and whole answer
- ``job_webhooks.py``: ``WebhookSender``, one signed try of a job's webhook and the state it leads to
"""
