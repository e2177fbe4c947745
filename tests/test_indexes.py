"""Indexes are declared in db/indexes.py and created at startup, idempotently."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from taskql.db.client import Database
from taskql.db.indexes import INDEXES, ensure_indexes
from taskql.settings import Settings


async def _index_names(settings: Settings) -> dict[str, set[str]]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    db = client[settings.mongodb_database]
    names = {name: {index["name"] async for index in await db[name].list_indexes()} for name in INDEXES}
    await client.close()
    return names


async def test_startup_creates_every_declared_index(app: Any, settings: Settings) -> None:
    names = await _index_names(settings)

    for collection, models in INDEXES.items():
        assert {model.document["name"] for model in models} <= names[collection]
    assert "email_unique" in names["users"]
    assert {"project_due_sort", "assignee_priority_rank", "search_terms_project"} <= names["tasks"]


async def test_ensuring_indexes_twice_changes_nothing(app: Any, settings: Settings) -> None:
    before = await _index_names(settings)
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)

    await ensure_indexes(Database(client, settings))

    await client.close()
    assert await _index_names(settings) == before
