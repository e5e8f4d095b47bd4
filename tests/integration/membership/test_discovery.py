"""mDNS discovery on 127.0.0.1: nodes of one mesh find each other, other meshes stay apart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from meshnode.membership.discovery import SERVICE_TYPE, Advert, Discovery, browse_once

INTERFACES = ["127.0.0.1"]
DEADLINE_S = 15.0


def make_advert(index: int, mesh_id: str) -> Advert:
    return Advert(
        node_id=uuid.uuid4().hex,
        mesh_id=mesh_id,
        name=f"node-{index}",
        mesh_addr=f"127.0.0.1:{18471 + index}",
        http_addr=f"0.0.0.0:{18470 + index}",
        version="0.1.0",
    )


class Finder:
    """Collects what one Discovery reports and wakes waiters when it changes."""

    def __init__(self, advert: Advert) -> None:
        self.advert = advert
        self.found: dict[str, Advert] = {}
        self.changed = asyncio.Event()

    def on_found(self, advert: Advert) -> None:
        self.found[advert.node_id] = advert
        self.changed.set()

    async def wait_for(self, node_ids: set[str]) -> None:
        while not node_ids <= set(self.found):
            self.changed.clear()
            await self.changed.wait()


@contextlib.asynccontextmanager
async def running(finders: list[Finder]) -> AsyncIterator[list[Discovery]]:
    discoveries = [
        Discovery(interfaces=INTERFACES, advert=finder.advert, on_found=finder.on_found) for finder in finders
    ]
    try:
        await asyncio.gather(*(discovery.start() for discovery in discoveries))
        yield discoveries
    finally:
        await asyncio.gather(*(discovery.stop() for discovery in discoveries))


async def test_nodes_of_one_mesh_find_each_other_and_not_other_meshes() -> None:
    mesh = uuid.uuid4().hex
    finders = [Finder(make_advert(index, mesh)) for index in range(3)]
    stranger = Finder(make_advert(3, uuid.uuid4().hex))
    ids = {finder.advert.node_id for finder in finders}
    async with running([*finders, stranger]):
        await asyncio.wait_for(
            asyncio.gather(*(finder.wait_for(ids - {finder.advert.node_id}) for finder in finders)),
            DEADLINE_S,
        )
        # browse_once only returns after its own window, by which time the stranger has long been
        # announced too: if the filter let it through, it would show up in the finders by now.
        browsed = await browse_once(INTERFACES, mesh, timeout_s=3.0)
        everything = await browse_once(INTERFACES, None, timeout_s=3.0)

    for finder in finders:
        assert set(finder.found) == ids - {finder.advert.node_id}
        for node_id, advert in finder.found.items():
            expected = next(other.advert for other in finders if other.advert.node_id == node_id)
            # 0.0.0.0 in the advertised HTTP address is replaced by the address the node announced from.
            assert advert == Advert(
                node_id=expected.node_id,
                mesh_id=mesh,
                name=expected.name,
                mesh_addr=expected.mesh_addr,
                http_addr=expected.http_addr.replace("0.0.0.0", "127.0.0.1"),
                version="0.1.0",
            )
    assert stranger.found == {}
    assert {advert.node_id for advert in browsed} == ids
    assert {advert.node_id for advert in everything} >= ids | {stranger.advert.node_id}


async def test_malformed_txt_records_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    mesh = uuid.uuid4().hex
    finder = Finder(make_advert(0, mesh))
    good = Finder(make_advert(1, mesh))
    bad_properties: list[dict[str, str | bytes]] = [
        {"mesh": mesh, "http": "127.0.0.1:1", "mesh_port": "2", "version": "1", "name": "no-id"},
        {"id": "x1", "mesh": mesh, "http": "127.0.0.1:1", "mesh_port": "99999", "version": "1", "name": "a"},
        {"id": "x2", "mesh": mesh, "http": "nowhere", "mesh_port": "2", "version": "1", "name": "b"},
        {"id": "x3", "mesh": mesh, "http": "127.0.0.1:1", "mesh_port": "2", "version": b"\xff", "name": "c"},
    ]
    rogue = AsyncZeroconf(interfaces=INTERFACES, ip_version=IPVersion.V4Only)
    try:
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"rogue-{mesh[:8]}-{index}.{SERVICE_TYPE}",
                port=2,
                properties=properties,
                server=f"rogue-{mesh[:8]}-{index}.local.",
                addresses=["127.0.0.1"],
            )
            for index, properties in enumerate(bad_properties)
        ]
        await asyncio.gather(*(rogue.async_register_service(info) for info in infos))
        with caplog.at_level(logging.DEBUG, logger="meshnode.membership.discovery"):
            async with running([finder, good]):
                await asyncio.wait_for(finder.wait_for({good.advert.node_id}), DEADLINE_S)
                # The rogue services were registered before the finder started, so they are
                # resolved in the same browse as the good node; wait until all four were judged.
                rogues = {f"rogue-{mesh[:8]}-{index}.{SERVICE_TYPE}" for index in range(len(bad_properties))}
                await asyncio.wait_for(_until(lambda: all(name in caplog.text for name in rogues)), 10)
    finally:
        await rogue.async_close()
    assert set(finder.found) == {good.advert.node_id}


async def _until(condition: Callable[[], bool]) -> None:
    # Polls a log, which has no event to wait on; the caller bounds it with wait_for.
    while not condition():
        await asyncio.sleep(0.05)


def test_interfaces_must_be_explicit() -> None:
    with pytest.raises(ValueError):
        Discovery(interfaces=[], advert=make_advert(0, "m"), on_found=lambda advert: None)


async def test_browse_once_needs_interfaces() -> None:
    with pytest.raises(ValueError):
        await browse_once([], None, timeout_s=0.1)


async def test_stop_without_start_and_twice_is_harmless() -> None:
    discovery = Discovery(interfaces=INTERFACES, advert=make_advert(0, "m"), on_found=lambda advert: None)
    await discovery.stop()
    await discovery.start()
    await discovery.stop()
    await discovery.stop()


async def test_an_address_not_on_this_machine_fails_clearly() -> None:
    advert = make_advert(0, "m")
    discovery = Discovery(interfaces=["10.255.255.254"], advert=advert, on_found=lambda advert: None)
    with pytest.raises(OSError, match=r"10\.255\.255\.254"):
        await discovery.start()
    await discovery.stop()
