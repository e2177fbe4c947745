"""The embedded database: a SecantusDB server (MongoDB wire protocol) with its data under DATA_DIR/db.

SecantusDB (GPL-2.0, the `embedded` extra) runs as a separate process and is never imported here,
so the application stays independent of it and talks to it only through the MongoDB driver.
It fsyncs its log on every commit (`--sync-on-commit`): without it, a crash loses the transactions
acknowledged in its last ~40 ms (measured: 4 to 13 of them on `kill -9`; none of 3,259 with it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from pymongo import MongoClient

from taskql.embedded.child import ChildServer, EmbeddedServiceError, free_port


def secantus_server(data_dir: Path) -> tuple[ChildServer, str]:
    """The server (not started yet) and the URI that reaches it."""
    if importlib.util.find_spec("secantus") is None:
        raise EmbeddedServiceError(
            "No MONGODB_URI is set and the embedded database is not installed: "
            "`pip install 'taskql[embedded]'`, or point MONGODB_URI at a MongoDB server."
        )
    storage = data_dir / "db"
    storage.mkdir(parents=True, exist_ok=True)
    storage.chmod(0o700)  # the database's files: this user's alone
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"

    def ping() -> None:
        with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")

    command = [
        sys.executable, "-m", "secantus",
        "--host", "127.0.0.1", "--port", str(port),
        "--storage-path", str(storage),
        "--sync-on-commit",
        "--log-level", "WARNING",
    ]  # fmt: skip
    return ChildServer("database (SecantusDB)", command, log_path=data_dir / "secantus.log", ping=ping), uri
