"""One node as a model server: real agent, real worker processes, real predictors.

The predictors live in ``serving_apps.py``; the agent loads them by file path, as a user's app.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshnode.mesh.envelope import Call, Envelope, Failure, Hello, Reply, decode_envelope, encode_envelope
from meshnode.serving.worker import EXIT_AGENT_GONE
from tests.integration.agents import AgentProcess, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
DEPLOYMENTS = {
    "probe": f"{APPS}:Probe",
    "slow": f"{APPS}:SlowSetup",
    "batchy": f"{APPS}:Batchy",
    "png": f"{APPS}:PngMaker",
    "narrow": f"{APPS}:Narrow",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("serving")
    deploy = [arg for name, app in DEPLOYMENTS.items() for arg in ("--deploy", f"{name}={app}")]
    agent = AgentProcess("server", workdir, mesh_id="serving-test", extra_args=deploy)
    agent.start()
    try:
        agent.wait_ready()
        for name in ("probe", "batchy", "png", "narrow"):
            wait_for(lambda n=name: post(agent, n, {}).status_code == 200, 60, message=f"{name} to be ready")
        yield agent
    finally:
        agent.stop_all()


def post(
    agent: AgentProcess, deployment: str, body: object, timeout: float = 30.0, **kwargs: object
) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/predict/{deployment}", json=body, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def worker_pid(agent: AgentProcess) -> int:
    return int(post(agent, "probe", {"do": "pid"}).json()["pid"])


def test_json_round_trip_names_the_route_and_request(node: AgentProcess) -> None:
    headers = {"X-Request-Id": "req-42", "Accept": "application/json"}
    response = post(node, "probe", {"x": [1, 2]}, headers=headers)
    assert response.status_code == 200
    # The predictor's `header` argument is the client's Accept header (FedML's convention).
    assert response.json() == {"echo": {"x": [1, 2]}, "header": "application/json"}
    assert response.headers["X-Mesh-Route"] == "server"
    assert response.headers["X-Request-Id"] == "req-42"


def test_stream_arrives_chunk_by_chunk_as_server_sent_events(node: AgentProcess) -> None:
    arrivals: list[tuple[float, dict[str, int]]] = []
    body = {"stream": True, "n": 4, "interval_s": 0.5}
    headers = {"Accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{node.url}/v1/predict/probe", json=body, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and not event:
                arrivals.append((time.monotonic(), json.loads(line[5:])))
    assert [data for _, data in arrivals] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]
    assert event == "done"
    # The first chunk was delivered long before the last one was produced.
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_stream_without_sse_is_one_line_per_chunk(node: AgentProcess) -> None:
    with httpx.stream(
        "POST", f"{node.url}/v1/predict/probe", json={"stream": True, "interval_s": 0.05}
    ) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_a_stream_that_breaks_ends_with_an_error_event(node: AgentProcess) -> None:
    body = {"stream": True, "n": 3, "interval_s": 0.05, "fail_at": 1}
    response = post(node, "probe", body, headers={"Accept": "text/event-stream"})
    assert 'data: {"i": 0}' in response.text
    assert "event: error" in response.text
    assert "stream broke" in response.text


def test_accept_image_png_returns_the_file(node: AgentProcess) -> None:
    response = post(node, "png", {"seed": 3}, headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    # Without asking for the file, the same image arrives base64-encoded in JSON.
    as_json = post(node, "png", {"seed": 3}).json()
    assert as_json["content_type"] == "image/png"
    assert base64.b64decode(as_json["base64"]) == response.content


@pytest.mark.parametrize(
    ("accept", "content_type", "magic"),
    [
        pytest.param("image/jpeg", "image/jpeg", b"\xff\xd8\xff", id="jpeg-converted"),
        pytest.param("image/webp, image/gif;q=0.5", "image/webp", b"RIFF", id="webp-preferred"),
        pytest.param("image/*", "image/png", b"\x89PNG", id="any-image-as-made"),
        pytest.param("image/png;q=0, image/bmp", "image/bmp", b"BM", id="png-refused-bmp-taken"),
    ],
)
def test_an_image_answer_comes_in_a_type_the_client_accepts(
    node: AgentProcess, accept: str, content_type: str, magic: bytes
) -> None:
    response = post(node, "png", {"seed": 3}, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.content.startswith(magic)


def test_an_answer_in_no_acceptable_type_is_a_406(node: AgentProcess) -> None:
    response = post(node, "png", {"seed": 3}, headers={"Accept": "text/csv"})
    assert response.status_code == 406, response.text
    assert "image/png" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("deployment", "content", "headers", "status"),
    [
        ("nope", b"{}", {}, 404),
        ("probe", b"{not json", {}, 400),
        ("probe", b"[1, 2]", {}, 422),
        ("probe", b"{}", {"X-Request-Timeout": "soon"}, 400),
        ("probe", b"{}", {"X-Request-Timeout": "-1"}, 400),
        ("probe", b"{}", {"X-Request-Timeout": "1e-9"}, 400),  # under the millisecond deadlines travel in
    ],
)
def test_bad_requests_get_their_status_and_json_error(
    node: AgentProcess, deployment: str, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(f"{node.url}/v1/predict/{deployment}", content=content, headers=headers, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["message"]


def test_invalid_request_from_the_app_is_422(node: AgentProcess) -> None:
    response = post(node, "probe", {"do": "invalid"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == '"x" must be a number'


def test_too_large_body_gets_413(node: AgentProcess) -> None:
    huge = b'{"x": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    response = httpx.post(f"{node.url}/v1/predict/probe", content=huge, timeout=30)
    assert response.status_code == 413


def test_predictor_exception_is_500_without_traceback(node: AgentProcess) -> None:
    response = post(node, "probe", {"do": "raise"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "predictor"
    assert "predictor says no" in error["message"]
    assert "Traceback" not in response.text


def test_a_request_waits_for_a_loading_replica_within_its_deadline_else_503(tmp_path: Path) -> None:
    agent = AgentProcess(
        "loader", tmp_path, mesh_id="loading-test", extra_args=["--deploy", f"slow={DEPLOYMENTS['slow']}"]
    )
    agent.start()
    try:
        agent.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            patient = pool.submit(post, agent, "slow", {}, 90.0, headers={"X-Request-Timeout": "60"})
            hasty = post(agent, "slow", {}, headers={"X-Request-Timeout": "0.5"})
            assert hasty.status_code == 503, hasty.text
            assert int(hasty.headers["Retry-After"]) >= 1
            assert "within the request's deadline" in hasty.json()["error"]["message"]
            # The other request was held while the replica loaded, not failed: a cold start queues.
            answer = patient.result(timeout=90)
        assert answer.status_code == 200, answer.text
    finally:
        agent.stop_all()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_the_worker_runs_under_sched_batch_and_the_agent_does_not(node: AgentProcess) -> None:
    # A woken worker never preempts the agent (serving/worker.py): every thread of the worker,
    # the predictor's pool too, under SCHED_BATCH; the agent's event loop under the normal policy.
    pid = worker_pid(node)
    policies = {int(t.name): os.sched_getscheduler(int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()}
    assert len(policies) >= 2 and set(policies.values()) == {os.SCHED_BATCH}, policies
    assert os.sched_getscheduler(node.pid) == os.SCHED_OTHER


def test_worker_killed_mid_request_fails_it_retryably_and_comes_back(
    node: AgentProcess, tmp_path: Path
) -> None:
    pid = worker_pid(node)
    marker = tmp_path / "reached"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, node, "probe", {"do": "sleep", "s": 10, "marker": str(marker)})
        wait_for(marker.exists, 10, message="the request to reach the worker")
        psutil.Process(pid).kill()
        response = pending.result(timeout=30)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert httpx.get(f"{node.url}/health", timeout=5).status_code == 200
    wait_for(
        lambda: post(node, "probe", {"do": "pid"}).status_code == 200, 60, message="the replica to come back"
    )
    assert worker_pid(node) != pid


def test_predictor_crash_mid_request_leaves_the_agent_up(node: AgentProcess) -> None:
    response = post(node, "probe", {"do": "crash"})
    assert response.status_code == 503
    assert httpx.get(f"{node.url}/health", timeout=5).status_code == 200
    wait_for(lambda: post(node, "probe", {"x": 1}).status_code == 200, 60, message="the replica to come back")


def test_hung_predictor_gets_504_in_time_and_its_worker_is_replaced(node: AgentProcess) -> None:
    pid = worker_pid(node)
    started = time.monotonic()
    response = post(node, "probe", {"do": "sleep", "s": 120}, headers={"X-Request-Timeout": "1"})
    assert response.status_code == 504
    assert time.monotonic() - started < 5
    # Still busy past the deadline plus the grace period: the supervisor replaces the worker.
    wait_for(lambda: _answers_with_new_pid(node, pid), 60, message="the hung worker to be replaced")


def test_concurrent_requests_to_a_batchable_app_form_batches(node: AgentProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: post(node, "batchy", {"i": i}), range(16)))
    assert all(r.status_code == 200 for r in responses)
    assert sorted(r.json()["i"] for r in responses) == list(range(16))
    assert max(r.json()["batch"] for r in responses) > 1
    # The worker reports its batches (at most once a second) and /metrics shows them as a histogram.
    wait_for(lambda: batch_histogram(node)[1] >= 16, 30, message="16 batched requests on /metrics")
    batches, requests, le_1 = batch_histogram(node)
    assert batches < requests  # some batch held more than one request
    assert le_1 < batches


def batch_histogram(agent: AgentProcess) -> tuple[float, float, float]:
    """meshnode_batch_size for batchy: (batches, requests in them, batches of one)."""
    found = {"_count": 0.0, "_sum": 0.0, "le_1": 0.0}
    for family in text_string_to_metric_families(agent.get("/metrics").text):
        for sample in family.samples:
            if sample.labels.get("deployment") != "batchy" or not sample.name.startswith(
                "meshnode_batch_size"
            ):
                continue
            if sample.name.endswith(("_count", "_sum")):
                found[sample.name[len("meshnode_batch_size") :]] = sample.value
            elif sample.labels.get("le") == "1":
                found["le_1"] = sample.value
    return found["_count"], found["_sum"], found["le_1"]


def test_a_full_replica_refuses_at_once_with_429_and_retry_after(node: AgentProcess) -> None:
    # Capacity: one running plus a queue of two. Six at once: three served, three refused fast.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(node, "narrow", {"s": 1.5}), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 429, 429, 429]
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.elapsed.total_seconds() < 1.0 for r in refused)


def test_one_bad_request_does_not_fail_its_batch(node: AgentProcess) -> None:
    bodies = [{"i": i, "bad": i == 3} for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda body: post(node, "batchy", body), bodies))
    assert [r.status_code for r in responses] == [500 if i == 3 else 200 for i in range(8)]


def test_ready_deployments_are_gossiped_as_models(node: AgentProcess) -> None:
    wait_for(
        lambda: {"probe", "batchy", "png"} <= set(node.members()[node.node_id]["models"]),
        30,
        message="models in gossip",
    )


def _answers_with_new_pid(node: AgentProcess, old_pid: int) -> bool:
    response = post(node, "probe", {"do": "pid"})
    return response.status_code == 200 and response.json()["pid"] != old_pid


def test_meshnode_predict_prints_json_streams_and_writes_files(node: AgentProcess, tmp_path: Path) -> None:
    meshnode = [sys.executable, "-m", "meshnode", "predict", "--node", node.url]
    answer = subprocess.run([*meshnode, "probe", '{"q": 1}'], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["echo"] == {"q": 1}
    assert "served by server" in answer.stderr
    streamed = subprocess.run(
        [*meshnode, "probe", '{"interval_s": 0.05}', "--stream"], capture_output=True, text=True, timeout=60
    )
    assert [json.loads(line) for line in streamed.stdout.splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    image = tmp_path / "out.png"
    written = subprocess.run(
        [*meshnode, "png", "--output", str(image)], capture_output=True, text=True, timeout=60
    )
    assert written.returncode == 0, written.stderr
    assert image.read_bytes().startswith(b"\x89PNG")
    missing = subprocess.run([*meshnode, "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert "404" in missing.stderr and "Traceback" not in missing.stderr


def test_sigterm_drains_in_flight_requests_before_exiting(tmp_path: Path) -> None:
    agent = AgentProcess(
        "drainer", tmp_path, mesh_id="drain-test", extra_args=["--deploy", f"probe={DEPLOYMENTS['probe']}"]
    )
    agent.start()
    try:
        agent.wait_ready()
        wait_for(lambda: post(agent, "probe", {}).status_code == 200, 60, message="the replica to load")
        marker = tmp_path / "reached"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post, agent, "probe", {"do": "sleep", "s": 2, "marker": str(marker)})
            wait_for(marker.exists, 10, message="the request to reach the worker")
            agent.send_signal(signal.SIGTERM)
            response = pending.result(timeout=30)
        assert response.status_code == 200
        assert response.json() == {"slept": 2}
        assert agent.wait_exit() == 0
    finally:
        agent.stop_all()


def test_loaded_models_of_a_multi_model_app_are_gossiped_as_hints(tmp_path: Path) -> None:
    app = "any=meshnode.apps.any_model:AnyModel"
    agent = AgentProcess("multi", tmp_path, mesh_id="hints-test", extra_args=["--deploy", app])
    agent.start()
    try:
        agent.wait_ready()
        body = {"model": "alpha", "input": [1, 2, 3, 4, 5, 6, 7, 8]}
        wait_for(lambda: post(agent, "any", body).status_code == 200, 120, message="the app to load")
        post(agent, "any", {**body, "model": "beta"})

        def gossiped() -> bool:
            me = agent.members()[agent.node_id]
            return {"alpha", "beta"} <= set(me["hints"]) and "any" in me["models"]

        wait_for(gossiped, 30, message=lambda: f"hints in gossip: {agent.members()[agent.node_id]}")
    finally:
        agent.stop_all()


def test_the_same_request_id_twice_at_once_is_a_conflict(node: AgentProcess, tmp_path: Path) -> None:
    marker = tmp_path / "reached"
    headers = {"X-Request-Id": "twice"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            post, node, "probe", {"do": "sleep", "s": 1, "marker": str(marker)}, headers=headers
        )
        wait_for(marker.exists, 10, message="the first request to reach the worker")
        second = post(node, "probe", {}, headers=headers)
        assert first.result(timeout=30).status_code == 200
    assert second.status_code == 409


def test_a_request_finishing_just_past_its_deadline_does_not_get_the_worker_killed(
    node: AgentProcess,
) -> None:
    pid = worker_pid(node)
    response = post(node, "probe", {"do": "sleep", "s": 1.5}, headers={"X-Request-Timeout": "1"})
    assert response.status_code == 504
    # The predict finished 0.5 s late, well inside the hang grace: the same worker keeps serving.
    window_end = time.monotonic() + 7.0  # past the 5 s grace: a wrong kill would have happened
    while time.monotonic() < window_end:
        assert worker_pid(node) == pid
        time.sleep(0.5)


def test_external_server_app_round_trips_and_is_restarted_after_it_dies(tmp_path: Path) -> None:
    folder = Path(__file__).resolve().parents[3] / "apps" / "external_server"
    agent = AgentProcess("ext", tmp_path, mesh_id="external-test", extra_args=["--deploy", f"ext={folder}"])
    agent.start()
    try:
        agent.wait_ready()
        wait_for(lambda: post(agent, "ext", {"a": 1}).status_code == 200, 120, message="the external app")
        assert post(agent, "ext", {"a": 1}).json() == {"external": {"a": 1}}
        [job] = [
            p
            for p in psutil.Process(agent.pid).children(recursive=True)
            if "server.py" in " ".join(p.cmdline())
        ]
        job.kill()
        job.wait(10)
        wait_for(
            lambda: post(agent, "ext", {"a": 2}).status_code == 200, 60, message="the job to be restarted"
        )
        assert post(agent, "ext", {"a": 2}).json() == {"external": {"a": 2}}
    finally:
        agent.stop_all()


def test_a_sigkilled_agent_leaves_no_worker_behind(tmp_path: Path) -> None:
    agent = AgentProcess(
        "orphan", tmp_path, mesh_id="orphan-test", extra_args=["--deploy", f"probe={DEPLOYMENTS['probe']}"]
    )
    agent.start()
    try:
        agent.wait_ready()
        wait_for(lambda: post(agent, "probe", {}).status_code == 200, 60, message="the replica to load")
        pid = worker_pid(agent)
        agent.kill()
        wait_for(lambda: not _running(pid), 20, message=f"worker {pid} outlived its SIGKILLed agent")
    finally:
        agent.stop_all()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _FakeAgent:
    """The agent's end of a worker's link (node/serving/pipe.py), played by the test."""

    def __init__(self) -> None:
        self.sock, self.theirs = socket.socketpair()
        self.theirs.set_inheritable(True)

    def receive(self, timeout_s: float) -> Envelope | None:
        self.sock.settimeout(timeout_s)
        try:
            size = int.from_bytes(self._exactly(4), "little")
            return decode_envelope(self._exactly(size), max_bytes=1 << 30)
        except (TimeoutError, ConnectionError):
            return None

    def ask(self, request_id: str, body: dict[str, object], accept: str, timeout_s: float) -> Envelope | None:
        """Send a Call and return its answer, or None if none came within `timeout_s`."""
        frame = encode_envelope(Call(request_id, "png", body, accept, False, accept, int(timeout_s * 1000)))
        with contextlib.suppress(OSError):  # a worker that closed the link: no answer
            self.sock.sendall(len(frame).to_bytes(4, "little") + frame)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            answer = self.receive(left)
            if answer is not None and answer.request_id == request_id:
                return answer
        return None

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = self.sock.recv(size - len(data))
            if not piece:
                raise ConnectionError("the worker closed the link")
            data += piece
        return data

    def close(self) -> None:
        self.sock.close()
        self.theirs.close()


@pytest.mark.parametrize("limit", [4096, 1024 * 1024])
def test_the_worker_keeps_to_the_frame_limit_the_agent_gives_it(tmp_path: Path, limit: int) -> None:
    """The worker's frame limit is its --max-frame-bytes (the agent's max_frame_bytes), both ways."""
    agent = _FakeAgent()
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "meshnode.serving.worker", "--app", DEPLOYMENTS["png"],
                "--replica", "png-1", "--link-fd", str(agent.theirs.fileno()), "--data-dir", str(tmp_path),
                "--max-frame-bytes", str(limit), "--parent-pid", str(os.getpid()),
            ],
            stdout=log, stderr=subprocess.STDOUT, pass_fds=(agent.theirs.fileno(),),
        )  # fmt: skip
    agent.theirs.close()  # the worker's own now: its link closes when the worker exits
    small_png = {"size": 8}
    big_png = {"size": 100, "noise": True}  # about 10 kB that does not compress
    big_call = {"size": 8, "pad": "x" * 8192}  # 8 kB in, a small file out
    try:
        hello = agent.receive(timeout_s=60)
        assert isinstance(hello, Hello), "the worker did not say hello"
        assert hello.request_id == "png-1"
        assert isinstance(agent.ask("small", small_png, "image/png", timeout_s=10), Reply)
        big_answer = agent.ask("big-answer", big_png, "image/png", timeout_s=10)
        answer_to_big_call = agent.ask("big-call", big_call, "image/png", timeout_s=3)
        if limit > 100_000:
            assert isinstance(big_answer, Reply) and len(big_answer.data) > 8192
            assert isinstance(answer_to_big_call, Reply)
            assert worker.poll() is None
        else:
            # An answer over the limit is never sent; the request fails and says why.
            assert isinstance(big_answer, Failure)
            assert "over the frame limit of 4096 bytes" in big_answer.message
            # A call over the limit is refused: the worker closes the link rather than take the
            # frame in, and exits for its supervisor to start a fresh one.
            assert answer_to_big_call is None
            assert worker.wait(timeout=10) == EXIT_AGENT_GONE
    finally:
        worker.kill()
        worker.wait(timeout=10)
        agent.close()
