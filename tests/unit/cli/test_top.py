"""``meshnode top`` without a mesh: the data, the frame as drawn, failures, and the command's outputs."""

from __future__ import annotations

import copy
import json
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

import meshnode.cli.top
from meshnode.cli import main
from meshnode.cli.node_http import NodeAccess
from meshnode.cli.text_table import plain
from meshnode.cli.top import Reader, fallbacks, next_frame
from meshnode.cli.top_data import Frame, Rate, TopData, member_rates, summarize, to_json
from meshnode.cli.top_draw import render
from meshnode.cli.top_rates import Measured, Traffic
from tests.unit.cli.test_cli import PEER_ID, SAMPLE_VIEW, SELF_ID

ECHO = "meshnode.apps.echo:Echo"


def mesh_view() -> dict[str, Any]:
    """The peers tests' two members, now serving echo at measured rates, the laptop also loading t2i."""
    mesh = copy.deepcopy(SAMPLE_VIEW)
    gpu_box, laptop = mesh["members"]
    gpu_box["speeds"] = {"echo": {"service_ms": 2.5, "rps": 10.0}}
    gpu_box["replicas"] = {"echo": {"state": "ready"}}
    laptop["speeds"] = {"echo": {"service_ms": 5.0, "rps": 30.0}}
    laptop["replicas"] = {"echo": {"state": "ready"}, "t2i": {"state": "starting"}}
    laptop["load"] = {"cpu": 3.0, "in_flight": 0, "mem_used": 4 << 30, "mem_total": 16 << 30}
    laptop["region"], laptop["zone"] = "eu", "home"
    return mesh


def deployments_body() -> dict[str, Any]:
    return {
        "deployments": [
            {
                "name": "echo",
                "app": ECHO,
                "ready": 2,
                "desired": 2,
                "min_replicas": 2,
                "max_replicas": 2,
                "replicas": [{"node": "gpu-box", "status": "ready"}, {"node": "laptop", "status": "ready"}],
                "missing": None,
            },
            {
                "name": "t2i",
                "app": "meshnode.apps.text_to_image:TextToImage",
                "ready": 0,
                "desired": 1,
                "min_replicas": 1,
                "max_replicas": 1,
                "replicas": [{"node": "laptop", "status": "starting"}],
                "missing": "0 of 1 ready; 1 starting",
            },
            {
                "name": "gpu",
                "app": ECHO,
                "ready": 0,
                "desired": 1,
                "min_replicas": 1,
                "max_replicas": 1,
                "replicas": [],
                "unschedulable": "no node has cuda (2 node(s) checked)",
            },
        ]
    }


def test_without_measurements_the_gossiped_speeds_give_rates_weighted_by_rate() -> None:
    data = summarize(mesh_view(), deployments_body())
    laptop, gpu_box = data.nodes  # this node first
    assert (laptop.name, laptop.is_self, gpu_box.is_self) == ("laptop", True, False)
    assert (laptop.cpu_percent, laptop.memory_percent, laptop.in_flight) == (3.0, 25.0, 0)
    assert laptop.replicas == {"echo": "ready", "t2i": "starting"}
    assert laptop.rps is None  # what enters a node is only known from its counters
    assert (laptop.reach, gpu_box.reach) == ("via gpu-box", "direct")
    assert gpu_box.memory_percent is None  # it gossips no memory figures
    echo, t2i, gpu = data.deployments
    assert echo.rps == 40.0
    assert echo.mean_ms == pytest.approx((10 * 2.5 + 30 * 5.0) / 40)
    assert (echo.errors_per_s, echo.p99_ms) == (None, None)  # not gossiped
    assert (t2i.rps, t2i.mean_ms, t2i.reason) == (0.0, None, None)  # a bare count is no reason
    assert gpu.reason == "no node has cuda (2 node(s) checked)"
    assert (data.alive, data.rps, data.self_name, data.rates) == (2, 40.0, "laptop", "gossiped")


