from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pymongo
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import (
    CommandListener,
    TopologyClosedEvent,
    TopologyDescriptionChangedEvent,
    TopologyListener,
    TopologyOpenedEvent,
)
from pymongo.read_concern import ReadConcern
from pymongo.server_type import SERVER_TYPE

from taskql.settings import Settings

T = TypeVar("T")
EXPORT_FILES_BUCKET = "export_files"  # GridFS: export_files.files and export_files.chunks
_Listener = CommandListener | TopologyListener
logger = logging.getLogger("taskql.db")

_READ_PREFERENCES = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}


def create_client(settings: Settings, uri: str, listeners: Sequence[_Listener] = ()) -> AsyncMongoClient:
    """The one client of this process: pool, timeouts and tz-aware datetimes from settings.

    The timeouts are per step, not the driver's one timeoutMS: with timeoutMS the driver waits for
    a usable server for all of it, so with the database down every request took 10 s to fail. Here
    finding a server (and connecting) is bounded by MONGODB_SERVER_SELECTION_TIMEOUT_MS (2 s), each
    reply by MONGODB_TIMEOUT_MS, and a transaction with its retries by MONGODB_TIMEOUT_MS too
    (Database.in_transaction)."""
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        maxPoolSize=settings.mongodb_max_pool_size,
        minPoolSize=settings.mongodb_min_pool_size,
        serverSelectionTimeoutMS=settings.mongodb_server_selection_timeout_ms,
        connectTimeoutMS=settings.mongodb_server_selection_timeout_ms,
        socketTimeoutMS=settings.mongodb_timeout_ms,
        waitQueueTimeoutMS=settings.mongodb_timeout_ms,
        appname="taskql",
        event_listeners=[*listeners, OutageLog()],
    )


class OutageLog(TopologyListener):
    """Logs once when the database has no server left to write to (down, unreachable, electing a
    primary), with the cause, and once when it has one again, with how long it took."""

    def __init__(self) -> None:
        self._lost_at: float | None = None

    def opened(self, event: TopologyOpenedEvent) -> None:
        pass

    def closed(self, event: TopologyClosedEvent) -> None:
        pass

    def description_changed(self, event: TopologyDescriptionChangedEvent) -> None:
        servers = event.new_description.server_descriptions().values()
        writable = event.new_description.has_writable_server()
        if writable and self._lost_at is not None:
            logger.warning("MongoDB writable again after %.1f s", time.monotonic() - self._lost_at)
            self._lost_at = None
        elif (
            not writable
            and self._lost_at is None
            and event.previous_description.has_writable_server()
            # Not the reset of a client closing: a server was heard from (a secondary, say) or failed.
            and any(server.error or server.server_type != SERVER_TYPE.Unknown for server in servers)
        ):
            self._lost_at = time.monotonic()
            errors = [str(server.error) for server in servers if server.error]
            logger.warning(
                "MongoDB has no server to write to (%s); requests that need it answer SERVICE_UNAVAILABLE",
                errors[0] if errors else "no primary",
            )


def _write_concern(setting: str) -> WriteConcern:
    return WriteConcern(w=int(setting) if setting.isdigit() else setting)


class Database:
    """The application's collections, with the read preference and write concern from settings."""

    def __init__(self, client: AsyncMongoClient, settings: Settings) -> None:
        self.client = client
        self.db: AsyncDatabase = client.get_database(
            settings.mongodb_database,
            read_preference=_READ_PREFERENCES[settings.mongodb_read_preference],
            write_concern=_write_concern(settings.mongodb_write_concern),
        )
        self.supports_transactions = False
        self._timeout_seconds = settings.mongodb_timeout_ms / 1000
        self._selection_timeout_seconds = settings.mongodb_server_selection_timeout_ms / 1000

    async def detect_capabilities(self) -> None:
        """Transactions need a replica set or a sharded cluster; a standalone server gets plain writes."""
        hello = await self.client.admin.command("hello")
        self.supports_transactions = "setName" in hello or hello.get("msg") == "isdbgrid"

    @property
    def users(self) -> AsyncCollection:
        return self.db["users"]

    @property
    def sessions(self) -> AsyncCollection:
        return self.db["sessions"]

    @property
    def projects(self) -> AsyncCollection:
        return self.db["projects"]

    @property
    def tasks(self) -> AsyncCollection:
        return self.db["tasks"]

    @property
    def activity(self) -> AsyncCollection:
        return self.db["activity"]

    @property
    def outbox(self) -> AsyncCollection:
        return self.db["outbox"]

    @property
    def notifications(self) -> AsyncCollection:
        return self.db["notifications"]

    @property
    def emails(self) -> AsyncCollection:
        return self.db["emails"]

    @property
    def webhooks(self) -> AsyncCollection:
        return self.db["webhooks"]

    @property
    def webhook_deliveries(self) -> AsyncCollection:
        return self.db["webhook_deliveries"]

    @property
    def exports(self) -> AsyncCollection:
        return self.db["exports"]

    @property
    def files(self) -> AsyncGridFSBucket:
        """Export files (GridFS: in the database, so every instance serves them)."""
        return AsyncGridFSBucket(self.db, bucket_name=EXPORT_FILES_BUCKET)

    async def in_transaction(self, work: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run `work` atomically (retrying transient transaction errors) where the server allows it."""
        if not self.supports_transactions:
            return await work(None)
        if not self.client.topology_description.has_writable_server():
            # No primary known (down, or being elected): wait for one as long as any request would
            # (MONGODB_SERVER_SELECTION_TIMEOUT_MS), not the transaction's whole timeout below.
            with pymongo.timeout(self._selection_timeout_seconds):
                await self.client.admin.command("ping")
        # The driver retries a transaction for up to 120 s; the timeout bounds that, server selection included.
        with pymongo.timeout(self._timeout_seconds):
            async with self.client.start_session() as session:
                # Primary: a transaction that reads must, and it would otherwise take the client's
                # read preference, which a MONGODB_URI may set (readPreference=...).
                return await session.with_transaction(
                    work,
                    read_concern=ReadConcern("majority"),
                    write_concern=WriteConcern("majority"),
                    read_preference=ReadPreference.PRIMARY,
                )
