"""What the benchmarks share: server processes on free loopback ports, their logs, and the machine report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0


class BenchError(RuntimeError):
    pass


def say(message: str) -> None:
    """Progress on stderr, so stdout holds only the result table."""
    print(message, file=sys.stderr, flush=True)


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def wait_until_serving(process: asyncio.subprocess.Process, base_url: str, log_path: Path) -> None:
    # uvicorn accepts connections only after the lifespan (database, indexes, Redis) has started.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as http:
        while loop.time() < deadline:
            if process.returncode is not None:
                raise BenchError(f"the server exited early:\n{log_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise BenchError(f"the server did not start within {SERVER_START_TIMEOUT:.0f} s:\n{log_tail(log_path)}")


async def stop_process(
    process: asyncio.subprocess.Process,
    timeout: float = SERVER_STOP_TIMEOUT,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """`stop_signal`, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
        process.send_signal(stop_signal)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()


async def redis_version(url: str) -> str:
    """Redis's version; fails early when it is unreachable."""
    client = Redis.from_url(url, socket_connect_timeout=2.0)
    try:
        return (await client.info("server"))["redis_version"]
    except RedisError as exc:
        raise BenchError(f"Redis is not reachable at {url}: {exc}") from exc
    finally:
        await client.aclose()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def environment(packages: tuple[str, ...], redis_server_version: str) -> dict[str, Any]:
    """The machine and the versions of `packages` (and of the Redis server), for a report."""
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {**{name: metadata.version(name) for name in packages}, "redis-server": redis_server_version},
    }
