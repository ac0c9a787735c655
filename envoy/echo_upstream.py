#!/usr/bin/env python3
"""Demo upstream for meshgate: echoes every request back as JSON.

Answers every method on every path with 200 and a body

    {"method": "...", "path": "...", "headers": {"lower-cased-name": "value", ...},
     "body_bytes": N}

so a client (or a test) can see exactly which identity headers the meshgate filter
injected and which client-sent headers it stripped. Repeated headers are joined with
", " (the HTTP list convention).

Standard library only. Listens on 127.0.0.1:8082 unless told otherwise:

    echo_upstream.py [--host H] [--port P]
    MESHGATE_UPSTREAM_HOST / MESHGATE_UPSTREAM_PORT   (flags win over env)

`--port 0` picks a free port; the bound address is printed on stdout as
`echo upstream listening on http://HOST:PORT` (flushed) so a script can read it.
SIGINT and SIGTERM shut the server down cleanly (exit code 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # read (and count) at most 1 MiB of request body


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "meshgate-echo/1"
    protocol_version = "HTTP/1.1"  # keep-alive with Envoy's connection pool

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body_bytes = 0
        if length > 0:
            body_bytes = len(self.rfile.read(min(length, MAX_BODY)))
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body_bytes": body_bytes,
            },
            indent=2,
            sort_keys=True,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # Every method goes to the same place.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def __getattr__(self, name: str):
        # Unusual methods (PROPFIND, PURGE, ...) too.
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt: str, *args) -> None:
        if os.environ.get("MESHGATE_UPSTREAM_QUIET"):
            return
        sys.stderr.write("echo: %s - %s\n" % (self.address_string(), fmt % args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("MESHGATE_UPSTREAM_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("MESHGATE_UPSTREAM_PORT", "8082"))
    )
    args = parser.parse_args(argv)

    # A burst through Envoy opens dozens of upstream connections at once: the
    # default backlog of 5 drops SYNs and Envoy's 1 s connect timeout turns
    # that into 503s. Nagle plus delayed ACKs would add ~40 ms per response.
    ThreadingHTTPServer.request_queue_size = 512
    EchoHandler.disable_nagle_algorithm = True
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    host, port = server.server_address[:2]
    print(f"echo upstream listening on http://{host}:{port}", flush=True)

    def stop(signum, _frame) -> None:
        # shutdown() blocks until serve_forever returns, so call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