def test_measured_rates_take_the_place_of_the_gossiped_ones() -> None:
    measured = Measured(
        2.0,
        {"echo": Traffic(rps=12.5, errors_per_s=0.5, mean_ms=3.0, p50_ms=2.0, p99_ms=9.0)},
        {SELF_ID: 12.5, PEER_ID: 0.0},
    )
    data = summarize(mesh_view(), deployments_body(), measured)
    assert [node.rps for node in data.nodes] == [12.5, 0.0]
    echo, t2i, _ = data.deployments
    assert (echo.rps, echo.errors_per_s, echo.mean_ms, echo.p99_ms) == (12.5, 0.5, 3.0, 9.0)
    assert (t2i.rps, t2i.errors_per_s, t2i.mean_ms) == (0.0, 0.0, None)  # no request entered: idle
    assert (data.rates, data.measured_s, data.rates_in_words) == ("measured", 2.0, "rates over 2.0 s")


def test_idle_replicas_average_their_last_service_times_plainly() -> None:
    mesh = mesh_view()
    for member in mesh["members"]:
        member["speeds"]["echo"]["rps"] = 0
    echo = summarize(mesh, deployments_body()).deployments[0]
    assert (echo.rps, echo.mean_ms) == (0.0, pytest.approx(3.75))


def test_peers_odd_numbers_are_read_leniently() -> None:
    member = {"speeds": {"a": {"rps": "fast", "service_ms": -1}, "b": "x", "c": {"rps": True}}}
    assert member_rates(member) == {"a": Rate(0.0, None), "c": Rate(0.0, None)}
    mesh = {"self": "x", "members": [{"id": "x", "load": {"cpu": float("nan"), "in_flight": True}}, 7]}
    (row,) = summarize(mesh, {"deployments": "nope"}).nodes
    assert (row.cpu_percent, row.in_flight, row.name) == (None, None, "x")


def test_dead_members_count_no_rate() -> None:
    mesh = mesh_view()
    mesh["members"][0]["status"] = "dead"
    data = summarize(mesh, deployments_body())
    assert data.deployments[0].rps == 30.0 and data.alive == 1


def test_a_traffic_field_travels_as_it_came() -> None:
    mesh = mesh_view()
    mesh["members"][1]["traffic"] = {"window_s": 10.0, "requests": {"echo": [5, 0, 5]}}
    data = summarize(mesh, deployments_body())
    assert data.nodes[0].traffic == {"window_s": 10.0, "requests": {"echo": [5, 0, 5]}}
    frame = Frame("http://n", "http://n", data, 0.0)
    assert to_json(frame)["nodes"][0]["traffic"]["requests"] == {"echo": [5, 0, 5]}


def test_without_measurements_the_gossiped_traffic_windows_give_rates_errors_and_p99() -> None:
    mesh = mesh_view()
    gpu_box, laptop = mesh["members"]
    # 100 fast requests entered the laptop in 10 s, 50 slower ones (2 failed) the gpu box in 5 s.
    laptop["traffic"] = {"window_s": 10.0, "requests": {"echo": [100, 0, 100]}, "links": {PEER_ID: 40}}
    gpu_box["traffic"] = {"window_s": 5.0, "requests": {"echo": [50, 2, 0, 0, 0, 0, 50]}}
    data = summarize(mesh, deployments_body())
    echo = data.deployments[0]
    assert (echo.rps, echo.errors_per_s) == (20.0, 0.4)  # 10/s + 10/s, not the speeds' 40
    assert echo.p99_ms is not None and 50 < echo.p99_ms <= 100  # from the summed histograms
    assert {node.name: node.rps for node in data.nodes} == {"laptop": 10.0, "gpu-box": 10.0}
    assert data.rates == "traffic" and "10 s" in data.rates_in_words


MEASURED = Measured(
    2.0,
    {"echo": Traffic(rps=40.0, errors_per_s=0.5, mean_ms=4.4, p50_ms=2.0, p99_ms=120.0)},
    {SELF_ID: 30.0, PEER_ID: 10.0},
)


def frame(error: str | None = None, interval_s: float | None = 2.0) -> Frame:
    data = summarize(mesh_view(), deployments_body(), MEASURED)
    return Frame("http://127.0.0.1:8470", "http://127.0.0.1:8470", data, 0.0, error, interval_s)


def section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1 : end]


