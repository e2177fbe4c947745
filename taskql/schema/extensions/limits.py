"""What one GraphQL document may ask for, checked before anything runs (guard.py applies these).

Depth, aliases and the fields a document selects once its fragments are expanded are measured by
one walk (`DocumentShape`) that goes through each fragment once, however often it is spread:
Strawberry's limiters re-walk a fragment at every spread, which a document of fragments that each
spread the previous one twice makes exponential (`query{...F20} fragment F0 on Query{__typename}
fragment F1 on Query{...F0 ...F0} …`: seconds of a blocked event loop for under 1 kB). Directives
and repeated fields are validation rules; tokens are a parser option.

The cost of an operation is GitHub's "node limit": every connection may return as many nodes as
its `first`/`last` (the default page size when neither is given), and a list with a list argument
(`nodes(ids:)`) as many as that argument's items, once for each node of the lists around it, so
`projects(first: 10) { tasks(first: 50) }` may return 10 + 10 × 50 = 510 nodes. guard.py refuses
and charges operations by it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLSchema,
    InlineFragmentNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_nullable_type,
    value_from_ast,
)
from graphql.type import GraphQLInterfaceType, GraphQLObjectType

from taskql.db.pagination import DEFAULT_PAGE_SIZE, check_page_size
from taskql.settings import Settings

CONNECTION_SUFFIX = "Connection"
# The code of the limits' own validation errors: their messages name nothing of the schema, so
# production keeps them (schema/errors.py rewrites graphql-core's).
_OWN = {"code": "GRAPHQL_VALIDATION_FAILED"}


def query_cost(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
) -> int:
    """The most nodes the operation's connections could return (0 for an unknown operation)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    wanted = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    operation = wanted[0] if wanted else None
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    walker = _CostWalker(schema, fragments, variables or {})
    return walker.cost(root, operation.selection_set, 1, frozenset()) if root else 0


class _CostWalker:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any]):
        self._schema = schema
        self._fragments = fragments
        self._variables = variables
        # A selection's cost is proportional to its multiplier: a fragment's is worked out once (at 1).
        self._unit_costs: dict[str, int] = {}

    def cost(self, parent: Any, selections: SelectionSetNode, multiplier: int, seen: frozenset[str]) -> int:
        """Fragments on different types all count: an upper bound, as the cost must be."""
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self._field_cost(parent, selection, multiplier, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                scope = self._schema.get_type(condition.name.value) if condition else parent
                total += self.cost(scope, selection.selection_set, multiplier, seen)
            elif isinstance(selection, FragmentSpreadNode):
                total += multiplier * self._fragment_cost(selection.name.value, seen)
        return total

    def _field_cost(self, parent: Any, field: FieldNode, multiplier: int, seen: frozenset[str]) -> int:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) or field.selection_set is None:
            return 0
        definition: GraphQLField | None = parent.fields.get(field.name.value)
        if definition is None:
            return 0
        if get_named_type(definition.type).name.endswith(CONNECTION_SUFFIX):
            multiplier *= self._page_size(field, definition)
            return multiplier + self.cost(get_named_type(definition.type), field.selection_set, multiplier, seen)
        if isinstance(get_nullable_type(definition.type), GraphQLList):
            # A list as long as a list argument (`nodes(ids:)`): one object per item.
            items = self._longest_list_argument(field, definition)
            if items:
                multiplier *= items
                return multiplier + self.cost(get_named_type(definition.type), field.selection_set, multiplier, seen)
        return self.cost(get_named_type(definition.type), field.selection_set, multiplier, seen)

    def _longest_list_argument(self, field: FieldNode, definition: GraphQLField) -> int:
        lengths = [0]
        for argument in field.arguments or ():
            declared = definition.args.get(argument.name.value)
            if declared is not None and isinstance(get_nullable_type(declared.type), GraphQLList):
                value = value_from_ast(argument.value, declared.type, self._variables)
                if isinstance(value, list):
                    lengths.append(len(value))
        return max(lengths)

    def _fragment_cost(self, name: str, seen: frozenset[str]) -> int:
        fragment = self._fragments.get(name)
        if fragment is None or name in seen:  # validation refuses both; the cost must not loop on them
            return 0
        if name not in self._unit_costs:
            scope = self._schema.get_type(fragment.type_condition.name.value)
            self._unit_costs[name] = self.cost(scope, fragment.selection_set, 1, seen | {name})
        return self._unit_costs[name]

    def _page_size(self, field: FieldNode, definition: GraphQLField) -> int:
        sizes = []
        for argument in field.arguments or ():
            name = argument.name.value
            if name in ("first", "last") and name in definition.args:
                value = value_from_ast(argument.value, definition.args[name].type, self._variables)
                if isinstance(value, int):
                    # Refused here, before anything is charged: a negative size would make the cost,
                    # and the points charged, negative (a credit to the budget).
                    check_page_size(name, value)
                    sizes.append(value)
        # `first` and `last` together (refused when the field runs) count the larger.
        return max(sizes, default=DEFAULT_PAGE_SIZE)


