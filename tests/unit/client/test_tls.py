"""The client's side of HTTPS without sockets: which certificates it trusts, which URLs it builds from
the mesh's TLS flag, and how a failed handshake reaches the caller.

Handshake failures here are real: a client and a server ``ssl`` object talk through memory buffers
(``ssl.MemoryBIO``) with certificates from a CA made in the test, and the ``ssl`` error that comes
out is wrapped as httpx wraps it.
"""

from __future__ import annotations

import contextlib
import random
import ssl
from pathlib import Path

import httpx
import pytest

from meshnode import MeshClient, NoNodeAvailable
from meshnode.client.base import discovered_seeds
from meshnode.client.errors import TLSError
from meshnode.client.exchange import ClientOptions, Planner
from meshnode.client.nodes import NodeList, members_from_view
from meshnode.client.steps import Send
from meshnode.client.tls import CA_ENV, ca_context, describe_failure, ssl_verify, tls_failure
from meshnode.membership.discovery import Advert, _advert_from_info, _service_info
from tests.integration.http.certs import Authority, ServerFiles
from tests.unit.client.test_client import Clock, drive, request

A, B = "https://10.0.0.1:8470", "https://10.0.0.2:8470"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server(authority: Authority) -> ServerFiles:
    return authority.issue(authority.pem.parent, "node", ["127.0.0.1"])


@pytest.fixture(autouse=True)
def no_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_ENV, raising=False)


def handshake(server: ServerFiles, client: ssl.SSLContext, name: str = "127.0.0.1") -> ssl.SSLError | None:
    """The error a client context gets in a real TLS handshake with ``server`` in memory, if any."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.cert, server.key)
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname=name)
    server_side = server_context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        try:
            client_side.do_handshake()
            return None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        server_in.write(client_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server_side.do_handshake()
        client_in.write(server_out.read())
    raise AssertionError("the handshake neither finished nor failed")


def failed_handshake(
    server: ServerFiles, client: ssl.SSLContext, name: str = "127.0.0.1"
) -> httpx.ConnectError:
    """The handshake's error as it reaches the client: httpx.ConnectError from httpcore's from ssl's."""
    error = handshake(server, client, name)
    assert error is not None, "the handshake succeeded"
    try:
        try:
            raise httpx.ConnectError(str(error)) from error
        except httpx.ConnectError as inner:
            raise httpx.ConnectError(str(error)) from inner
    except httpx.ConnectError as outer:
        return outer


# -- verify ----------------------------------------------------------------------------------------


def test_the_default_trusts_the_public_cas() -> None:
    assert ssl_verify(True) is True


def test_the_environment_names_the_ca_when_verify_is_left_alone(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_ENV, str(authority.pem))
    context = ssl_verify(True)
    assert isinstance(context, ssl.SSLContext)
    # Only that CA: the public ones are not trusted alongside a private CA.
    (trusted,) = context.get_ca_certs()
    assert (("commonName", "meshnode test CA"),) in trusted["subject"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_a_ca_file_argument_wins_and_false_or_a_context_pass_through(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_ENV, "/nowhere/ca.pem")
    assert isinstance(ssl_verify(authority.pem), ssl.SSLContext)
    assert isinstance(ssl_verify(str(authority.pem)), ssl.SSLContext)
    assert ssl_verify(False) is False
    context = ssl.create_default_context()
    assert ssl_verify(context) is context


def test_a_verified_handshake_with_the_ca_succeeds(server: ServerFiles, authority: Authority) -> None:
    """The other tests' failures are failures of trust, not of the in-memory handshake."""
    assert handshake(server, ca_context(authority.pem)) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no CA certificate file"), (b"not a certificate\n", "holds no PEM CA certificate")],
)
def test_an_unusable_ca_file_is_a_value_error_naming_it(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        MeshClient(["https://10.0.0.1:8470"], verify=path)
    assert str(path) in str(caught.value)


def test_an_unusable_ca_file_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CA_ENV, "/nowhere/ca.pem")
    with pytest.raises(ValueError, match=CA_ENV):
        MeshClient(["https://10.0.0.1:8470"])


# -- URLs from the mesh's TLS flag ---------------------------------------------------------------------


def member(node: str, http: str, tls: object = None) -> dict[str, object]:
    entry: dict[str, object] = {"id": node, "status": "alive", "http": http}
    if tls is not None:
        entry["tls"] = tls
    return entry


def test_members_that_serve_tls_get_https_urls_and_the_others_http() -> None:
    view = {"self": "x", "members": [member("a", "10.0.0.1:8470", True), member("b", "10.0.0.2:8470", False)]}
    assert members_from_view(view, "http://10.0.0.9:8470") == (
        ["https://10.0.0.1:8470", "http://10.0.0.2:8470"],
        [],
    )


