"""A small stdlib HTTP model server, run by meshnode as an external-server app (see config.yaml).

It stands in for any server a model ships with (a Triton, a vLLM, a Flask app): meshnode only needs
it to listen on ``127.0.0.1:$PORT``, answer ``GET /ready`` with 200 once it can serve, and answer
``POST /predict`` with JSON in and out. A body with ``"stream": true`` gets Server-Sent Events, one
``data:`` line per piece; ``"raw": TEXT`` gets TEXT back as ``application/octet-stream``.

Try it without meshnode::

    PORT=8000 python3 apps/external_server/server.py &
    curl -s -X POST localhost:8000/predict -d '{"text": "hi"}'
"""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STREAM_PIECES = 3


class Handler(BaseHTTPRequestHandler):
    """Readiness, predict and streaming predict."""

    protocol_version = "HTTP/1.1"  # keep-alive: the proxy reuses one connection for many requests

    def do_GET(self) -> None:
        """Readiness and health."""
        if self.path in ("/ready", "/health"):
            self._send_json(200, {"ready": True})
        else:
            self._send_json(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        """Answer a request: JSON, raw bytes, or a stream of events."""
        if self.path != "/predict":
            self._send_json(404, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            self._send_json(400, {"error": f"body is not JSON: {exc}"})
            return
        if not isinstance(body, dict):
            self._send_json(400, {"error": "body must be a JSON object"})
        elif body.get("stream"):
            self._stream(body)
        elif isinstance(body.get("raw"), str):
            self._send(200, body["raw"].encode(), "application/octet-stream")
        else:
            self._send_json(200, {"external": body})

    def _stream(self, body: dict[str, Any]) -> None:
        interval_s = float(body.get("interval_s", 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # no length: the end of the stream is the close
        self.end_headers()
        for seq in range(STREAM_PIECES):
            if seq and interval_s:
                time.sleep(interval_s)
            event = json.dumps({"external": body, "seq": seq})
            self.wfile.write(f"data: {event}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: meshnode logs every line the server prints, and one per request is noise."""


def main() -> None:
    """Serve on $HOST:$PORT until killed."""
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000")))
    server = ThreadingHTTPServer(address, Handler)
    print(f"external server listening on {address[0]}:{address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
