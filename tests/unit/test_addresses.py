"""Addresses of ``meshnode join``: why one cannot be bound, and which ones peers could not dial.

A bind failure is one line naming the flag, the address and a fix. An advertised address, given
(``--advertise-mesh``, ``--advertise-data``) or derived from the bind, is never a wildcard, nor a
loopback address while a seed or an interface is on another machine.
"""

from __future__ import annotations

import errno
import re

import pytest

from meshnode.addresses import (
    bind_failure,
    check_advertised,
    check_derived,
    is_loopback,
    off_machine,
)
from meshnode.config import AgentConfig
from meshnode.errors import ConfigError

ROLES = [("--http", "the HTTP API"), ("--mesh", "the mesh socket"), ("--data", "the data plane")]


@pytest.mark.parametrize(("flag", "role"), ROLES)
def test_a_port_in_use_names_the_flag_the_address_and_what_to_do(flag: str, role: str) -> None:
    message = bind_failure(flag, "127.0.0.1", 8470, errno.EADDRINUSE, "[Errno 98] Address already in use")
    assert message == (
        f"cannot bind {role} on 127.0.0.1:8470 ({flag}): port 8470 is in use there (another meshnode, "
        f"or another program); stop that program, or give {flag} a free port"
    )
    assert "Errno" not in message


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (None, "'nohost' is neither an address of this machine nor a host name it resolves"),
        (errno.ENODEV, "'nohost' is neither an address of this machine"),  # ZeroMQ's word for it
        (errno.EACCES, "ports below 1024 need root"),
        (errno.EADDRNOTAVAIL, "no interface of this machine has the address nohost"),
        (errno.EMFILE, "Too many open files; check --mesh"),
    ],
)
def test_each_cause_has_its_own_reason(code: int | None, says: str) -> None:
    message = bind_failure("--mesh", "nohost", 80, code, "Too many open files")
    assert message.startswith("cannot bind the mesh socket on nohost:80 (--mesh): ")
    assert says in message


def test_an_ipv6_address_is_bracketed() -> None:
    assert "on [::1]:8471 (--mesh)" in bind_failure("--mesh", "::1", 8471, errno.EADDRINUSE, "")


# -- advertised addresses: what peers are told to dial ------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.5.6.7", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LOCALHOST.", "a.localhost"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.5", "192.0.2.1", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0", "node1"])
def test_hosts_that_are_not_loopback(host: str) -> None:
    # A host name may resolve anywhere, so it counts as another machine.
    assert not is_loopback(host)


def test_off_machine_names_the_first_seed_then_interface_elsewhere() -> None:
    assert off_machine(["127.0.0.1:8471", "[::1]:8471"], ["127.0.0.1"]) is None
    assert off_machine(["127.0.0.1:8471", "10.1.2.3:8471"], ["10.0.0.9"]) == "seed 10.1.2.3:8471"
    assert off_machine(["localhost:8471"], ["127.0.0.1", "10.0.0.9"]) == "--interface 10.0.0.9"
    assert off_machine(["seed.example:8471"], []) == "seed seed.example:8471"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.5:18471", "203.0.113.5:18471"),
        ("node1.example.com:8471", "node1.example.com:8471"),
        ("[2001:db8::1]:8471", "[2001:db8::1]:8471"),
        ("127.0.0.1:9", "127.0.0.1:9"),  # loopback is fine while every peer is on this machine
    ],
)
def test_a_dialable_advertised_address_is_returned_as_host_port(value: str, expected: str) -> None:
    assert check_advertised("--advertise-mesh", value, seeds=["127.0.0.1:8471"], interfaces=[]) == expected