@pytest.mark.parametrize("answered_by", ["http://10.0.0.9:8470", "https://10.0.0.9:8470"])
def test_a_view_from_a_node_that_predates_the_flag_lends_its_own_scheme(answered_by: str) -> None:
    scheme = answered_by.split(":")[0]
    view = {"self": "x", "members": [member("a", "10.0.0.1:8470"), member("b", "10.0.0.2:8470", "yes")]}
    alive, _ = members_from_view(view, answered_by) or ([], [])
    assert alive == [f"{scheme}://10.0.0.1:8470", f"{scheme}://10.0.0.2:8470"]


def test_a_view_that_came_over_tls_never_yields_a_plain_http_member() -> None:
    view = {"self": "x", "members": [member("a", "10.0.0.1:8470", True), member("b", "10.0.0.2:8470", False)]}
    assert members_from_view(view, "https://10.0.0.9:8470") == (["https://10.0.0.1:8470"], [])


def test_mdns_carries_the_flag_and_discovery_builds_https_urls() -> None:
    adverts = []
    for tls in (True, False):
        node = ("a" if tls else "b") * 32
        advert = Advert(node, "m", f"n-{tls}", "127.0.0.1:8471", "127.0.0.1:8470", "0.1.0", tls=tls)
        info = _service_info(advert, ["127.0.0.1"])
        assert (b"tls" in info.properties) is tls
        heard = _advert_from_info(info)
        assert heard is not None and heard.tls is tls
        adverts.append(heard)
    assert discovered_seeds(adverts, "m", ["127.0.0.1"]) == [
        "https://127.0.0.1:8470",
        "http://127.0.0.1:8470",
    ]


# -- failed handshakes -------------------------------------------------------------------------------


def test_an_untrusted_certificate_is_described_with_what_to_do(server: ServerFiles) -> None:
    error = failed_handshake(server, ssl.create_default_context())
    assert isinstance(tls_failure(error), ssl.SSLCertVerificationError)
    text = describe_failure(error, A)
    assert text.startswith("its TLS certificate did not verify: unable to get local issuer certificate;")
    assert "--ca-cert" in text and CA_ENV in text


def test_a_certificate_for_another_name_says_so(server: ServerFiles, authority: Authority) -> None:
    error = failed_handshake(server, ca_context(authority.pem), name="10.0.0.1")
    assert "not valid for '10.0.0.1'" in describe_failure(error, A)


def test_other_failures_keep_their_words_and_plain_http_to_tls_gets_a_hint() -> None:
    assert describe_failure(httpx.ConnectError("connection refused"), A) == "connection refused"
    hung_up = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert describe_failure(hung_up, "http://10.0.0.1:8470").endswith("use an https:// URL)")
    assert "https://" not in describe_failure(hung_up, A)


def test_a_round_in_which_every_node_failed_tls_raises_tls_error_without_retrying(
    server: ServerFiles,
) -> None:
    clock = Clock()
    failure = failed_handshake(server, ssl.create_default_context())
    made = Planner(NodeList([A, B], random.Random(1)), ClientOptions(retries=3), clock)
    made.nodes.postpone_refresh(clock.now)
    with pytest.raises(TLSError) as caught:
        drive(made.exchange(request()), lambda action: failure, clock)
    assert A in str(caught.value) and B in str(caught.value)
    assert caught.value.__cause__ is failure
    assert not caught.value.retryable
    assert clock.now == 100.0  # no pause: a certificate does not change by waiting


def test_a_round_with_other_failures_too_stays_no_node_available(server: ServerFiles) -> None:
    clock = Clock()
    failure = failed_handshake(server, ssl.create_default_context())

    def network(action: Send) -> Exception:
        return failure if action.url.startswith(A) else httpx.ConnectError("connection refused")

    made = Planner(NodeList([A, B], random.Random(1)), ClientOptions(), clock)
    made.nodes.postpone_refresh(clock.now)
    with pytest.raises(NoNodeAvailable, match="certificate did not verify") as caught:
        drive(made.exchange(request()), network, clock)
    assert not isinstance(caught.value, TLSError)


def test_deployment_calls_raise_tls_error_too(server: ServerFiles) -> None:
    clock = Clock()
    failure = failed_handshake(server, ssl.create_default_context())
    made = Planner(NodeList([A], random.Random(1)), ClientOptions(), clock)
    with pytest.raises(TLSError, match=A):
        drive(made.control("GET", "/v1/deployments", None, clock.now + 10), lambda action: failure, clock)
