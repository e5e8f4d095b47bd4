"""The images' HEALTHCHECK: exit 0 when the agent in this container answers GET /health, else 1.

Python's urllib, so the image needs no curl or wget (fewer packages, fewer CVEs to patch). The
address comes from the same variable `meshnode join` binds from, $MESHNODE_HTTP (the images set
it), so a node moved to another port or address stays checked: a wildcard bind is asked on
loopback, a specific address on itself. With $MESHNODE_TLS_CERT set the node serves HTTPS; the
check then skips certificate verification, since it only asks its own container whether the
agent is alive and the certificate names the node's public host, not 127.0.0.1. /health needs no
API key from any client (docs/security.md).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping

DEFAULT_HTTP = "0.0.0.0:8470"
TIMEOUT_S = 4.0  # under the HEALTHCHECK's --timeout, so a hung agent fails here with a reason
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}


def health_url(env: Mapping[str, str]) -> str:
    """The URL of this container's agent's /health, from the variables `meshnode join` reads."""
    host, _, port = env.get("MESHNODE_HTTP", DEFAULT_HTTP).strip().rpartition(":")
    host = host.strip("[]")
    host = _WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("MESHNODE_TLS_CERT") else "http"
    return f"{scheme}://{host}:{port}/health"


def main() -> int:
    """Ask once; say why on failure (Docker keeps the output in `docker inspect`)."""
    url = health_url(os.environ)
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            status = response.status
    except OSError as exc:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
