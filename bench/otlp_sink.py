"""An OTLP/HTTP trace receiver on loopback that counts what it is sent: the collector of the traced
benchmark mode, and of the tests of the OTLP exporter."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class ReceivedSpans:
    def __init__(self) -> None:
        self.endpoint = ""  # for OTEL_EXPORTER_OTLP_ENDPOINT
        self.names: Counter[tuple[str, str]] = Counter()  # (service.name, span name): how many
        self._lock = threading.Lock()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.names.update((attributes["service.name"], span.name) for span in scope_spans.spans)

    def total(self) -> int:
        with self._lock:
            return sum(self.names.values())


@contextlib.contextmanager
def otlp_http_sink() -> Iterator[ReceivedSpans]:
    received = ReceivedSpans()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path != "/v1/traces" or self.headers["content-type"] != "application/x-protobuf":
                self.send_error(404)
                return
            received.receive(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per export would drown the benchmark's progress

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    received.endpoint = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
