"""Large job results between nodes in pieces: every message fits a frame, reads resume at the other
holder, bad bytes never come out, and every number a peer sends is bounded.

Nodes here are ``ResultFiles`` over real files in a temporary folder, joined by the real
``JobPeers``; each call and answer goes through the data plane's encoder and the frame bound the
links hold (``decode_envelope(max_bytes=...)``), and a refused message becomes the ``Failure`` the
job table would answer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from meshnode.mesh.envelope import Call, Envelope, Failure, Reply, decode_envelope, encode_envelope
from meshnode.mesh.jobs import JobResult, StoredFile
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.job_files import MAX_UPLOADS, JobFiles
from meshnode.serving.job_peers import JobPeers
from meshnode.serving.job_result_files import ResultFiles

FRAME = 256 * 1024  # max_frame_bytes: pieces of 128 KiB
NAMES = [NodeId("a"), NodeId("b"), NodeId("c")]


class Mesh:
    """Three nodes' result files, their messages through the encoder and the frame bound."""

    def __init__(self, root: Path) -> None:
        self.files = {node: JobFiles(root / node) for node in NAMES}
        self.nodes = {node: self._node(node) for node in NAMES}
        self.asked: list[tuple[NodeId, dict[str, Any]]] = []
        self.largest = 0
        self.refuse: Callable[[NodeId, dict[str, Any]], bool] = lambda node, body: False

    def _node(self, me: NodeId) -> ResultFiles:
        async def in_thread(call: Callable[[], Any]) -> Any:
            return call()

        return ResultFiles(me, self.files[me], JobPeers(self, self._call), in_thread, FRAME)

    roster_version = 1  # the roster never changes here

    def members(self) -> Iterable[Member]:
        return [self.member(node) for node in NAMES]

    def member(self, node: NodeId) -> Member:
        meta = NodeMeta(name=node, data=f"127.0.0.1:{NAMES.index(node) + 1}", data_key="k" * 40)
        return Member(node, Address("127.0.0.1:9"), 0, Status.ALIVE, 1, meta, since=0.0)

    async def _call(self, node: NodeId, addr: str, key: str, call: Call) -> AsyncGenerator[Envelope, None]:
        frame = encode_envelope(call)
        self.largest = max(self.largest, len(frame))
        received = decode_envelope(frame, max_bytes=FRAME)  # over the bound: the link drops it
        assert isinstance(received, Call)
        self.asked.append((node, received.body))
        if self.refuse(node, received.body):
            yield Failure(call.request_id, "unavailable", "gone", True)
            return
        try:
            answer = await self.nodes[node].serve(received.body)
        except (KeyError, ValueError) as exc:
            yield Failure(call.request_id, "bad_request", str(exc), False)
            return
        reply = encode_envelope(Reply(call.request_id, answer, "application/json"))
        self.largest = max(self.largest, len(reply))
        yield decode_envelope(reply, max_bytes=FRAME)


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path)


def result_of(size: int) -> JobResult:
    return JobResult("application/octet-stream", os.urandom(size))


async def test_a_result_as_large_as_a_frame_is_kept_on_two_nodes_in_messages_that_fit_one(mesh: Mesh) -> None:
    result = result_of(FRAME)
    whole = Call(
        "x", "@jobs", {"op": "file_put", "sha256": "0" * 64, "data": result.data}, None, False, "", 1
    )
    assert len(encode_envelope(whole)) > FRAME  # sent whole, as before pieces, it could not arrive
    kept = await mesh.nodes[NodeId("a")].keep(result)
    stored = kept.stored
    assert stored is not None and stored.nodes == ("a", "b") and stored.size == FRAME and kept.data == b""
    assert mesh.files[NodeId("b")].get(stored.sha256) == result.data
    assert mesh.largest <= FRAME and len([body for _, body in mesh.asked if body["op"] == "file_put"]) == 2
    assert not list((mesh.files[NodeId("b")].folder).glob(".*"))  # no scratch file left
    for node in NAMES:
        assert await mesh.nodes[node].read(stored) == result.data


async def test_a_read_that_loses_its_node_goes_on_at_the_other_from_the_same_offset(mesh: Mesh) -> None:
    result = result_of(FRAME)
    stored = (await mesh.nodes[NodeId("a")].keep(result)).stored
    assert stored is not None
    mesh.asked.clear()
    mesh.refuse = lambda node, body: node == "a" and body["offset"] >= 128 * 1024  # a dies after a piece
    assert await mesh.nodes[NodeId("c")].read(stored) == result.data
    assert [(node, body["offset"]) for node, body in mesh.asked] == [("a", 0), ("a", 131072), ("b", 131072)]


async def test_a_copy_gone_bad_on_one_holder_is_read_whole_from_the_other(mesh: Mesh) -> None:
    result = result_of(FRAME)
    stored = (await mesh.nodes[NodeId("a")].keep(result)).stored
    assert stored is not None
    bad = mesh.files[NodeId("a")].folder / stored.sha256
    kept = bad.read_bytes()
    bad.write_bytes(bytes([kept[0] ^ 0xFF]) + kept[1:])  # a byte changed (writing 0 was none when it was 0)
    assert await mesh.nodes[NodeId("c")].read(stored) == result.data
    bad_too = mesh.files[NodeId("b")].folder / stored.sha256
    kept = bad_too.read_bytes()
    bad_too.write_bytes(kept[:-1] + bytes([kept[-1] ^ 0xFF]))
    assert await mesh.nodes[NodeId("c")].read(stored) is None  # never bytes that do not match


