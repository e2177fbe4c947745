"""The checked-in schema.graphql is what clients code against: it must match the code."""

from __future__ import annotations

from pathlib import Path

from graphql import GraphQLNonNull

from taskql.cli import schema_sdl
from taskql.schema.root import build_schema

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


def test_every_mutation_answers_a_payload_and_date_times_name_their_spec() -> None:
    schema = build_schema()._schema
    assert schema.mutation_type is not None

    nullable = [
        name for name, field in schema.mutation_type.fields.items() if not isinstance(field.type, GraphQLNonNull)
    ]
    assert nullable == []  # code generators then type each payload as always present
    assert schema.type_map["DateTime"].specified_by_url == "https://scalars.graphql.org/andimarek/date-time"
