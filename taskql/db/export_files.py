"""An export's file written into GridFS (EXPORT_FILES_BUCKET) as its rows come, chunk by chunk.

pymongo's upload stream holds up to 48 MiB of chunks before it inserts any (and copies them into one
message then), so the worker's memory would grow with the project up to that size. This writes the
same GridFS layout (the files document last, so a reader never sees a partial file) with at most one
chunk and one batch of rows in memory; downloads and deletes go through pymongo's GridFS bucket.
"""

from __future__ import annotations

from typing import Any

from bson import Binary, ObjectId
from pymongo.errors import BulkWriteError

from taskql.clock import utcnow
from taskql.db.client import EXPORT_FILES_BUCKET, Database

CHUNK_SIZE = 255 * 1024  # GridFS's default


class ExportFileWriter:
    def __init__(self, db: Database, *, file_id: ObjectId, filename: str, metadata: dict[str, Any]) -> None:
        self.id = file_id
        self._files = db.db[f"{EXPORT_FILES_BUCKET}.files"]
        self._chunks = db.db[f"{EXPORT_FILES_BUCKET}.chunks"]
        self._filename = filename
        self._metadata = metadata
        self._pending = bytearray()
        self._chunk_count = 0
        self._length = 0

    async def write(self, data: bytes) -> None:
        """Stores every full chunk of what was written so far."""
        self._pending += data
        full = len(self._pending) // CHUNK_SIZE
        if full:
            await self._store([bytes(self._pending[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]) for i in range(full)])
            del self._pending[: full * CHUNK_SIZE]

    async def close(self) -> None:
        """Stores the last chunk, then the files document that makes the file readable."""
        if self._pending:
            await self._store([bytes(self._pending)])
            self._pending.clear()
        await self._files.insert_one(
            {
                "_id": self.id,
                "length": self._length,
                "chunkSize": CHUNK_SIZE,
                "uploadDate": utcnow(),
                "filename": self._filename,
                "metadata": self._metadata,
            }
        )

    async def abort(self) -> None:
        """Removes the chunks stored so far (the files document is written only by close)."""
        await self._chunks.delete_many({"files_id": self.id})

    async def _store(self, chunks: list[bytes]) -> None:
        docs = [
            {"files_id": self.id, "n": self._chunk_count + i, "data": Binary(chunk)} for i, chunk in enumerate(chunks)
        ]
        try:
            await self._chunks.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # The driver sent the batch again after a lost answer: those chunks (same file and
            # number, same bytes) are stored already. Anything else is a failure.
            if any(error["code"] != 11000 for error in exc.details["writeErrors"]) or exc.details["writeConcernErrors"]:
                raise
        self._chunk_count += len(chunks)
        self._length += sum(len(chunk) for chunk in chunks)
