"""Keyset (cursor) pagination over (sort key, _id): stable under concurrent inserts and deletes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
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


def check_page_size(name: str, size: int) -> None:
    """`first` or `last`: at least one, at most MAX_PAGE_SIZE."""
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadUserInput(f"`{name}` must be between 1 and {MAX_PAGE_SIZE}.", field=(name,))


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
            if size is not None:
                check_page_size(name, size)

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


@dataclass(frozen=True)
class _PagePlan:
    """The stages of one page and of its probe, shared by single lists and per-parent batches."""

    head: list[dict[str, Any]]  # what the list is: $match (and computed fields)
    sort: SortKey
    page: PageRequest

    @property
    def walk(self) -> int:
        return -self.sort.direction if self.page.backward else self.sort.direction

    def page_stages(self, projection: dict[str, Any] | None) -> list[dict[str, Any]]:
        bounds = []
        if self.page.after:
            bounds.append(_beyond(self.sort, self.page.after, direction=self.sort.direction, inclusive=False))
        if self.page.before:
            bounds.append(_beyond(self.sort, self.page.before, direction=-self.sort.direction, inclusive=False))
        stages = [*self.head]
        if bounds:
            stages.append({"$match": {"$and": bounds}})
        stages += [{"$sort": {self.sort.field: self.walk, "_id": self.walk}}, {"$limit": self.page.size + 1}]
        if projection:
            stages.append({"$project": projection})
        return stages

    def probe_stages(self) -> list[dict[str, Any]] | None:
        """Is there anything on the other side of the cursor the client came from? None without one."""
        origin = self.page.before if self.page.backward else self.page.after
        if not origin:
            return None
        behind = _beyond(self.sort, origin, direction=-self.walk, inclusive=True)
        return [*self.head, {"$match": behind}, {"$limit": 1}, {"$project": {"_id": 1}}]

    def assemble(
        self, documents: list[dict[str, Any]], has_behind: bool, parse: Callable[[dict[str, Any]], T]
    ) -> Page[T]:
        has_more = len(documents) > self.page.size
        documents = documents[: self.page.size]
        if self.page.backward:
            documents.reverse()
        edges = [Edge(encode_cursor(self.sort, doc), parse(doc)) for doc in documents]
        if self.page.backward:
            return Page(edges, has_next_page=has_behind, has_previous_page=has_more)
        return Page(edges, has_next_page=has_more, has_previous_page=has_behind)


def _head(match: dict[str, Any], add_fields: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"$match": match}, *([{"$addFields": add_fields}] if add_fields else [])]


async def _aggregate(collection: AsyncCollection, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return await (await collection.aggregate(pipeline)).to_list()


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
    plan = _PagePlan(_head(match, add_fields), sort, page)
    documents = await _aggregate(collection, [*_prefilter_stage(prefilter), *plan.page_stages(projection)])
    probe = plan.probe_stages()
    has_behind = bool(probe and await _aggregate(collection, [*_prefilter_stage(prefilter), *probe]))
    return plan.assemble(documents, has_behind, parse)


async def paginate_children(
    parents: AsyncCollection,
    children: AsyncCollection,
    *,
    parent_ids: Sequence[ObjectId],
    foreign_field: str,
    match: dict[str, Any],
    sort: SortKey,
    page: PageRequest,
    parse: Callable[[dict[str, Any]], T],
    projection: dict[str, Any] | None = None,
) -> dict[ObjectId, Page[T]]:
    """The same page of children for many parents in one command: a `$lookup` per parent, which
    MongoDB (5.0+) serves from the (foreign_field, sort key, _id) index with an early stop at the limit."""
    plan = _PagePlan(_head(match, None), sort, page)
    lookups = [_lookup(children, foreign_field, plan.page_stages(projection), "page")]
    probe = plan.probe_stages()
    if probe:
        lookups.append(_lookup(children, foreign_field, probe, "behind"))
    rows = await _aggregate(parents, [{"$match": {"_id": {"$in": list(parent_ids)}}}, *lookups])
    found = {row["_id"]: plan.assemble(row["page"], bool(row.get("behind")), parse) for row in rows}
    return {parent_id: found.get(parent_id) or plan.assemble([], False, parse) for parent_id in parent_ids}


def _lookup(children: AsyncCollection, foreign_field: str, pipeline: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {
        "$lookup": {
            "from": children.name,
            "localField": "_id",
            "foreignField": foreign_field,
            "pipeline": pipeline,
            "as": name,
        }
    }


async def count_children(
    children: AsyncCollection, *, parent_ids: Sequence[ObjectId], foreign_field: str, match: dict[str, Any]
) -> dict[ObjectId, int]:
    """How many children match, per parent, in one command."""
    rows = await _aggregate(
        children,
        [
            {"$match": {foreign_field: {"$in": list(parent_ids)}}},
            {"$match": match},
            {"$group": {"_id": f"${foreign_field}", "n": {"$sum": 1}}},
        ],
    )
    counts = {row["_id"]: row["n"] for row in rows}
    return {parent_id: counts.get(parent_id, 0) for parent_id in parent_ids}


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
