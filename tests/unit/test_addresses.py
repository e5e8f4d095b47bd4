"""Why an address of ``meshnode join`` cannot be bound: one line naming the flag, the address, a fix."""

from __future__ import annotations

import errno

import pytest

from meshnode.addresses import bind_failure

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