@dataclass(frozen=True)
class Shape:
    depth: int  # nested fields that have selections, introspection fields left out (as QueryDepthLimiter counts)
    selections: int  # fields selected, once every fragment spread is expanded
    aliases: int  # aliased fields, once expanded (as MaxAliasesLimiter counts)

    def __add__(self, other: Shape) -> Shape:
        return Shape(max(self.depth, other.depth), self.selections + other.selections, self.aliases + other.aliases)


_EMPTY = Shape(0, 0, 0)


class DocumentShape:
    """A document's shape, walking each fragment once: a fragment's shape is the same wherever it
    is spread. A fragment spread inside itself (validation refuses that) counts as empty."""

    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self._shapes: dict[str, Shape] = {}
        self._walking: set[str] = set()
        self.operations = {
            (d.name.value if d.name else "anonymous"): self._of(d.selection_set)
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        }

    def _of(self, selections: SelectionSetNode) -> Shape:
        shape = _EMPTY
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                inner = _EMPTY if selection.selection_set is None else self._of(selection.selection_set)
                counted = selection.selection_set is not None and not selection.name.value.startswith("__")
                aliased = 1 if selection.alias else 0
                shape += Shape(inner.depth + 1 if counted else 0, 1 + inner.selections, inner.aliases + aliased)
            elif isinstance(selection, InlineFragmentNode):
                shape += self._of(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                shape += self._fragment(selection.name.value)
        return shape

    def _fragment(self, name: str) -> Shape:
        fragment = self._fragments.get(name)
        if fragment is None or name in self._walking:
            return _EMPTY
        if name not in self._shapes:
            self._walking.add(name)
            self._shapes[name] = self._of(fragment.selection_set)
            self._walking.discard(name)
        return self._shapes[name]


@dataclass(frozen=True)
class ShapeLimits:
    max_depth: int
    max_aliases: int
    max_selections: int

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        """Errors of a document too deep, too aliased or too large once its fragments are expanded."""
        operations = DocumentShape(document).operations
        selections = sum(shape.selections for shape in operations.values())
        if selections > self.max_selections:
            message = (
                f"This document selects {selections} fields once its fragments are expanded; "
                f"the limit is {self.max_selections}."
            )
            return [GraphQLError(message, extensions={"code": "QUERY_TOO_COMPLEX"})]
        errors = [
            GraphQLError(f"'{name}' exceeds maximum operation depth of {self.max_depth}", extensions=_OWN)
            for name, shape in operations.items()
            if shape.depth > self.max_depth
        ]
        aliases = sum(shape.aliases for shape in operations.values())
        if aliases > self.max_aliases:
            errors.append(GraphQLError(f"{aliases} aliases found. Allowed: {self.max_aliases}", extensions=_OWN))
        return errors


def _max_directives_rule(max_directives: int) -> type[ValidationRule]:
    class MaxDirectivesRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_directive(self, node: Any, *_: Any) -> None:
            self.count += 1
            if self.count == max_directives + 1:
                message = f"At most {max_directives} directives are allowed in a document."
                self.report_error(GraphQLError(message, node, extensions=_OWN))

    return MaxDirectivesRule


def _max_repeats_rule(max_repeats: int) -> type[ValidationRule]:
    """A field (or a fragment spread) asked for again and again in one selection (`{ __typename
    __typename … }`) adds work and nothing else: GraphQL merges the copies."""

    class MaxFieldRepeatsRule(ValidationRule):
        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            keys = Counter(
                (selection.alias or selection.name).value
                if isinstance(selection, FieldNode)
                else f"...{selection.name.value}"
                for selection in node.selections
                if isinstance(selection, FieldNode | FragmentSpreadNode)
            )
            repeated = [key for key, count in keys.items() if count > max_repeats]
            if repeated:
                message = f"`{repeated[0]}` is selected more than {max_repeats} times in one place."
                self.report_error(GraphQLError(message, node, extensions=_OWN))

    return MaxFieldRepeatsRule


def shape_limits(settings: Settings) -> ShapeLimits:
    return ShapeLimits(settings.max_query_depth, settings.max_query_aliases, settings.max_query_selections)


def validation_rules(settings: Settings) -> tuple[type[ValidationRule], ...]:
    """The rules a document must pass, built once per schema: a document's validation is cached
    (guard.py), which holds only while the rules are the same for every request (Strawberry's
    limiter extensions build theirs per request, which made every request a full validation)."""
    rules = [
        _max_directives_rule(settings.max_query_directives),
        _max_repeats_rule(settings.max_field_repeats),
    ]
    if settings.is_production:  # introspection would map the API for an attacker
        rules.append(NoSchemaIntrospectionCustomRule)
    return tuple(rules)
