"""`taskql serve`, `taskql worker`, `taskql export-schema`, `taskql check-config` and `taskql seed`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import uvicorn
from pydantic import ValidationError

from taskql.embedded import EmbeddedServiceError, embedded_services
from taskql.logs import configure_logging
from taskql.metrics_dir import shared_metrics_dir
from taskql.settings import Settings

SCHEMA_FILE = Path("schema.graphql")
SECRET_SETTINGS = frozenset({"jwt_secret", "webhook_secret_key"})


def schema_sdl() -> str:
    # The app is imported where it is used, here and for `seed`: `serve` must settle the metrics
    # directory before anything imports prometheus_client (metrics_dir.py).
    from taskql.schema.root import build_schema

    return build_schema().as_str() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="taskql", description="TaskQL GraphQL API server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="default: HOST setting (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: PORT setting (8000)")
    serve.add_argument("--workers", type=int, help="server processes; default: WORKERS setting (1)")
    worker = commands.add_parser("worker", help="run background jobs (needs MONGODB_URI and REDIS_URL)")
    worker.add_argument("--concurrency", type=int, help="jobs run at once; default: JOBS_CONCURRENCY setting (10)")
    export = commands.add_parser("export-schema", help="write the GraphQL SDL")
    export.add_argument("--output", type=Path, default=SCHEMA_FILE)
    commands.add_parser("check-config", help="validate the settings from the environment and print them")
    seed_command = commands.add_parser("seed", help="write demo users, projects and tasks")
    seed_command.add_argument("--users", type=int, default=10)
    seed_command.add_argument("--projects", type=int, default=5)
    seed_command.add_argument("--tasks", type=int, default=40, help="per project")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        args.output.write_text(schema_sdl())
        print(f"wrote {args.output}")
        return
    try:
        settings = Settings()
    except ValidationError as exc:  # without the input values: they may hold secrets
        problems = (
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        sys.exit("invalid settings:\n" + "\n".join(problems))
    if args.command == "check-config":
        print(describe(settings))
        return
    configure_logging(settings)  # the embedded services report crashes and restarts here
    try:
        if args.command == "seed":
            _seed(args, settings)
        elif args.command == "worker":
            _work(args, settings)
        else:
            _serve(args, settings)
    except EmbeddedServiceError as exc:
        sys.exit(f"taskql: {exc}")


def _seed(args: argparse.Namespace, settings: Settings) -> None:
    from taskql.seed import DEMO_PASSWORD, SeedPlan, seed

    if args.users < 1 or args.projects < 0 or args.tasks < 0:
        sys.exit("seed needs at least one user, and no negative counts")
    plan = SeedPlan(users=args.users, projects=args.projects, tasks_per_project=args.tasks, run_id=uuid4().hex[:6])
    with embedded_services(settings) as served:
        emails = asyncio.run(seed(served, plan))
    print(f"{len(emails)} users, password {DEMO_PASSWORD!r}: {', '.join(emails)}")


def _work(args: argparse.Namespace, settings: Settings) -> None:
    # SIGTERM: take no new job, let running ones finish for up to shutdown_timeout_seconds, requeue the rest.
    if settings.mongodb_uri is None or settings.redis_url is None:
        sys.exit(
            "taskql worker needs MONGODB_URI and REDIS_URL: the servers' database and Redis. "
            "(`taskql serve` runs jobs itself unless JOBS_IN_PROCESS=false.)"
        )
    if args.concurrency is not None and args.concurrency < 1:
        sys.exit("--concurrency must be at least 1")
    from taskql.jobs.worker import run_worker  # imports prometheus_client: after the metrics port is settled

    with _metrics_listener(settings, settings.host, multiprocess=False, port=settings.worker_metrics_port):
        asyncio.run(run_worker(settings, concurrency=args.concurrency or settings.jobs_concurrency))


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    # SIGTERM: stop accepting, close WebSockets with 1012 (clients reconnect elsewhere and resume
    # with `after`), let in-flight requests finish for up to shutdown_timeout_seconds, close pools.
    workers = args.workers or settings.workers
    # The embedded services start once, here, and every worker gets their URLs: the workers share
    # one database and one Redis, as instances do in production.
    host = args.host or settings.host
    with (
        embedded_services(settings) as served,
        shared_metrics_dir(workers) as metrics_dir,  # before prometheus_client
        _metrics_listener(settings, host, multiprocess=metrics_dir is not None, port=settings.separate_metrics_port),
    ):
        os.environ.update(MONGODB_URI=served.mongodb_uri or "", REDIS_URL=served.redis_url or "")
        # Imports prometheus_client (a counter of dropped sockets): after shared_metrics_dir.
        from taskql.http.connection_limits import limited_http_protocol, limited_websocket_protocol

        # Uvicorn shuts down gracefully on SIGTERM or SIGINT, then raises the signal again. Ending the
        # process there would skip stopping the embedded services: a plain exit unwinds these blocks.
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, _exit_after_shutdown)
        uvicorn.run(
            "taskql.server:create_app",
            factory=True,
            host=host,
            port=args.port or settings.port,
            # Reading deadline, header size, clients that stop reading: http/connection_limits.py
            http=limited_http_protocol(settings),
            ws=limited_websocket_protocol(settings),
            workers=workers,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            log_config=None,  # each process configures its own logs (create_app)
            # TRUSTED_PROXIES alone decides whose X-Forwarded-For is believed (http/client_ip.py); uvicorn's
            # own handling would also believe any process on the loopback interface.
            proxy_headers=False,
            # A WebSocket message may be as large as an HTTP body, not uvicorn's 16 MiB.
            ws_max_size=settings.max_body_bytes,
            # uvicorn compresses by default: ~44 KiB of zlib state per socket, and each message
            # compressed once per socket (bench/README.md).
            ws_per_message_deflate=settings.ws_per_message_deflate,
        )


@contextlib.contextmanager
def _metrics_listener(settings: Settings, host: str, *, multiprocess: bool, port: int | None) -> Iterator[None]:
    if port is None:  # /metrics is a route of the API (or off)
        yield
        return
    from taskql.metrics_port import serve_metrics  # imports prometheus_client: after shared_metrics_dir

    try:
        stop = serve_metrics(host, port, multiprocess=multiprocess)
    except OSError as exc:
        sys.exit(f"taskql: cannot serve /metrics on {host}:{port} (METRICS_PORT): {exc.strerror}")
    try:
        yield
    finally:
        stop()


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def describe(settings: Settings) -> str:
    """Every effective setting, one per line, secrets and credentials hidden."""
    lines = []
    for name, value in sorted(settings.model_dump().items()):
        shown = "(hidden)" if name in SECRET_SETTINGS and value else _without_password(value)
        lines.append(f"{name.upper()}={shown}")
    return "\n".join(lines)


def _without_password(value: object) -> object:
    if isinstance(value, str) and "://" in value and "@" in value:
        parts = urlsplit(value)
        if parts.password:
            return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return value
