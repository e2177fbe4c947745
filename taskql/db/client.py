from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pymongo import AsyncMongoClient, ReadPreference, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import CommandListener
from pymongo.read_concern import ReadConcern

from taskql.settings import Settings

T = TypeVar("T")

_READ_PREFERENCES = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}


def create_client(settings: Settings, uri: str, listeners: Sequence[CommandListener] = ()) -> AsyncMongoClient:
    """The one client of this process: pool, timeouts and tz-aware datetimes from settings."""
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        maxPoolSize=settings.mongodb_max_pool_size,
        minPoolSize=settings.mongodb_min_pool_size,
        timeoutMS=settings.mongodb_timeout_ms,
        serverSelectionTimeoutMS=settings.mongodb_server_selection_timeout_ms,
        appname="taskql",
        event_listeners=list(listeners),
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

    async def in_transaction(self, work: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run `work` atomically (retrying transient transaction errors) where the server allows it."""
        if not self.supports_transactions:
            return await work(None)
        async with self.client.start_session() as session:
            # Primary: a transaction that reads must, and it would otherwise take the client's read
            # preference, which a MONGODB_URI may set (readPreference=...).
            return await session.with_transaction(
                work,
                read_concern=ReadConcern("majority"),
                write_concern=WriteConcern("majority"),
                read_preference=ReadPreference.PRIMARY,
            )
