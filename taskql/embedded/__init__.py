"""The embedded services of the laptop default: what serves MONGODB_URI and REDIS_URL when they are unset.

`taskql serve` starts them once, before its worker processes, and hands the workers their URLs, so
the workers share one database and one Redis exactly as instances do in production. They are real
servers on loopback, durable, supervised (restarted when they crash) and stopped when it stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from taskql.embedded.child import ChildServer, EmbeddedServiceError
from taskql.embedded.secantus import secantus_server
from taskql.embedded.supervisor import Supervisor
from taskql.embedded.valkey import valkey_server
from taskql.settings import Settings

logger = logging.getLogger("taskql.embedded")
__all__ = ["EmbeddedServiceError", "embedded_services"]


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Settings]:
    """`settings` with both URLs set: an unset one is served by an embedded server, running until the block ends."""
    with contextlib.ExitStack() as running:
        urls = {}
        if settings.mongodb_uri is None:
            urls["mongodb_uri"] = running.enter_context(_supervised(*secantus_server(settings.data_dir)))
        if settings.redis_url is None:
            urls["redis_url"] = running.enter_context(_supervised(*valkey_server(settings.data_dir)))
        yield settings.model_copy(update=urls)


@contextlib.contextmanager
def _supervised(child: ChildServer, url: str) -> Iterator[str]:
    supervisor = Supervisor(child)
    supervisor.start()
    logger.info("embedded %s serving on %s (pid %s)", child.name, url.rpartition("@")[2], child.pid)
    try:
        yield url
    finally:
        supervisor.stop()
