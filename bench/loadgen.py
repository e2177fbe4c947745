"""A closed-loop HTTP load generator: N workers, each posting the same request back to back until a deadline."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import orjson


@dataclass(frozen=True)
class LoadResult:
    latencies: list[float]  # seconds, of the successful requests, ascending
    errors: int  # non-200 answers, GraphQL errors and transport failures
    elapsed: float  # seconds, until the last request started before the deadline finished

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.elapsed

    def percentile_ms(self, fraction: float) -> float | None:
        return percentile(self.latencies, fraction) * 1000 if self.latencies else None


def percentile(ascending: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (a value that was actually observed, no interpolation)."""
    rank = max(math.ceil(fraction * len(ascending)), 1)
    return ascending[rank - 1]


async def _succeeds(http: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]) -> bool:
    try:
        response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "errors" not in orjson.loads(response.content)


async def run_load(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """`concurrency` requests in flight at all times for `duration` seconds (needs as many pooled connections)."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        nonlocal errors
        while (sent := time.perf_counter()) < deadline:
            if await _succeeds(http, url, body, headers):
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(sorted(latencies), errors, time.perf_counter() - started)
