"""Click parameter types for the ``meshnode`` commands: addresses, interfaces, deployments, CA files.

Each type fails with click's usage error (exit code 2, one line naming the flag), never a traceback.
``agent_default`` reads a default from ``AgentConfig`` so a flag never restates it. ``ca_cert_option``
is the ``--ca-cert`` flag of every command that talks to a node, ``NodeURL`` the type of its ``--node``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import click

from ..addresses import join_host_port, parse_host_port
from ..client.tls import CA_ENV, ca_context
from ..config import DEFAULT_NODE_URL, AgentConfig
from ..errors import ConfigError
from ..mesh.config import MembershipConfig
from ..mesh.metadata import MAX_LABEL_CHARS

__all__ = [
    "CACert",
    "Deployment",
    "HostPort",
    "IPAddress",
    "Knob",
    "NodeURL",
    "agent_default",
    "ca_cert_option",
    "check_name",
    "join_host_port",
]

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DIGITS_AND_DOTS = re.compile(r"[\d.]+")


def agent_default(field_name: str) -> Any:
    """The ``AgentConfig`` default of one field, so flags never restate it."""
    field = AgentConfig.__dataclass_fields__[field_name]
    if field.default is dataclasses.MISSING:
        raise LookupError(f"AgentConfig.{field_name} has no plain default")
    return field.default


class HostPort(click.ParamType):
    """``HOST:PORT`` as ``(host, port)``; ``seed=True`` also demands a real host and a non-zero port."""

    name = "HOST:PORT"

    def __init__(self, *, seed: bool = False) -> None:
        self._seed = seed

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        """Parse and check one address."""
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            host, port = parse_host_port(text)
        except ConfigError as exc:
            self.fail(exc.message, param, ctx)
        given_host = text.rpartition(":")[0].strip("[]")
        if given_host and not _is_host(given_host):
            self.fail(f"{given_host!r} is neither an IP address nor a host name", param, ctx)
        if self._seed and (not given_host or _is_unspecified(given_host)):
            self.fail(f"a seed needs the host to reach it, got {text!r}", param, ctx)
        if self._seed and port == 0:
            self.fail(f"a seed needs a port in 1..65535, got {text!r}", param, ctx)
        return host, port


class IPAddress(click.ParamType):
    """An IPv4 or IPv6 address, returned in its canonical text form."""

    name = "IP"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check one address."""
        try:
            return str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)


class Deployment(click.ParamType):
    """A pinned deployment ``NAME=APP``."""

    name = "NAME=APP"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check the ``NAME=APP`` shape."""
        name, sep, app = str(value).partition("=")
        if not sep or not app.strip():
            self.fail(f"expected NAME=APP, got {value!r}", param, ctx)
        if not _DEPLOYMENT_NAME.fullmatch(name):
            self.fail(f"deployment name {name!r} must be letters, digits, '.', '_' or '-'", param, ctx)
        return f"{name}={app.strip()}"


class Knob(click.ParamType):
    """``NAME=VALUE`` for a number or switch of ``AgentConfig`` or ``MembershipConfig``.

    docs/configuration.md lists them. A membership field comes back named ``membership.NAME``:
    it overrides the profile's value (``AgentConfig.membership_knobs``).
    """

    name = "NAME=VALUE"
    _TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        """The knob's name and its value, converted to the field's type."""
        if isinstance(value, tuple):
            return value
        name, sep, raw = str(value).partition("=")
        field = AgentConfig.__dataclass_fields__.get(name.strip())
        prefix = ""
        if field is None and name.strip() in MembershipConfig.__dataclass_fields__:
            field, prefix = MembershipConfig.__dataclass_fields__[name.strip()], "membership."
        kind = self._TYPES.get(str(field.type)) if field is not None else None
        if not sep or field is None or kind is None:
            self.fail(
                f"expected NAME=VALUE with NAME a number or switch of AgentConfig or MembershipConfig, "
                f"got {value!r}",
                param,
                ctx,
            )
        text = raw.strip()
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                self.fail(f"{name} takes true or false, not {text!r}", param, ctx)
            return prefix + field.name, text.lower() in ("true", "1", "yes")
        try:
            number = kind(text)
        except ValueError:
            self.fail(f"{name} takes {'an integer' if kind is int else 'a number'}, not {text!r}", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{name} must be a finite number >= 0, not {text!r}", param, ctx)
        return prefix + field.name, number


class NodeURL(click.ParamType):
    """A node's base URL, ``http(s)://HOST[:PORT][/PREFIX]`` (``HOST:PORT`` alone means http://)."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check one URL before any request leaves; the URL without a trailing slash."""
        try:
            return check_node_url(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def check_node_url(value: str) -> str:
    """`value` as a node's base URL; ValueError saying what is wrong and what a URL looks like."""
    text = value.strip()
    if re.fullmatch(r":?\d+", text):
        # Taken as a host name, a bare port would send the request off this machine to "8470".
        raise ValueError(
            f"{value!r} is a port, not a node: give a URL such as http://127.0.0.1:{text.lstrip(':')}"
        )
    bare = "://" not in text
    parts = urlsplit(f"http://{text}" if bare else text)
    expected = f"expected a node's URL such as {DEFAULT_NODE_URL}"
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL; {expected}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    host = parts.hostname or ""
    if not host or "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not a node's address; {expected}")
    if bare and port is None:
        example = f"http://{join_host_port(host, agent_default('http_port'))}"
        raise ValueError(f"{value!r} has no scheme and no port: give a URL such as {example}")
    if port == 0:
        raise ValueError(f"{value!r} needs a port in 1..65535; {expected}")
    if not _is_host(host):
        raise ValueError(f"{host!r} in {value!r} is neither an IP address nor a host name; {expected}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class CACert(click.ParamType):
    """A PEM file of CA certificates, as the ``ssl.SSLContext`` that trusts only them."""

    name = "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ssl.SSLContext:
        """Read and check the file once, before any request."""
        if isinstance(value, ssl.SSLContext):
            return value
        try:
            return ca_context(str(value), source="CA file")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: ``--ca-cert FILE`` (or $MESHNODE_CA_CERT): trust the nodes' HTTPS certificates a private CA signed.
ca_cert_option = click.option(
    "--ca-cert",
    "ca_cert",
    type=CACert(),
    envvar=CA_ENV,
    show_envvar=True,
    default=None,
    help="PEM CA certificate(s) that signed the nodes' HTTPS certificates [default: the public CAs].",
)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Digits and dots that are no IP address ("8470", "10.0.0") are a slip, not a name to look up.
        return _HOSTNAME.fullmatch(host) is not None and not _DIGITS_AND_DOTS.fullmatch(host)
    return True


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def check_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback for --name: 1..MAX_LABEL_CHARS characters, trimmed."""
    # The name travels in gossiped metadata, which refuses empty or overlong labels.
    if not value.strip() or len(value) > MAX_LABEL_CHARS:
        raise click.BadParameter(f"must be 1..{MAX_LABEL_CHARS} characters", ctx, param)
    return value.strip()
