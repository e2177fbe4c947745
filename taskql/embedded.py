"""The embedded default database: a SecantusDB server process on a free loopback port.

SecantusDB (GPL-2.0, the `embedded` extra) speaks the MongoDB wire protocol; it runs as a
separate process and is never imported here, so the application stays independent of it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import subprocess
import sys
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

logger = logging.getLogger("taskql.embedded")
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedMongo:
    def __init__(self, data_dir: Path) -> None:
        self._storage = data_dir / "db"
        self._process: subprocess.Popen[bytes] | None = None
        self.uri = ""

    async def start(self) -> str:
        if importlib.util.find_spec("secantus") is None:
            raise RuntimeError(
                "No MONGODB_URI is set and the embedded database is not installed: "
                "`pip install 'taskql[embedded]'`, or point MONGODB_URI at a MongoDB server."
            )
        self._storage.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        log = (self._storage.parent / "secantus.log").open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(self._storage),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        await self._wait_until_ready()
        logger.info("embedded SecantusDB serving %s (data in %s)", self.uri, self._storage)
        return self.uri

    async def _wait_until_ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_SECONDS
        client: AsyncMongoClient = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"the embedded database exited early; see {self._storage.parent / 'secantus.log'}"
                    )
                try:
                    await client.admin.command("ping")
                    return
                except PyMongoError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise RuntimeError("the embedded database did not start in time") from None
                    await asyncio.sleep(0.2)
        finally:
            await client.close()

    async def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            await asyncio.to_thread(self._process.wait, STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)
