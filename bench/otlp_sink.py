"""An OTLP/HTTP collector that keeps nothing: the endpoint the benchmarks export spans to.

    python -m bench.otlp_sink --port 4318

Answers every ``POST /v1/traces`` 200 with an empty ExportTraceServiceResponse (an empty protobuf message is a whole
one), so that an exporting service pays what export costs it (the SDK's spans, batching, protobuf, the HTTP call)
and nothing more. ``GET /count`` says how many exports and bytes it took: a bench checks that spans arrived before it
counts their cost. Not a collector for anything else.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
TAKEN = {"exports": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with LOCK:
            TAKEN["exports"] += 1
            TAKEN["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with LOCK:
            body = json.dumps(TAKEN).encode()
        self.send_response(200 if self.path == "/count" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Sink).serve_forever()


if __name__ == "__main__":
    main()
