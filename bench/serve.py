"""One TaskQL server process under test: `python -m bench.serve --mode a|b|c --port N --mongodb-uri URI ...`.

Besides the application it serves `GET /_bench/stats`: MongoDB commands by name with their time
(a pymongo command listener), the loader and cache counters and the CPU time of this process, so
the benchmark can report where each mode spends a request.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from pymongo import monitoring
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import per_field
from taskql.server import build_app
from taskql.services.common import Runtime
from taskql.settings import UNLIMITED_RATE, Settings

STATS_PATH = "/_bench/stats"


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    cache: bool  # the shared Redis entity cache
    per_field: bool  # no batching and no per-request memo: one query per resolved field
    traced: bool = False  # every request traced, the spans exported over OTLP/HTTP


MODES = {
    mode.name: mode
    for mode in (
        Mode("a", "loaders + Redis cache", cache=True, per_field=False),
        Mode("b", "loaders, no cache", cache=False, per_field=False),
        Mode("c", "per-field queries", cache=False, per_field=True),
        Mode("t", "a, traced (OTLP)", cache=True, per_field=False, traced=True),
    )
}


class CommandMonitor(monitoring.CommandListener):
    """This process's MongoDB commands by name: how many, and how long each took as the driver saw it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.micros: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.micros[event.command_name] += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.micros[event.command_name] += event.duration_micros


def settings_for(mode: Mode, *, mongodb_uri: str, database: str, data_dir: Path, redis_url: str) -> Settings:
    # With mongodb_uri set nothing is started under data_dir: it only holds the generated JWT secret.
    return Settings(
        _env_file=None,
        mongodb_uri=mongodb_uri,
        mongodb_database=database,
        data_dir=data_dir,
        redis_url=redis_url,  # rate limits and events need it in every mode
        cache_enabled=mode.cache,
        tracing_exporter="otlp-http" if mode.traced else "none",
        **UNLIMITED_RATE,  # throughput, not the rate limits, is measured; every request is still charged
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description="Serve TaskQL in one benchmark mode.")
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--redis-url", required=True, help="the entity cache of modes a and t")
    parser.add_argument("--otlp-endpoint", required=True, help="where mode t sends its spans")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.otlp_endpoint  # read by the exporter of mode t

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    commands = CommandMonitor()
    monitoring.register(commands)  # before build_app: a client copies the global listeners when created
    if mode.per_field:
        per_field.install()
    settings = settings_for(
        mode, mongodb_uri=args.mongodb_uri, database=args.database, data_dir=args.data_dir, redis_url=args.redis_url
    )
    app = build_app(settings)

    async def stats(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        cache = runtime.cache.stats
        return JSONResponse(
            {
                "mongo_commands": dict(commands.counts),
                "mongo_micros": dict(commands.micros),
                "cpu_seconds": time.process_time(),
                "loader_batches": cache.batches,
                "cache_hits": cache.hits,
                "cache_misses": cache.misses,
                "cache_errors": cache.errors,
            }
        )

    app.router.routes.append(Route(STATS_PATH, stats))
    # No access log: writing a line per request would be part of what is measured.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
