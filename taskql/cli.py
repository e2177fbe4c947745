"""`taskql serve` and `taskql export-schema`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.settings import Settings

SCHEMA_FILE = Path("schema.graphql")


def schema_sdl() -> str:
    return build_schema().as_str() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="taskql", description="TaskQL GraphQL API server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="default: HOST setting (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: PORT setting (8000)")
    export = commands.add_parser("export-schema", help="write the GraphQL SDL")
    export.add_argument("--output", type=Path, default=SCHEMA_FILE)
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        args.output.write_text(schema_sdl())
        print(f"wrote {args.output}")
        return
    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(build_app(settings), host=args.host or settings.host, port=args.port or settings.port)