def test_the_frame_shows_nodes_and_deployments() -> None:
    text = plain(render(frame()))
    headline = text.splitlines()[0]
    assert headline.startswith("meshnode top  laptop's view (http://127.0.0.1:8470)  2/2 nodes up")
    assert "3 deployments  40.0 req/s" in headline and "every 2 s, Ctrl-C quits" in headline
    nodes = section(text, "NODES (2 of 2 up)")
    assert nodes[0].split() == [
        *("NODE", "STATUS", "REGION/ZONE", "DEVICE", "CPU", "MEM", "IN", "FLIGHT"),
        *("REQ/S", "REACH", "REPLICAS"),
    ]
    assert nodes[1].split() == [
        *("*", "laptop", "alive", "eu/home", "cpu", "2c", "23.4G", "3%", "25%", "0", "30.0"),
        *("via", "gpu-box", "echo", "ready,", "t2i", "starting"),
    ]
    assert nodes[2].split()[:3] == ["gpu-box", "suspect", "-"]
    deployments = section(text, "DEPLOYMENTS (rates over 2.0 s)")
    assert deployments[0].split() == [
        "DEPLOYMENT",
        "READY",
        "REQ/S",
        "ERR/S",
        "LATENCY",
        "P99",
        "REPLICAS",
        "APP",
    ]
    assert deployments[1].split() == [
        *("echo", "2/2", "40.0", "0.50", "4.4", "ms", "120", "ms"),
        *("gpu-box", "ready,", "laptop", "ready", ECHO),
    ]
    assert deployments[2].split()[:6] == ["t2i", "0/1", "0", "0", "-", "-"]
    assert deployments[3].split()[:4] == ["gpu", "0/1", "0", "0"]
    assert deployments[4] == "gpu: no node has cuda (2 node(s) checked)"
    assert "\x1b[" not in text


def test_a_failure_is_a_line_in_the_view_with_the_last_data_kept() -> None:
    text = plain(render(frame("cannot reach a meshnode at http://127.0.0.1:8470: refused")))
    line = text.splitlines()[1]
    assert line.startswith("cannot reach a meshnode at http://127.0.0.1:8470: refused, retrying every 2 s;")
    assert "showing the view of" in line
    assert section(text, "NODES")  # still drawn
    alone = Frame("http://x", None, None, 0.0, "cannot reach a meshnode at http://x", 2.0)
    assert plain(render(alone)).splitlines()[1:] == [
        "cannot reach a meshnode at http://x, retrying every 2 s"
    ]


def test_on_a_narrow_terminal_the_names_states_and_counts_stay() -> None:
    console = Console(width=60, force_terminal=True, color_system=None)
    with console.capture() as captured:
        console.print(render(frame()))
    text = captured.get()
    assert all(len(line) <= 60 for line in text.splitlines())
    assert section(text, "NODES")[0].split()[:3] == ["NODE", "STATUS", "CPU"]
    assert section(text, "DEPLOYMENTS")[0].split()[:3] == ["DEPLOYMENT", "READY", "REQ/S"]


def test_next_frame_keeps_the_last_data_on_a_failure() -> None:
    data = summarize(mesh_view(), deployments_body())
    first = next_frame(None, "http://a", lambda: ("http://a", data, ()), 10.0, 2.0)
    assert (first.data, first.at, first.error) == (data, 10.0, None)

    def failing() -> tuple[str, TopData, tuple[str, ...]]:
        raise click.ClickException("cannot reach a meshnode at http://a")

    failed = next_frame(first, "http://a", failing, 12.0, 2.0)
    assert (failed.data, failed.at, failed.error) == (data, 10.0, "cannot reach a meshnode at http://a")
    never = next_frame(None, "http://a", failing, 12.0, 2.0)
    assert (never.data, never.at) == (None, 12.0)
    assert next_frame(never, "http://a", failing, 14.0, 2.0).at == 14.0  # nothing kept: the attempt's time


