"""A loopback OTLP/HTTP traces endpoint in a process of its own, as a collector (Jaeger, Tempo,
an OpenTelemetry Collector) always is: its work on the exports it receives is not the measured
process's. It answers ``POST /v1/traces`` with 200 and an empty ExportTraceServiceResponse,
counts the requests and their bytes (keeping nothing), and tells them at ``GET /stats``.

    python -m bench.trace_sink    # prints the port it listens on, then serves
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    received = 0
    bytes_received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with _Sink.lock:
            _Sink.received += 1
            _Sink.bytes_received += length
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with _Sink.lock:
            body = json.dumps({"exports": _Sink.received, "bytes": _Sink.bytes_received}).encode()
        self.send_response(200 if self.path == "/stats" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet


@contextmanager
def trace_sink() -> Iterator[str]:
    """The sink started in a process of its own; yields its traces URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.trace_sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1/traces"
    finally:
        process.terminate()
        process.wait(timeout=10)


def sink_stats(url: str) -> tuple[int, int]:
    """The exports the sink at ``url`` received so far, and their bytes."""
    stats_url = url.removesuffix("/v1/traces") + "/stats"
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        stats = json.loads(response.read())
    return int(stats["exports"]), int(stats["bytes"])


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
