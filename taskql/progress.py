"""A dependency-free progress bar for seeding steps (`taskql seed`, and the benchmarks' datasets)."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class ProgressBar:
    """`tasks    [##########..........]  6,500/20,000  712/s` on one line of stderr.

    It is redrawn only when a cell fills, so it stays readable when stderr is a log file, not a terminal.
    """

    WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._cells = -1
        self._started = time.perf_counter()
        self._draw()

    def advance(self, count: int = 1) -> None:
        self._done += count
        self._draw()

    def _draw(self) -> None:
        cells = self.WIDTH * self._done // max(self._total, 1)
        if cells == self._cells:
            return
        self._cells = cells
        rate = self._done / max(time.perf_counter() - self._started, 1e-9)
        bar = "#" * cells + "." * (self.WIDTH - cells)
        sys.stderr.write(f"\r{self._label:<9}[{bar}] {self._done:>7,}/{self._total:,}  {rate:,.0f}/s")
        sys.stderr.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        sys.stderr.write("\n")
