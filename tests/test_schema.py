"""The checked-in schema.graphql is what clients code against: it must match the code."""

from __future__ import annotations

from pathlib import Path

from taskql.cli import schema_sdl

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_checked_in_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == schema_sdl(), "schema.graphql is stale: run `make schema` and commit it"


def test_schema_keeps_the_contract_names() -> None:
    sdl = schema_sdl()

    for line in (
        "interface Node",
        "tasks(projectId: ID!, filter: TaskFilter = null, orderBy: TaskOrder = null, "
        "first: Int = null, after: String = null, last: Int = null, before: String = null): TaskConnection!",
        "searchTasks(query: String!, projectId: ID = null, first: Int = null, after: String = null): TaskConnection!",
        "updateTask(input: UpdateTaskInput!): TaskPayload",
    ):
        assert line in sdl
