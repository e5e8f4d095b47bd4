"""A thousand members for one real agent (bench/scale.py, part b), each behind a ZeroMQ socket of its own.

Usage:  MESHNODE_TOKEN=... python bench/member_farm.py --agent-http 127.0.0.1:8470 --agent-mesh 127.0.0.1:8471
                                                     --mesh-id ID [--count 1000] [--stats FILE]

Every member is a production membership core (``mesh/membership.py``) with a metadata record copied
from the agent's own (device, load, data-plane key, key ids: what a real agent gossips; a fresh
name and addresses), bound on its own port on 127.0.0.1, so the agent sees 1,000 distinct peers it
dials, probes and exchanges full state with, over real sealed packets (``trust/keyring.py``,
``wire.py``). The first member joins the agent with a push-pull that lists every member, as
``Simulation.bootstrap`` settles a simulated mesh.

What the members do not do is run their own timers: 1,000 cores probing each other would need
more than the core this process gets. They answer what the agent sends (pings, indirect probes
between themselves handed over in-process as the simulator does, push-pull with the full state of
all members, ``DialMe``), and between them probe the agent at the rate a 1,001-node mesh would
(one probe per probe interval in all). So the agent does all its own work of a 1,001-node mesh;
what it misses is the gossip traffic other nodes' news would bring, which with a quiet mesh is none.
With ``--load-changes-per-s R`` the mesh is busy: R times a second a random member's load sample
changes and reaches the agent as that member's ``alive``, as gossip brings a new sample (an agent
gossips its load at most every ``meta_min_interval_s``, 5 s on a LAN: 1,000 busy nodes send up to
200 a second).

On SIGTERM it writes its counters as JSON to ``--stats`` and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, replace

import httpx
import zmq

from meshnode.mesh import wire
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.effects import Send
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.relay_wire import Dialed, DialMe, LinkHello
from meshnode.mesh.types import Address, NodeId
from meshnode.trust.keyring import Keyring, SealError

CONFIG = MembershipConfig.local()
AGENT_ROUTE = b"@agent"  # the routing id of a member's own connection to the agent


@dataclass
class Fake:
    """One member: its core, its socket, and the ways to the agent it knows."""

    core: Membership
    sock: zmq.Socket[bytes]
    port: int
    last_route: bytes | None = None  # the agent's connection to it, as last seen
    dialed_out: bool = False  # whether it opened a connection to the agent


class Farm:
    def __init__(self, args: argparse.Namespace, keyring: Keyring) -> None:
        self.agent_mesh = Address(args.agent_mesh)
        self.dial_always = args.dial_always
        self.mesh_id = args.mesh_id
        self.keyring = keyring
        self.rng = random.Random(args.seed)
        self.stats: Counter[str] = Counter()
        view = httpx.get(f"http://{args.agent_http}/v1/mesh", timeout=10.0).json()
        self.agent_id = NodeId(view["self"])
        template = NodeMeta.from_wire(next(m for m in view["members"] if m["id"] == view["self"]))
        self.ctx = zmq.Context(io_threads=1)
        self.ctx.set(zmq.MAX_SOCKETS, args.count + 64)
        self.fakes: list[Fake] = []
        self.by_addr: dict[Address, Fake] = {}
        now = time.monotonic()
        for index in range(args.count):
            sock = self.ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.SNDHWM, 64)
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            addr = Address(f"127.0.0.1:{port}")
            meta = replace(
                template, name=f"farm-{index:04d}", http=f"127.0.0.1:{port}", mesh=addr, reach="direct"
            )
            core = Membership(
                CONFIG, NodeId(secrets.token_hex(16)), addr, meta, rng=random.Random(index), now=now
            )
            fake = Fake(core, sock, port)
            self.fakes.append(fake)
            self.by_addr[addr] = fake
        self.by_sock = {fake.sock: fake for fake in self.fakes}
        self.poller = zmq.Poller()
        for fake in self.fakes:
            self.poller.register(fake.sock, zmq.POLLIN)

    # -- sending -----------------------------------------------------------------------------

    def seal(self, packet: wire.Packet) -> bytes:
        return self.keyring.seal(wire.encode(packet, self.mesh_id))

    def dial(self, fake: Fake) -> None:
        if not fake.dialed_out:
            fake.sock.setsockopt(zmq.CONNECT_ROUTING_ID, AGENT_ROUTE)
            fake.sock.connect(f"tcp://{self.agent_mesh}")
            fake.dialed_out = True

    def to_agent(self, fake: Fake, data: bytes, *, own_connection: bool = False) -> bool:
        """Send on the agent's connection to `fake` (or, failing that or when asked, on its own).

        Its own is dialed only then, as an agent answers a member on the connection the member
        opened (one connection per pair), unless ``--dial-always`` has it dial at once, as agents
        did before (to measure those against an agent of that time).
        """
        routes = [] if own_connection else [fake.last_route]
        for route in [*routes, AGENT_ROUTE]:
            if route is None:
                continue
            if route == AGENT_ROUTE or self.dial_always:
                self.dial(fake)
            try:
                fake.sock.send_multipart([route, data], zmq.NOBLOCK)
                self.stats["sent"] += 1
                return True
            except zmq.ZMQError:
                if route == fake.last_route:
                    fake.last_route = None  # the agent closed it: our own from now on
        self.stats["send_failed"] += 1
        return False

    def full_state(self, fake: Fake) -> tuple[wire.MemberState, ...]:
        """What a settled member's push-pull lists: every member, the agent as `fake` knows it."""
        agent = fake.core.members.get(self.agent_id)
        rows = tuple(other.core.me.state() for other in self.fakes)
        return rows + ((agent.state(),) if agent is not None else ())

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, fake: Fake, route: bytes, data: bytes) -> None:
        try:
            plain = self.keyring.open(data)
            packet = wire.decode(
                plain, self.mesh_id, max_bytes=CONFIG.max_packet_bytes, max_members=CONFIG.max_members
            )
        except (SealError, wire.WireError) as exc:
            self.stats[f"dropped {exc}"] += 1
            return
        if route != AGENT_ROUTE:
            fake.last_route = route
        rest = []
        for message in packet.messages:
            self.stats[type(message).__name__] += 1
            match message:
                case DialMe(nonce):
                    answer = wire.Packet(fake.core.node_id, fake.core.me.addr, (Dialed(nonce),))
                    self.to_agent(fake, self.seal(answer), own_connection=True)
                case LinkHello():
                    pass
                case _:
                    rest.append(message)
        if rest:
            self.handle(fake, wire.Packet(packet.sender, packet.sender_addr, tuple(rest)))

    def handle(self, fake: Fake, packet: wire.Packet) -> None:
        """`fake`'s core takes `packet`; packets between members are handed over here, in order."""
        queue = deque([(fake, packet)])
        while queue:
            target, packet = queue.popleft()
            effects = target.core.handle(packet, time.monotonic(), int(time.time() * 1000))
            for effect in effects:
                if not isinstance(effect, Send):
                    continue
                other = self.by_addr.get(effect.addr)
                if other is not None:
                    queue.append((other, effect.packet))
                    continue
                if effect.addr != self.agent_mesh:
                    self.stats["send_elsewhere"] += 1
                    continue
                out = effect.packet
                messages = tuple(
                    replace(m, states=self.full_state(target)) if isinstance(m, wire.PushPull) else m
                    for m in out.messages
                )
                self.to_agent(target, self.seal(wire.Packet(out.sender, out.sender_addr, messages)))

    # -- running -----------------------------------------------------------------------------

    def join(self) -> None:
        """The first member's join: a push-pull listing every member, answered by the agent's state."""
        first = self.fakes[0]
        states = tuple(fake.core.me.state() for fake in self.fakes)
        packet = wire.Packet(first.core.node_id, first.core.me.addr, (wire.PushPull(True, True, states),))
        self.dial(first)
        deadline = time.monotonic() + 10
        while not self.to_agent(first, self.seal(packet), own_connection=True):
            if time.monotonic() > deadline:
                raise TimeoutError("could not reach the agent")
            time.sleep(0.05)

    def probe_agent(self) -> None:
        """One member's ping to the agent, as its round-robin probing gets to the agent."""
        fake = self.rng.choice(self.fakes)
        self.stats["probes_of_agent"] += 1
        ping = wire.Ping(self.rng.getrandbits(31), self.agent_id)
        self.to_agent(fake, self.seal(wire.Packet(fake.core.node_id, fake.core.me.addr, (ping,))))

    def change_load(self) -> None:
        """One member's new load sample, sent to the agent as its ``alive`` (a busy mesh's news)."""
        fake = self.rng.choice(self.fakes)
        me = fake.core.me
        load = {**me.meta.load, "cpu": round(self.rng.uniform(0, 100), 1)}
        fake.core.update_meta(replace(me.meta, load=load))
        alive = wire.Alive(me.node, me.incarnation, me.addr, me.meta_version, me.meta)
        self.stats["load_changes"] += 1
        self.to_agent(fake, self.seal(wire.Packet(me.node, me.addr, (alive,))))

    def run(self, stop: list[bool], load_changes_per_s: float) -> None:
        next_probe = next_change = time.monotonic()
        while not stop[0]:
            for sock, _ in self.poller.poll(timeout=20):
                fake = self.by_sock[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) == 2:
                        self.receive(fake, frames[0], frames[1])
            # Every member probes one peer per interval, so 1,000 of them probe the agent once per
            # interval between them (the agent is one of 1,000 targets each).
            now = time.monotonic()
            while now >= next_probe:
                self.probe_agent()
                next_probe += CONFIG.probe_interval_s
            while load_changes_per_s > 0 and now >= next_change:
                self.change_load()
                next_change += 1 / load_changes_per_s

    def close(self) -> None:
        for fake in self.fakes:
            fake.sock.close(linger=0)
        self.ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-http", required=True)
    parser.add_argument("--agent-mesh", required=True)
    parser.add_argument("--mesh-id", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stats", default="", help="where the counters go as JSON on SIGTERM")
    parser.add_argument(
        "--load-changes-per-s",
        type=float,
        default=0.0,
        help="members' load samples gossiped to the agent per second, all members together (0: a quiet mesh)",
    )
    parser.add_argument(
        "--dial-always",
        action="store_true",
        help="dial the agent before every send, as agents did before they shared one connection per pair",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket, a listener and connections each
    keyring = Keyring([os.environ["MESHNODE_TOKEN"]], args.mesh_id)
    farm = Farm(args, keyring)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    farm.join()
    print(f"farm: {args.count} members up, joined through {args.agent_mesh}", flush=True)
    started_cpu = time.process_time()
    started = time.monotonic()
    try:
        farm.run(stop, args.load_changes_per_s)
    finally:
        counters: dict[str, float] = dict(farm.stats)
        counters["cpu_s"] = round(time.process_time() - started_cpu, 2)
        counters["wall_s"] = round(time.monotonic() - started, 1)
        if args.stats:
            with open(args.stats, "w") as out:
                json.dump(counters, out)
        farm.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