def test_fallbacks_are_other_alive_members_that_can_be_dialed() -> None:
    mesh = {
        "self": "me",
        "members": [
            {"id": "me", "status": "alive", "http": "127.0.0.1:1"},
            {"id": "b", "status": "alive", "http": "10.0.0.2:8470", "tls": True},
            {"id": "c", "status": "dead", "http": "10.0.0.3:8470"},
            {"id": "d", "status": "alive", "http": "0.0.0.0:8470"},
            {"id": "e", "status": "alive", "http": "[::]:8470"},
            {"id": "f", "status": "alive", "http": "node-f.lan:8470"},
            {"id": "g", "status": "alive"},
        ],
    }
    assert fallbacks(mesh, "http://127.0.0.1:1") == ["https://10.0.0.2:8470", "http://node-f.lan:8470"]
    assert fallbacks(mesh, "http://127.0.0.1:1", limit=1) == ["https://10.0.0.2:8470"]


LAPTOP, GPU_BOX = "http://127.0.0.1:8470", "http://127.0.0.2:8470"


def metrics_text(scrape: int) -> str:
    """A node's /metrics at its `scrape`-th scrape: 10 more echo requests each time, one a 500."""
    bounds = ["0.005", "0.01", "0.025", "+Inf"]
    lines = [
        "# TYPE meshnode_requests_total counter",
        f'meshnode_requests_total{{code="200",deployment="echo"}} {9 * scrape}',
        f'meshnode_requests_total{{code="500",deployment="echo"}} {scrape}',
        f'meshnode_requests_total{{code="404",deployment="_unknown"}} {100 * scrape}',
        "# TYPE meshnode_request_duration_seconds histogram",
        *(
            f'meshnode_request_duration_seconds_bucket{{deployment="echo",le="{le}"}} {count * scrape}'
            for le, count in zip(bounds, [5, 9, 10, 10], strict=True)
        ),
        f'meshnode_request_duration_seconds_count{{deployment="echo"}} {10 * scrape}',
        f'meshnode_request_duration_seconds_sum{{deployment="echo"}} {0.07 * scrape}',
    ]
    return "\n".join(lines) + "\n"


class FakeMesh:
    """httpx.request answering /v1/mesh, /v1/deployments and /metrics for the URLs that are up.

    The laptop (this node) is at LAPTOP, gpu-box (alive) at GPU_BOX; each /metrics counts 10 more
    echo requests than the last.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, up: set[str]) -> None:
        self.up = up
        self.asked: list[str] = []
        self.scrapes: dict[str, int] = {}
        monkeypatch.setattr(httpx, "request", self.request)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.asked.append(url)
        base = "/".join(url.split("/", 3)[:3])
        path = url.removeprefix(base)
        if base not in self.up:
            raise httpx.ConnectError("refused", request=httpx.Request(method, url))
        if path == "/metrics":
            self.scrapes[base] = self.scrapes.get(base, 0) + 1
            response = httpx.Response(200, text=metrics_text(self.scrapes[base]))
        else:
            mesh = mesh_view()
            gpu_box = mesh["members"][0]
            gpu_box["http"], gpu_box["status"] = GPU_BOX.removeprefix("http://"), "alive"
            response = httpx.Response(200, json=mesh if path == "/v1/mesh" else deployments_body())
        response.request = httpx.Request(method, url)
        return response


class Ticks:
    """A monotonic clock that moves 2 s each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 2.0
        return self.now


def test_rates_are_measured_from_every_nodes_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMesh(monkeypatch, {LAPTOP, GPU_BOX})
    reader = Reader(LAPTOP, NodeAccess(), 1.0, clock=Ticks())
    first = reader.read()[1]
    assert first.rates == "gossiped"  # one scrape: nothing to measure yet
    _, data, notes = reader.read()
    assert notes == () and fake.scrapes == {LAPTOP: 2, GPU_BOX: 2}
    assert data.rates == "measured" and data.measured_s is not None
    echo = data.deployments[0]
    # Two nodes, 10 more requests each, over 4 s of ticks (two reads of the clock per node apart).
    assert echo.rps == pytest.approx(20 / data.measured_s)
    assert echo.errors_per_s == pytest.approx(2 / data.measured_s)
    assert echo.mean_ms == pytest.approx(7.0)
    assert echo.p99_ms is not None and 10.0 < echo.p99_ms <= 25.0
    assert [node.rps for node in data.nodes] == [pytest.approx(10 / data.measured_s)] * 2


