"""Persisted operations: a client sends a document's SHA-256 instead of the document.

- Automatic persisted queries (Apollo's protocol): `extensions.persistedQuery = {"version": 1,
  "sha256Hash": "<hex>"}`. A hash this server does not know gets PERSISTED_QUERY_NOT_FOUND (message
  `PersistedQueryNotFound`, which Apollo's client looks for); the client then sends the document with
  the same extension, the server checks the hash and keeps the document (in Redis, for every
  instance) for `apq_ttl_seconds`.
- An allowlist (`persisted_operations_file`: a JSON object of SHA-256 → document, made at build
  time): when set, only those documents run, sent by hash or in full; anything else is
  OPERATION_NOT_ALLOWED, and automatic registration is off.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from graphql import GraphQLError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskql.codec import as_text

logger = logging.getLogger("taskql.persisted_queries")


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class RedisDocuments:
    """Registered documents by hash, shared by every instance, each kept for `ttl_seconds`."""

    def __init__(self, client: Redis, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    async def get(self, sha256: str) -> str | None:
        document = await self._client.get(f"taskql:apq:{sha256}")
        return None if document is None else as_text(document)

    async def put(self, sha256: str, document: str) -> None:
        await self._client.set(f"taskql:apq:{sha256}", document, ex=self._ttl)


class PersistedQueries:
    """The process's persisted documents: the allowlist if there is one, else the APQ store."""

    def __init__(self, store: RedisDocuments, allowlist: dict[str, str] | None) -> None:
        self._store = store
        self._allowlist = allowlist

    @classmethod
    def create(cls, redis: Redis, *, ttl_seconds: int, allowlist_file: Path | None) -> PersistedQueries:
        store = RedisDocuments(redis, ttl_seconds)
        allowlist = None
        if allowlist_file is not None:
            allowlist = json.loads(allowlist_file.read_text())
            wrong = [sha for sha, document in allowlist.items() if document_hash(document) != sha.lower()]
            if wrong:
                raise ValueError(f"{allowlist_file}: these keys are not the SHA-256 of their document: {wrong[:3]}")
        return cls(store, allowlist)

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> str | None:
        """The document to run; raises GraphQLError when the request may not run as sent."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if self._allowlist is not None and (query is None or document_hash(query) not in self._allowlist):
                raise _error("Only this server's persisted operations may run.", "OPERATION_NOT_ALLOWED")
            return query
        sha256 = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not isinstance(sha256, str) or persisted.get("version") != 1:
            raise _error("`persistedQuery` needs `version: 1` and a `sha256Hash`.", "BAD_USER_INPUT")
        sha256 = sha256.lower()
        if query is not None:
            if document_hash(query) != sha256:
                raise _error("`sha256Hash` is not the SHA-256 of the query.", "BAD_USER_INPUT")
            if self._allowlist is not None:
                return await self.resolve(query, None)
            await self._remember(sha256, query)
            return query
        document = self._allowlist.get(sha256) if self._allowlist is not None else await self._recall(sha256)
        if document is None:
            raise _error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        return document

    async def _recall(self, sha256: str) -> str | None:
        try:
            return await self._store.get(sha256)
        except RedisError as exc:  # the client then sends the whole document, which works without Redis
            logger.warning("persisted queries unavailable: %s", exc)
            return None

    async def _remember(self, sha256: str, document: str) -> None:
        try:
            await self._store.put(sha256, document)
        except RedisError as exc:
            logger.warning("could not keep a persisted query: %s", exc)


def _error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})
