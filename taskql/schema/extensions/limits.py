"""What one GraphQL document may ask for, checked before anything runs (guard.py applies these).

Depth and aliases use Strawberry's limiters' rules; directives and repeated fields are counted
here; tokens are a parser option. The cost of an operation is GitHub's "node limit": every
connection may return as many nodes as its `first`/`last` (the default page size when neither is
given), once for each node of the connections around it, so `projects(first: 10) { tasks(first:
50) }` may return 10 + 10 × 50 = 510 nodes. guard.py refuses and charges operations by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    value_from_ast,
)
from graphql.type import GraphQLInterfaceType, GraphQLObjectType
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from taskql.db.pagination import DEFAULT_PAGE_SIZE, check_page_size
from taskql.settings import Settings

CONNECTION_SUFFIX = "Connection"


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

    def cost(self, parent: Any, selections: SelectionSetNode, multiplier: int, seen: frozenset[str]) -> int:
        total = 0
        for field, parent_type in self._fields(parent, selections, seen):
            definition: GraphQLField | None = parent_type.fields.get(field.name.value)
            if definition is None or field.selection_set is None:
                continue
            child_multiplier = multiplier
            if get_named_type(definition.type).name.endswith(CONNECTION_SUFFIX):
                child_multiplier = multiplier * self._page_size(field, definition)
                total += child_multiplier
            total += self.cost(get_named_type(definition.type), field.selection_set, child_multiplier, seen)
        return total

    def _fields(
        self, parent: Any, selections: SelectionSetNode, seen: frozenset[str]
    ) -> Iterator[tuple[FieldNode, Any]]:
        """Fields selected on `parent`, through fragments. Fragments on different types all count:
        an upper bound, as the cost must be."""
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
                    yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                scope = self._schema.get_type(condition.name.value) if condition else parent
                yield from self._fields(scope, selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                fragment = self._fragments.get(selection.name.value)
                if fragment is not None:
                    scope = self._schema.get_type(fragment.type_condition.name.value)
                    yield from self._fields(scope, fragment.selection_set, seen | {selection.name.value})

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


def _max_directives_rule(max_directives: int) -> type[ValidationRule]:
    class MaxDirectivesRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_directive(self, node: Any, *_: Any) -> None:
            self.count += 1
            if self.count == max_directives + 1:
                self.report_error(GraphQLError(f"At most {max_directives} directives are allowed in a document.", node))

    return MaxDirectivesRule


def _max_repeats_rule(max_repeats: int) -> type[ValidationRule]:
    """A field asked for again and again in one selection (`{ __typename __typename … }`) adds work
    and nothing else: GraphQL merges the copies. Fragments that select the same field are not counted."""

    class MaxFieldRepeatsRule(ValidationRule):
        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            keys = Counter(
                (field.alias or field.name).value for field in node.selections if isinstance(field, FieldNode)
            )
            repeated = [key for key, count in keys.items() if count > max_repeats]
            if repeated:
                self.report_error(
                    GraphQLError(f"`{repeated[0]}` is selected more than {max_repeats} times in one place.", node)
                )

    return MaxFieldRepeatsRule


def validation_rules(settings: Settings) -> tuple[type[ValidationRule], ...]:
    """The rules a document must pass, built once per schema: a document's validation is cached
    (guard.py), which holds only while the rules are the same for every request (Strawberry's
    limiter extensions build theirs per request, which made every request a full validation)."""
    rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_query_aliases).validation_rules,
        _max_directives_rule(settings.max_query_directives),
        _max_repeats_rule(settings.max_field_repeats),
    ]
    if settings.is_production:  # introspection would map the API for an attacker
        rules.append(NoSchemaIntrospectionCustomRule)
    return tuple(rules)
