"""Keyset (cursor) pagination over (sort key, _id): stable under concurrent inserts and deletes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.collection import AsyncCollection

from taskql.errors import BadUserInput

T = TypeVar("T")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PageRequest:
    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.first is not None and self.last is not None:
            raise BadUserInput("Pass either `first` or `last`, not both.")
        for name in ("first", "last"):
            size = getattr(self, name)
            if size is not None and not 1 <= size <= MAX_PAGE_SIZE:
                raise BadUserInput(f"`{name}` must be between 1 and {MAX_PAGE_SIZE}.", field=(name,))

    @property
    def backward(self) -> bool:
        return self.last is not None

    @property
    def size(self) -> int:
        return self.last if self.last is not None else (self.first or DEFAULT_PAGE_SIZE)


@dataclass(frozen=True)
class SortKey:
    """A connection's order: `field` (stored or computed by add_fields), then `_id`, both in `direction`."""

    name: str  # embedded in cursors, so a cursor from one order is refused by another
    field: str
    direction: int  # 1 ascending, -1 descending


@dataclass(frozen=True)
class Edge(Generic[T]):
    cursor: str
    node: T


@dataclass(frozen=True)
class Page(Generic[T]):
    edges: list[Edge[T]]
    has_next_page: bool
    has_previous_page: bool

    @property
    def start_cursor(self) -> str | None:
        return self.edges[0].cursor if self.edges else None

    @property
    def end_cursor(self) -> str | None:
        return self.edges[-1].cursor if self.edges else None


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"ms": (value - _EPOCH) // timedelta(milliseconds=1)}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"ms"} and isinstance(value["ms"], int):
        return _EPOCH + timedelta(milliseconds=value["ms"])
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise ValueError("unsupported cursor value")


def encode_cursor(sort: SortKey, document: Mapping[str, Any]) -> str:
    payload = orjson.dumps([sort.name, _encode_value(document[sort.field]), str(document["_id"])])
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(sort: SortKey, cursor: str) -> tuple[Any, ObjectId]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, object_id = orjson.loads(raw)
        if name != sort.name:
            raise ValueError("cursor belongs to another order")
        return _decode_value(value), ObjectId(object_id)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError, InvalidId) as exc:
        raise BadUserInput("Invalid cursor: it does not come from this list and order.") from exc


def _beyond(sort: SortKey, cursor: str, *, direction: int, inclusive: bool) -> dict[str, Any]:
    """Documents strictly past the cursor when walking in `direction` (or at it, if inclusive)."""
    value, object_id = decode_cursor(sort, cursor)
    past = "$gt" if direction == 1 else "$lt"
    id_op = past + ("e" if inclusive else "")
    return {"$or": [{sort.field: {past: value}}, {sort.field: value, "_id": {id_op: object_id}}]}


async def _exists(collection: AsyncCollection, head: list[dict[str, Any]], condition: dict[str, Any]) -> bool:
    cursor = await collection.aggregate([*head, {"$match": condition}, {"$limit": 1}, {"$project": {"_id": 1}}])
    return bool(await cursor.to_list())


async def paginate(
    collection: AsyncCollection,
    *,
    match: dict[str, Any],
    sort: SortKey,
    page: PageRequest,
    parse: Callable[[dict[str, Any]], T],
    add_fields: dict[str, Any] | None = None,
    projection: dict[str, Any] | None = None,
    prefilter: dict[str, Any] | None = None,
) -> Page[T]:
    """One page of `collection` in `sort` order; one extra probe when a cursor's far side is asked about.

    `prefilter`, when given, is a $match run before `match`, shaped so the planner serves it from an index.
    """
    head: list[dict[str, Any]] = [*_prefilter_stage(prefilter), {"$match": match}]
    if add_fields:
        head.append({"$addFields": add_fields})
    walk = -sort.direction if page.backward else sort.direction
    bounds = []
    if page.after:
        bounds.append(_beyond(sort, page.after, direction=sort.direction, inclusive=False))
    if page.before:
        bounds.append(_beyond(sort, page.before, direction=-sort.direction, inclusive=False))
    pipeline = [*head]
    if bounds:
        pipeline.append({"$match": {"$and": bounds}})
    pipeline += [{"$sort": {sort.field: walk, "_id": walk}}, {"$limit": page.size + 1}]
    if projection:
        pipeline.append({"$project": projection})
    documents = await (await collection.aggregate(pipeline)).to_list()

    has_more = len(documents) > page.size
    documents = documents[: page.size]
    if page.backward:
        documents.reverse()
    # The cursor the client came from: is there anything on its other side?
    origin = page.before if page.backward else page.after
    has_behind = False
    if origin:
        has_behind = await _exists(collection, head, _beyond(sort, origin, direction=-walk, inclusive=True))
    edges = [Edge(encode_cursor(sort, doc), parse(doc)) for doc in documents]
    if page.backward:
        return Page(edges, has_next_page=has_behind, has_previous_page=has_more)
    return Page(edges, has_next_page=has_more, has_previous_page=has_behind)


def _prefilter_stage(prefilter: dict[str, Any] | None) -> list[dict[str, Any]]:
    # SecantusDB plans an index only from the first $match, and only if every predicate in it is an
    # indexed equality or range; MongoDB merges adjacent $match stages, so this costs it nothing.
    return [{"$match": prefilter}] if prefilter else []


async def count(collection: AsyncCollection, *, match: dict[str, Any], prefilter: dict[str, Any] | None = None) -> int:
    if not prefilter:
        return await collection.count_documents(match)
    pipeline = [*_prefilter_stage(prefilter), {"$match": match}, {"$count": "n"}]
    rows = await (await collection.aggregate(pipeline)).to_list()
    return rows[0]["n"] if rows else 0
