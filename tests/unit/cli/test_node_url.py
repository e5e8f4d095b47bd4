"""``--node``: a malformed node URL is a usage error before any request leaves this machine."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from meshnode.cli import main
from meshnode.cli.params import check_node_url


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://127.0.0.1:8470", "http://127.0.0.1:8470"),
        ("https://node.example.com:8470/", "https://node.example.com:8470"),
        ("http://10.0.0.9:8470/behind/a/proxy/", "http://10.0.0.9:8470/behind/a/proxy"),
        ("https://node.example.com", "https://node.example.com"),
        ("10.0.0.9:8470", "http://10.0.0.9:8470"),  # HOST:PORT, as the Python client takes it
        ("localhost:8470/", "http://localhost:8470"),
        ("[::1]:8470", "http://[::1]:8470"),
        (" http://[fe80::1]:8470 ", "http://[fe80::1]:8470"),
    ],
)
def test_node_urls_and_host_port_are_taken(given: str, url: str) -> None:
    assert check_node_url(given) == url


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("8470", "is a port, not a node: give a URL such as http://127.0.0.1:8470"),
        (":8470", "is a port, not a node"),
        ("localhost", "no scheme and no port: give a URL such as http://localhost:8470"),
        ("10.0.0.9", "no scheme and no port"),
        ("http://8470", "neither an IP address nor a host name"),
        ("10.0.0:8470", "neither an IP address nor a host name"),
        ("http://node_1:8470", "neither an IP address nor a host name"),
        ("ftp://10.0.0.9:8470", "not an http:// or https:// URL"),
        ("http://10.0.0.9:99999", "needs a port in 1..65535"),
        ("http://10.0.0.9:port", "needs a port in 1..65535"),
        ("10.0.0.9:0", "needs a port in 1..65535"),
        ("http://", "not a node's address"),
        ("http://:8470", "not a node's address"),
        ("", "not a node's address"),
        ("http://user:secret@10.0.0.9:8470", "not a node's address"),
        ("http://10.0.0.9:8470/?x=1", "not a node's address"),
    ],
)
def test_malformed_node_urls_say_what_is_wrong(given: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=r"expected|give a URL") as caught:
        check_node_url(given)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    "command",
    [
        ["peers"],
        ["deployments"],
        ["deploy", "echo", "meshnode.apps.echo:Echo"],
        ["undeploy", "echo"],
        ["predict", "echo"],
        ["keys", "list"],
        ["token", "rotate"],
    ],
)
def test_every_client_command_refuses_a_bare_port_without_sending_anything(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_request(*args: Any, **kwargs: Any) -> httpx.Response:
        raise AssertionError(f"a request left with --node 8470: {args}")

    monkeypatch.setattr(httpx, "request", no_request)
    monkeypatch.setattr(httpx.Client, "send", no_request)
    result = CliRunner().invoke(main, [*command, "--node", "8470"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--node': '8470' is a port, not a node" in result.output
    assert "http://127.0.0.1:8470" in result.output
    assert "Traceback" not in result.output
