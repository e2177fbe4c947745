"""/metrics on a port of its own (METRICS_PORT; in production by default), so that the API's port,
the one a load balancer or an Ingress exposes, has no /metrics to leak even when it is misrouted.

`taskql serve` runs it in its own process, in a thread (prometheus_client's server): with several
workers that is the supervisor, which adds up every worker's files (metrics_dir.py), so one scrape
per instance reports all of it; with one worker it is the worker itself. Import it only once the
metrics directory is settled.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


def serve_metrics(host: str, port: int, *, multiprocess: bool) -> Callable[[], None]:
    """Starts answering scrapes on host:port (OSError if it cannot listen there); returns the stop."""
    registry = REGISTRY
    if multiprocess:
        registry = CollectorRegistry()  # the collector reads the workers' files at every scrape
        MultiProcessCollector(registry)
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
