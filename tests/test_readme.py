"""The README stays true: every setting is documented, and its GraphQL examples fit the schema."""

from __future__ import annotations

import re
from pathlib import Path

from graphql import parse, specified_rules, validate
from graphql.validation import LoneAnonymousOperationRule

from taskql.schema.root import build_schema
from taskql.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    undocumented = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert undocumented == []


def test_the_graphql_examples_are_valid_against_the_schema() -> None:
    schema = build_schema()._schema
    blocks = re.findall(r"```graphql\n(.*?)```", README, re.DOTALL)
    assert len(blocks) >= 8
    # Several examples sit side by side in one block, each anonymous: that rule alone is waived.
    rules = [rule for rule in specified_rules if rule is not LoneAnonymousOperationRule]
    problems = {block[:60]: [e.message for e in validate(schema, parse(block), rules)] for block in blocks}
    assert {start: errors for start, errors in problems.items() if errors} == {}
