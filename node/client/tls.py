"""Which HTTPS certificates a client trusts (``verify``), and what a failed TLS connection means.

``verify`` (``MeshClient(..., verify=...)``, ``--ca-cert`` on the command line):

- ``True`` (the default): the CA certificates in ``$MESHNODE_CA_CERT`` when it names a file, else
  the public CAs httpx ships (certifi). A mesh with certificates from a private CA sets that variable
  once instead of passing ``verify`` everywhere.
- a path: only the CA certificates in that PEM file (a private CA); the public CAs are not trusted
  then, as with ``curl --cacert``.
- an ``ssl.SSLContext``: used as it is (client certificates, pinning, a system trust store).
- ``False``: no verification at all. Anyone on the path can then read and change requests and API
  keys; for a first test only.

Certificates are checked against the address the client connects to: the one given, or the one a
node gossips (its ``--http`` host, an IP address unless a host name was given), so a node's
certificate must name that address (an IP subject alternative name, or the host name it advertises).

A connection that fails its TLS handshake is a node that did not answer (the client fails over), but
it is said in words (``describe_failure``), and when every node failed that way the client raises
``TLSError`` instead of ``NoNodeAvailable``: waiting will not fix a certificate.
"""

from __future__ import annotations

import os
import ssl

import httpx

__all__ = ["CA_ENV", "Verify", "ca_context", "describe_failure", "ssl_verify", "tls_failure"]

#: The environment variable naming a PEM file of CA certificates to trust when ``verify`` is True.
CA_ENV = "MESHNODE_CA_CERT"

#: What ``verify`` may be: see the module docstring.
Verify = bool | str | os.PathLike[str] | ssl.SSLContext


def ssl_verify(verify: Verify) -> ssl.SSLContext | bool:
    """What httpx gets for ``verify``; ValueError when a CA file cannot be used."""
    if isinstance(verify, ssl.SSLContext | bool):
        path = os.environ.get(CA_ENV, "").strip() if verify is True else ""
        return ca_context(path, source=CA_ENV) if path else verify
    return ca_context(verify)


def ca_context(path: str | os.PathLike[str], *, source: str = "verify") -> ssl.SSLContext:
    """A client context that trusts only the CA certificates in the PEM file ``path``."""
    try:
        # Hostname checking and TLS 1.2 at least, as for any HTTPS client; only this file's CAs.
        return ssl.create_default_context(cafile=os.fspath(path))
    except ssl.SSLError as exc:  # before OSError, of which it is a kind
        raise ValueError(f"{source}: {os.fspath(path)!r} holds no PEM CA certificate") from exc
    except FileNotFoundError as exc:
        raise ValueError(f"{source}: no CA certificate file {os.fspath(path)!r}") from exc
    except OSError as exc:
        raise ValueError(f"{source}: cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from exc


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` error behind a failed request, if TLS is what failed (httpx wraps it twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_failure(exc: httpx.RequestError, url: str) -> str:
    """Why a request to ``url`` got no answer, in words; TLS failures say what to do about them."""
    failure = tls_failure(exc)
    if isinstance(failure, ssl.SSLCertVerificationError):
        reason = failure.verify_message or failure.reason or "not trusted"
        return (
            f"its TLS certificate did not verify: {reason}; trust the CA that signed it "
            f"(--ca-cert FILE, verify='ca.pem' or {CA_ENV}) or connect by a name the certificate holds"
        )
    if failure is not None:
        reason = failure.reason or str(failure)
        return f"the TLS handshake failed: {reason}; does it serve HTTPS on that port?"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError) and url.startswith(
        "http://"
    ):
        # What a plain request to an HTTPS port looks like from here: the node hangs up, cleanly
        # or with a reset, depending on when its TLS layer gives up on the bytes.
        return f"{text} (if the node serves HTTPS, use an https:// URL)"
    return text