@pytest.mark.parametrize("value", ["0.0.0.0:8471", "[::]:8471", ":8471", "*:8471"])
def test_a_wildcard_is_never_advertised(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_advertised("--advertise-mesh", value, seeds=[], interfaces=[])
    message = raised.value.message
    assert message.startswith(f"--advertise-mesh {value}: peers cannot dial ")
    assert message.endswith("; give the address they reach this node at")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("10.0.0.5:0", "--advertise-data 10.0.0.5:0: an advertised address needs a port in 1..65535"),
        ("10.0.0.5", "--advertise-data: expected HOST:PORT, got '10.0.0.5'"),
        ("10.0.0.5:99999", "--advertise-data: port must be a number in 0..65535 in '10.0.0.5:99999'"),
    ],
)
def test_an_advertised_address_needs_a_port(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        check_advertised("--advertise-data", value, seeds=[], interfaces=[])


@pytest.mark.parametrize(
    ("seeds", "interfaces", "elsewhere"),
    [
        (["10.1.2.3:8471"], [], "seed 10.1.2.3:8471"),
        (["127.0.0.1:8471", "seed.example:8471"], [], "seed seed.example:8471"),
        ([], ["192.168.1.20"], "--interface 192.168.1.20"),
    ],
)
def test_loopback_is_refused_while_peers_are_on_other_machines(
    seeds: list[str], interfaces: list[str], elsewhere: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        check_advertised("--advertise-mesh", "127.0.0.1:9", seeds=seeds, interfaces=interfaces)
    assert raised.value.message == (
        f"--advertise-mesh 127.0.0.1:9 is a loopback address, but {elsewhere} is on another machine: "
        "peers there would dial themselves; give the address they reach this node at"
    )


def test_a_derived_loopback_address_says_to_bind_elsewhere_or_advertise() -> None:
    with pytest.raises(ConfigError) as raised:
        check_derived("--mesh", "127.0.0.1:8471", "127.0.0.1", seeds=["10.0.0.5:8471"], interfaces=[])
    assert raised.value.message == (
        "--mesh 127.0.0.1:8471 would be advertised as 127.0.0.1, a loopback address, but seed "
        "10.0.0.5:8471 is on another machine: peers there would dial themselves; bind --mesh to an "
        "address they reach, or pass --advertise-mesh HOST:PORT"
    )


@pytest.mark.parametrize(
    ("flag", "bind", "derived", "seeds", "interfaces"),
    [
        ("--mesh", "127.0.0.1:0", "127.0.0.1", ["127.0.0.1:8471"], []),  # how tests run agents
        ("--mesh", "127.0.0.1:8471", "127.0.0.1", [], ["127.0.0.1"]),  # mDNS on loopback only
        ("--mesh", "10.0.0.4:8471", "10.0.0.4", ["10.0.0.5:8471"], []),
        ("--data", "0.0.0.0:0", "192.168.1.20", ["10.0.0.5:8471"], ["192.168.1.20"]),
    ],
)
def test_derived_addresses_peers_can_dial_pass(
    flag: str, bind: str, derived: str, seeds: list[str], interfaces: list[str]
) -> None:
    check_derived(flag, bind, derived, seeds=seeds, interfaces=interfaces)


def test_agent_config_checks_its_advertised_addresses() -> None:
    config = AgentConfig(name="n", advertise_mesh="203.0.113.5:18471", seeds=("10.0.0.5:8471",))
    assert (config.advertise_mesh, config.advertise_data) == ("203.0.113.5:18471", "")
    with pytest.raises(
        ConfigError, match=re.escape("--advertise-data 0.0.0.0:8472: peers cannot dial 0.0.0.0")
    ):
        AgentConfig(name="n", advertise_data="0.0.0.0:8472")
    with pytest.raises(ConfigError, match=re.escape("--advertise-mesh 127.0.0.1:9 is a loopback address")):
        AgentConfig(name="n", advertise_mesh="127.0.0.1:9", seeds=("10.1.2.3:8471",))
    with pytest.raises(ConfigError, match=re.escape("but --interface 10.0.0.4 is on another machine")):
        AgentConfig(name="n", advertise_data="localhost:8472", interfaces=("10.0.0.4",))
