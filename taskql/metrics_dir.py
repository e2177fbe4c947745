"""Where the worker processes of `taskql serve --workers N` pool their Prometheus metrics.

In prometheus_client's multiprocess mode every process writes its samples to files of its own in
PROMETHEUS_MULTIPROC_DIR, and /metrics adds up the files of all of them, so whichever worker answers
a scrape, it reports the whole server. The mode is chosen once, when prometheus_client is first
imported: this module never imports it, and `taskql serve` calls it before the app is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_metrics_dir(workers: int) -> Iterator[Path | None]:
    """The directory the server's processes share for the duration of the block (None: one process,
    plain in-memory metrics). An operator's PROMETHEUS_MULTIPROC_DIR is used as it is, emptied of the
    files an earlier run left (they would add that run's counts to this one's). Otherwise, with
    several workers, a fresh temporary directory, removed afterwards."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"{ENV} must be settled before prometheus_client is imported")
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    if workers == 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="taskql-metrics-"))
    os.environ[ENV] = str(path)  # inherited by the workers uvicorn spawns
    try:
        yield path
    finally:
        del os.environ[ENV]
        shutil.rmtree(path, ignore_errors=True)