def test_a_node_whose_metrics_do_not_answer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeMesh(monkeypatch, {LAPTOP})
    reader = Reader(LAPTOP, NodeAccess(), 1.0, clock=Ticks())
    reader.read()
    _, data, notes = reader.read()
    assert notes == ("rates leave out gpu-box: their /metrics did not answer",)
    assert [node.rps for node in data.nodes] == [pytest.approx(10 / data.measured_s), None]


def test_the_reader_reads_another_member_while_the_asked_one_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMesh(monkeypatch, {LAPTOP, GPU_BOX})
    reader = Reader(LAPTOP, NodeAccess(), 1.0, clock=Ticks())
    assert reader.read()[0] == LAPTOP
    fake.up = {GPU_BOX}
    url, data, notes = reader.read()
    assert url == GPU_BOX and data.self_name == "laptop"
    assert notes[0].startswith(f"{LAPTOP} does not answer (cannot reach a meshnode at {LAPTOP}")
    fake.up = set()
    with pytest.raises(click.ClickException, match=r"cannot reach a meshnode at http://127\.0\.0\.1:8470"):
        reader.read()
    fake.up = {LAPTOP, GPU_BOX}
    assert reader.read()[0] == LAPTOP  # back to the asked node as soon as it answers


def test_top_once_prints_one_plain_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeMesh(monkeypatch, {LAPTOP, GPU_BOX})
    monkeypatch.setattr(meshnode.cli.top.time, "sleep", lambda seconds: None)
    result = CliRunner().invoke(main, ["top", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("meshnode top  laptop's view")
    assert "\x1b[" not in result.output
    assert "Ctrl-C" not in result.output  # one frame: no refresh to speak of
    assert "DEPLOYMENTS (rates over " in result.output  # two samples: measured rates
    # Not a terminal: the same single frame without --once.
    plain_frame = CliRunner().invoke(main, ["top"]).output
    assert [line.split()[:1] for line in plain_frame.splitlines()] == [
        line.split()[:1] for line in result.output.splitlines()
    ]


def test_top_json_once_is_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeMesh(monkeypatch, {LAPTOP, GPU_BOX})
    monkeypatch.setattr(meshnode.cli.top.time, "sleep", lambda seconds: None)
    result = CliRunner().invoke(main, ["top", "--json", "--once", "--node", "127.0.0.1:8470"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert (body["self"], body["members"], body["rates"]) == ("laptop", {"total": 2, "alive": 2}, "measured")
    assert body["rps"] > 0 and body["deployments"][0]["errors_per_s"] > 0
    assert body["nodes"][1]["status"] == "alive"
    assert [node["name"] for node in body["nodes"]] == ["laptop", "gpu-box"]
    assert body["nodes"][0]["id"] == SELF_ID and body["nodes"][1]["id"] == PEER_ID
    assert body["deployments"][0]["replicas"] == [
        {"node": "gpu-box", "status": "ready"},
        {"node": "laptop", "status": "ready"},
    ]


def test_top_once_against_no_node_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeMesh(monkeypatch, set())
    result = CliRunner().invoke(main, ["top", "--once"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach a meshnode at http://127.0.0.1:8470")
    assert "Traceback" not in result.output


def test_the_json_stream_ends_cleanly_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeMesh(monkeypatch, {LAPTOP, GPU_BOX})
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(meshnode.cli.top.time, "sleep", sleep)
    result = CliRunner().invoke(main, ["top", "--json", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["self"] == "laptop" for line in lines)


def test_the_live_view_redraws_in_place_and_leaves_the_last_frame() -> None:
    import io

    from meshnode.cli.top import LiveView

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with LiveView(console) as view:
        view.show(frame())
        view.show(frame("cannot reach a meshnode at http://127.0.0.1:8470"))
    text = out.getvalue()
    assert text.count("meshnode top  laptop's view") >= 2  # each frame, and the last once more at exit
    assert "\x1b[2K" in text or "\x1b[1A" in text  # the second frame was drawn over the first
    assert "cannot reach a meshnode" in text.rsplit("meshnode top", 1)[1]
