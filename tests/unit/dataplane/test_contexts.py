"""The data plane's ZeroMQ contexts (node/dataplane/contexts.py): a policy is tried before libzmq gets it."""

from __future__ import annotations

import os
import threading

import pytest
import zmq

from meshnode.dataplane import contexts

from .test_links_server import io_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")


def test_a_policy_is_tried_on_a_thread_of_its_own_and_the_caller_keeps_its_own() -> None:
    before = os.sched_getscheduler(0)
    assert contexts.allowed(os.SCHED_BATCH)
    # SCHED_FIFO at priority 0 is refused by every kernel (EINVAL): libzmq would abort on it.
    assert not contexts.allowed(os.SCHED_FIFO)
    assert os.sched_getscheduler(0) == before
    assert not any(t.name == "meshnode-sched-probe" for t in threading.enumerate())


def io_threads_under(make: contexts.ContextMaker, policy: str) -> int:
    """ZeroMQ I/O threads under `policy` that a context from `make` adds once it has a socket."""
    before = io_threads(policy)
    ctx = make()
    server, client = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        # A message over TCP goes through the I/O thread, which took its policy as it started.
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"x")
        assert server.poll(10_000), "no message through the context's I/O thread"
        return io_threads(policy) - before
    finally:
        server.close(linger=0)
        client.close(linger=0)
        ctx.term()


def test_the_contexts_take_their_policies_and_a_refused_one_leaves_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert io_threads_under(contexts.serving_context, "SCHED_BATCH") == 1
    assert io_threads_under(contexts.bulk_context, "SCHED_IDLE") == 1
    monkeypatch.setattr(contexts, "allowed", lambda policy: False)  # a sandbox that refuses them
    assert io_threads_under(contexts.serving_context, "SCHED_BATCH") == 0
    assert io_threads_under(contexts.bulk_context, "SCHED_IDLE") == 0
    assert io_threads_under(contexts.bulk_context, "SCHED_OTHER") == 1  # the default, as started
