"""Relay building blocks: the Node interface, opaque global IDs, and generic connections."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import strawberry
from bson import ObjectId
from bson.errors import InvalidId

from taskql.db.pagination import Page
from taskql.errors import BadUserInput
from taskql.public_ids import global_id

N = TypeVar("N")
R = TypeVar("R")
NODE_TYPES = ("User", "Project", "Task", "Notification", "Webhook", "WebhookDelivery", "Export")


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID


def encode_id(type_name: str, object_id: ObjectId) -> strawberry.ID:
    return strawberry.ID(global_id(type_name, object_id))


def decode_any_id(global_id: str, *, argument: str = "id") -> tuple[str, ObjectId]:
    """(type name, object id) of a global ID; BAD_USER_INPUT when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
        type_name, _, hex_id = raw.partition(":")
        if type_name not in NODE_TYPES:
            raise ValueError(type_name)
        return type_name, ObjectId(hex_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidId, TypeError) as exc:
        raise BadUserInput(f"`{argument}` is not a valid ID.", field=(argument,)) from exc


def decode_id(global_id: str, expected_type: str, *, argument: str = "id") -> ObjectId:
    type_name, object_id = decode_any_id(global_id, argument=argument)
    if type_name != expected_type:
        raise BadUserInput(f"`{argument}` must be the ID of a {expected_type}, not a {type_name}.", field=(argument,))
    return object_id


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Number of items in the whole list (all pages), counted only when asked for.")
    async def total_count(self) -> int:
        return await self.count()


def to_connection(page: Page[R], convert: Callable[[R], N], count: Callable[[], Awaitable[int]]) -> Connection[N]:
    return Connection(
        edges=[Edge(cursor=edge.cursor, node=convert(edge.node)) for edge in page.edges],
        page_info=PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=page.start_cursor,
            end_cursor=page.end_cursor,
        ),
        count=count,
    )
