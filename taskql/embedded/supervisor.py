"""Keeps an embedded server running: a child that exits unasked is started again, with backoff.

It restarts with the same command, so on the same port and data: clients reconnect by themselves
(the drivers retry), and nothing needs restarting in TaskQL. The watch runs in a thread, apart from
the event loops of the server processes, so a busy or blocked loop never delays a restart.
"""

from __future__ import annotations

import logging
import threading
import time

from taskql.embedded.child import ChildServer, EmbeddedServiceError

logger = logging.getLogger("taskql.embedded")
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
STABLE_AFTER_SECONDS = 60.0  # a child that ran this long starts again from the first delay


class Supervisor:
    def __init__(self, child: ChildServer) -> None:
        self.child = child
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never overlap
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{child.name}", daemon=True)

    def start(self) -> None:
        self.child.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self.child.stop()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        delay = FIRST_DELAY_SECONDS
        started = time.monotonic()
        while True:
            status = self.child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_SECONDS:
                delay = FIRST_DELAY_SECONDS
            logger.error("the embedded %s exited (status %s): restarting it in %.0f s", self.child.name, status, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                try:
                    self.child.start()
                except (EmbeddedServiceError, OSError) as exc:
                    logger.error("restarting the embedded %s failed: %s", self.child.name, exc)
                    continue
            logger.warning("the embedded %s is serving again", self.child.name)