async def test_a_holder_that_keeps_the_file_already_takes_no_pieces(mesh: Mesh) -> None:
    result = result_of(FRAME)
    mesh.files[NodeId("b")].put(result.data)
    await mesh.nodes[NodeId("a")].keep(result)
    assert [body["offset"] for node, body in mesh.asked if body["op"] == "file_put"] == [0]


async def test_a_small_result_goes_whole_as_a_release_before_pieces_sends_and_reads_it(mesh: Mesh) -> None:
    result = result_of(1000)
    stored = (await mesh.nodes[NodeId("a")].keep(result)).stored
    assert stored is not None and mesh.asked[0][1].keys() == {"op", "sha256", "data"}
    b = mesh.nodes[NodeId("b")]
    assert await b.serve({"op": "file_get", "sha256": stored.sha256}) == {"data": result.data}
    half = mesh.files[NodeId("b")].put(half_data := os.urandom(FRAME // 2))
    assert await b.serve({"op": "file_get", "sha256": half}) == {"data": half_data}
    large = mesh.files[NodeId("b")].put(os.urandom(FRAME // 2 + 1))
    with pytest.raises(ValueError, match="in pieces"):
        await b.serve({"op": "file_get", "sha256": large})


async def test_a_result_larger_than_a_frame_in_a_record_is_not_read(mesh: Mesh) -> None:
    stored = StoredFile("0" * 64, FRAME + 1, (NodeId("b"),))
    assert await mesh.nodes[NodeId("a")].read(stored) is None and mesh.asked == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 0), ("size", FRAME + 1), ("size", True), ("size", "7"), ("offset", -1), ("offset", FRAME)],
)
async def test_a_piece_with_a_number_out_of_bounds_is_refused(mesh: Mesh, field: str, value: object) -> None:
    body = {
        "op": "file_put",
        "sha256": "0" * 64,
        "upload": "u" * 16,
        "offset": 0,
        "size": FRAME,
        "data": b"x",
    }
    with pytest.raises(ValueError, match=field):
        await mesh.nodes[NodeId("a")].serve({**body, field: value})


@pytest.mark.parametrize(
    ("field", "value"), [("offset", -1), ("offset", FRAME + 1), ("length", 0), ("length", FRAME)]
)
async def test_a_read_with_a_number_out_of_bounds_is_refused(mesh: Mesh, field: str, value: object) -> None:
    body = {"op": "file_get", "sha256": "0" * 64, "offset": 0, "length": 1}
    with pytest.raises(ValueError, match=field):
        await mesh.nodes[NodeId("a")].serve({**body, field: value})


def test_pieces_out_of_order_or_not_matching_their_name_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    data = os.urandom(300)
    sha256 = hashlib.sha256(data).hexdigest()
    assert files.receive("upload-1", sha256, 300, 0, data[:100]) is False
    with pytest.raises(ValueError, match="not the next"):
        files.receive("upload-1", sha256, 300, 200, data[200:])
    with pytest.raises(ValueError, match="not the next"):
        files.receive("upload-1", sha256, 300, 100, data[100:200])  # the upload is gone: start again
    assert files.receive("upload-1", sha256, 300, 0, data[:150]) is False
    with pytest.raises(ValueError, match="past the file"):
        files.receive("upload-1", sha256, 300, 150, data[150:] + b"!")
    assert files.receive("upload-2", sha256, 300, 0, data[:150]) is False
    with pytest.raises(ValueError, match="do not match"):
        files.receive("upload-2", sha256, 300, 150, data[150:-1] + b"!")
    assert not files.has(sha256) and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="an upload needs"):
        files.receive("../../x", sha256, 300, 0, data)
    assert files.receive("upload-3", sha256, 300, 0, data) is True and files.get(sha256) == data


def test_uploads_left_by_senders_that_died_give_way_to_new_ones(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    sha256 = "f" * 64
    for n in range(MAX_UPLOADS + 3):
        files.receive(f"upload-{n:04}", sha256, 10, 0, b"12345")
    assert len(list(tmp_path.glob(".*"))) == MAX_UPLOADS  # the oldest three dropped with their scratch
    with pytest.raises(ValueError, match="not the next"):
        files.receive("upload-0000", sha256, 10, 5, b"67890")
    (tmp_path / f".{'e' * 64}.4242").write_bytes(b"a crash's leftover")
    JobFiles(tmp_path).sweep()
    assert list(tmp_path.iterdir()) == []


def test_a_piece_read_past_the_end_is_empty_and_a_file_not_kept_is_none(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    sha256 = files.put(b"0123456789")
    assert files.read(sha256, 4, 3) == (b"456", 10) and files.read(sha256, 10, 3) == (b"", 10)
    assert files.read("a" * 64, 0, 3) is None and files.read("../x", 0, 3) is None
