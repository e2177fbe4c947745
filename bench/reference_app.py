"""The reference of `make bench-http`: TaskQL's board and viewer in memory, written the way Strawberry's
docs teach (a typed context, a DataLoader, ParserCache and ValidationCache), with no database, cache,
authentication, limits, logs or metrics. What TaskQL does on top of this is what its ratio measures.

`python -m bench.reference_app --port N` serves it with uvicorn, as `taskql serve` serves TaskQL.
"""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import strawberry
import uvicorn
from strawberry.asgi import GraphQL
from strawberry.dataloader import DataLoader
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.types import Info

TOKEN = "reference-token"  # the one signed-in user's bearer token


@strawberry.enum
class TaskStatus(enum.Enum):
    TODO = "TODO"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"


@strawberry.enum
class TaskPriority(enum.Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    URGENT = "URGENT"


@strawberry.type
class User:
    id: strawberry.ID
    name: str


@dataclass
class TaskRow:
    id: str
    title: str
    status: TaskStatus
    priority: TaskPriority
    due_at: datetime | None
    assignee_id: str | None
    version: int = 1


USERS = {f"u{n}": User(id=strawberry.ID(f"u{n}"), name=f"User {n}") for n in range(4)}
TASKS = {
    f"t{n}": TaskRow(
        id=f"t{n}",
        title=f"Task {n}",
        status=list(TaskStatus)[n % 3],
        priority=list(TaskPriority)[n % 4],
        due_at=datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=n),
        assignee_id=f"u{n % 4}",
    )
    for n in range(20)
}


@strawberry.type
class Task:
    row: strawberry.Private[TaskRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.row.id)

    @strawberry.field
    def title(self) -> str:
        return self.row.title

    @strawberry.field
    def status(self) -> TaskStatus:
        return self.row.status

    @strawberry.field
    def priority(self) -> TaskPriority:
        return self.row.priority

    @strawberry.field
    def due_at(self) -> datetime | None:
        return self.row.due_at

    @strawberry.field
    def version(self) -> int:
        return self.row.version

    @strawberry.field
    async def assignee(self, info: Info) -> User | None:
        if self.row.assignee_id is None:
            return None
        return await info.context["users"].load(self.row.assignee_id)


@strawberry.type
class TaskEdge:
    cursor: str
    node: Task


@strawberry.type
class TaskConnection:
    edges: list[TaskEdge]


@strawberry.type
class Project:
    id: strawberry.ID
    name: str

    @strawberry.field
    def tasks(self, first: int = 20) -> TaskConnection:
        rows = list(TASKS.values())[:first]
        return TaskConnection(edges=[TaskEdge(cursor=row.id, node=Task(row=row)) for row in rows])


@strawberry.input
class UpdateTaskInput:
    id: strawberry.ID
    title: str | None = None


@strawberry.type
class UserError:
    code: str
    message: str


@strawberry.type
class TaskPayload:
    task: Task | None
    user_errors: list[UserError]


@strawberry.type
class Query:
    @strawberry.field
    def viewer(self, info: Info) -> User | None:
        return USERS["u0"] if info.context["signed_in"] else None

    @strawberry.field
    def project(self, id: strawberry.ID) -> Project | None:
        return Project(id=id, name="Board")


@strawberry.type
class Mutation:
    @strawberry.mutation
    def update_task(self, input: UpdateTaskInput) -> TaskPayload:
        row = TASKS.get(input.id)
        if row is None:
            return TaskPayload(task=None, user_errors=[UserError(code="NOT_FOUND", message="No such task.")])
        if input.title is not None:
            row.title = input.title
        row.version += 1
        return TaskPayload(task=Task(row=row), user_errors=[])


async def load_users(ids: list[str]) -> list[User | None]:
    return [USERS.get(user_id) for user_id in ids]


class ReferenceGraphQL(GraphQL):
    async def get_context(self, request, response):  # type: ignore[no-untyped-def, override]
        signed_in = request.headers.get("authorization") == f"Bearer {TOKEN}"
        return {"signed_in": signed_in, "users": DataLoader(load_fn=load_users)}


schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[ParserCache, ValidationCache])
app = ReferenceGraphQL(schema)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
