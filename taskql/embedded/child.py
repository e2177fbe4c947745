"""A server that runs as a child process on a fixed loopback port: started, checked ready, stopped.

Children run in a session of their own, so the Ctrl-C that a terminal sends to `taskql serve` does
not reach them: the parent stops them itself, once its requests have finished. On Linux a child is
also killed if the parent dies without stopping it (say by SIGKILL), so no orphan keeps the port and
the data directory locked for the next run. SIGKILL, not SIGTERM: SecantusDB 0.7's SIGTERM handler
can deadlock (seen here, left running with no parent), and it loses no acknowledged write to a kill.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger("taskql.embedded")
STOP_TIMEOUT_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded server is not installed, or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec: nothing but the one call
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


class ChildServer:
    """One server process. `ping` raises until the server answers; `start` waits for it."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path,
        ping: Callable[[], None],
        startup_timeout_seconds: float = 60.0,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._log_path = log_path
        self._ping = ping
        self._startup_timeout = startup_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Starts the process and returns once it answers; EmbeddedServiceError if it exits or stays silent."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._process.poll() is not None:
                raise EmbeddedServiceError(f"the embedded {self.name} exited at startup; see {self._log_path}")
            try:
                self._ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    problem = f"the embedded {self.name} did not answer; see {self._log_path}"
                    raise EmbeddedServiceError(problem) from None
                time.sleep(0.1)

    def wait(self) -> int | None:
        """Blocks until the process exits; its exit status (None if it was never started)."""
        return None if self._process is None else self._process.wait()

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the embedded %s did not stop within %.0f s: killing it", self.name, STOP_TIMEOUT_SECONDS)
            process.kill()
            process.wait()
