"""nginx as the benchmarks' reference proxy: a config of its own in the run's folder, and its start.

One worker, no master, no daemon, every file under the run's folder (nothing under /etc or /var is
read or written), keepalive connections to each upstream over HTTP/1.1, request bodies kept in memory.
"""

from __future__ import annotations

from pathlib import Path

from procs import Started, start

_CONF = """\
worker_processes 1;
master_process off;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # Bodies up to 1 MiB stay in memory: with the default (16 KiB) a 30 KB embedding batch went
    # through a temporary file, 42 ms a request at c=1 here against 1.3 ms in memory.
    client_body_buffer_size 1m;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{upstreams}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
{locations}
    }}
}}
"""


def start_nginx(
    root: Path, port: int, upstreams: dict[str, list[str]], locations: dict[str, str], cpu: int
) -> Started:
    """nginx on `port`, pinned to `cpu`: `upstreams` by name (HOST:PORT each, round robin), and
    `locations` from a location's match (``/``, ``= /one``) to its ``proxy_pass`` URL."""
    blocks = "\n".join(
        f"    upstream {name} {{\n{''.join(f'        server {s};{chr(10)}' for s in servers)}"
        "        keepalive 64;\n    }"
        for name, servers in upstreams.items()
    )
    paths = "\n".join(f"        location {match} {{ proxy_pass {url}; }}" for match, url in locations.items())
    conf = root / "nginx.conf"
    conf.write_text(_CONF.format(root=root, port=port, upstreams=blocks, locations=paths))
    command = ["nginx", "-c", str(conf), "-p", str(root), "-e", str(root / "nginx-error.log")]
    return start("nginx", command, cpu, root)
