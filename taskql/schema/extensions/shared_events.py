"""Subscription events executed once per process for all the subscribers who asked the same thing.

Every subscriber of a project receives every event of that project, and executing the
subscription's selection set for each of them was over half of what a delivery cost
(bench/README.md). Two subscribers get the same result for an event when they sent the same
operation with the same variables, apart from the subscription field's own arguments (`after`
only chooses where the events start), and the operation selects no field whose value depends on
who asks (those are marked `metadata={PER_VIEWER: True}`; selecting one adds the viewer to the
key). So the first subscriber to reach an event executes it and the others await and share that
result.

A result with errors is not shared: its errors may be the executing subscriber's own (it lost
access a moment ago), so the others execute the event themselves.

On a graphql-transport-ws socket, a subscriber that has caught up is not even woken for an event:
`event_writer` gives its resolver an `EventWriter` (services/events.py) that renders the shared
result to the `next` payload's JSON once, and writes it to each subscriber's socket through its
operation's outlet (http/subscription_outlet.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, ClassVar

import orjson
from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    Node,
    Visitor,
    print_ast,
    visit,
)
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from taskql.http.subscription_outlet import Outlet, current_outlet

PER_VIEWER = "taskql.per_viewer"
RENDERS_KEPT = 1024  # recent (event, operation) results; a few seconds of events for every distinct operation


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with subscription events shared between equal subscriptions.

    Payloads opt in with an `event_key` attribute that is the same for every subscriber's copy of
    one event. The payload's context must offer `fresh_loaders()` and `deps.viewer`.
    """

    _renders: ClassVar[OrderedDict[Hashable, _Render]]

    @classmethod
    def for_one_schema(cls) -> type[SharedEventExecutor]:
        """A subclass with results of its own: two apps in one process (each with its own in-memory
        event log, where cursors may coincide) never share them."""
        return type(cls.__name__, (cls,), {"_renders": OrderedDict()})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._operation_key: Hashable | None = None
        self._event_key: Hashable | None = None

    def build_resolve_info(
        self, field_def: GraphQLField, field_nodes: list[FieldNode], parent_type: GraphQLObjectType, path: Path
    ) -> GraphQLResolveInfo:
        if parent_type is self.schema.subscription_type:
            # The subscription's resolver is about to be called, in the operation's task: event_writer finds it.
            _subscribing.set(self)
        return super().build_resolve_info(field_def, field_nodes, parent_type, path)

    @property
    def operation_key(self) -> Hashable:
        """Equal for subscriptions whose events render the same (see the module's docstring)."""
        if self._operation_key is None:
            self._operation_key = self._describe_operation()
        return self._operation_key

    async def render_event(self, payload: Any) -> ExecutionResult | None:
        """The shared result of one event for this subscription; None if it has errors (not shareable)."""
        executor = self.build_per_event_executor(payload)
        result = executor.execute_operation()
        result = await result if self.is_awaitable(result) else result
        return None if result.errors else result

    def build_per_event_executor(self, payload: Any) -> SharedEventExecutor:
        executor = super().build_per_event_executor(payload)
        event_key = getattr(payload, "event_key", None)
        executor._event_key = None if event_key is None else (event_key, self.operation_key)
        return executor  # type: ignore[return-value]

    def execute_operation(self, serially: bool | None = None) -> Any:
        if self._event_key is None:  # a query, a mutation, or an event that does not opt in
            return super().execute_operation(serially)
        return self._execute_shared(self._event_key)

    async def _execute_shared(self, key: Hashable) -> ExecutionResult:
        render = self._renders.get(key)
        if render is None:
            render = self._renders[key] = _Render()
            if len(self._renders) > RENDERS_KEPT:
                self._renders.popitem(last=False)
            try:
                render.result = await self._execute_event()
                return render.result
            finally:
                render.done.set()  # also when it failed or this subscriber went away: the others then execute it
        await render.done.wait()
        if render.result is not None and not render.result.errors:
            return render.result
        return await self._execute_event()

    async def _execute_event(self) -> ExecutionResult:
        self.context_value.fresh_loaders()  # the connection outlives any one event: read current data
        result = super().execute_operation(False)
        return await result if self.is_awaitable(result) else result

    def _describe_operation(self) -> Hashable:
        """What decides an event's result, apart from the event itself."""
        fragments = sorted(self.fragment_definitions.items())
        text = "\n".join([print_ast(self.operation), *(print_ast(fragment) for _, fragment in fragments)])
        usage = _Usage()
        for node in _rendered_nodes(self.operation.selection_set.selections, [f for _, f in fragments]):
            visit(node, usage)
        coerced = self.variable_values.coerced
        variables = orjson.dumps(
            {name: coerced.get(name) for name in sorted(usage.variables)}, default=str, option=orjson.OPT_SORT_KEYS
        )
        per_viewer = usage.fields & _per_viewer_fields(self.schema)
        viewer = self.context_value.deps.viewer.id if per_viewer else None
        return _one_copy((text, variables, viewer))


_subscribing: ContextVar[SharedEventExecutor | None] = ContextVar("taskql_subscribing", default=None)


class SocketEventWriter:
    """Renders an event for every subscriber of one operation key once, and writes it to one of them."""

    __slots__ = ("_executor", "_outlet", "_to_payload", "key")

    def __init__(self, executor: SharedEventExecutor, outlet: Outlet, to_payload: Callable[[Any], Any]) -> None:
        self._executor = executor
        self._outlet = outlet
        self._to_payload = to_payload
        self.key = executor.operation_key

    async def render(self, record: Any) -> bytes | None:
        result = await self._executor.render_event(self._to_payload(record))
        return None if result is None else orjson.dumps({"data": result.data})

    def send(self, rendered: bytes) -> bool:
        return self._outlet.send_next(rendered)


def event_writer(to_payload: Callable[[Any], Any]) -> SocketEventWriter | None:
    """For a subscription resolver: a writer of its events straight to the socket, when the operation
    runs on a socket that offers it (graphql-transport-ws on `taskql serve`); else None."""
    outlet, executor = current_outlet.get(), _subscribing.get()
    return None if outlet is None or executor is None else SocketEventWriter(executor, outlet, to_payload)


class _Render:
    """One event executed for one operation key; `result` stays None if that execution failed."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: ExecutionResult | None = None


class _Usage(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.variables: set[str] = set()
        self.fields: set[str] = set()

    def enter_variable(self, node: Any, *_: Any) -> None:
        self.variables.add(node.name.value)

    def enter_field(self, node: Any, *_: Any) -> None:
        self.fields.add(node.name.value)


def _rendered_nodes(root_selections: Any, fragments: list[Node]) -> Iterator[Node]:
    """Every node of the operation except the subscription field's own arguments."""
    for selection in root_selections:
        if isinstance(selection, FieldNode):
            yield from selection.directives or ()
            if selection.selection_set:
                yield selection.selection_set
        else:
            yield selection
    yield from fragments


@lru_cache(maxsize=RENDERS_KEPT)
def _one_copy(key: Hashable) -> Hashable:
    """The first equal key seen: every subscription keeps its key, and a thousand subscribers of one
    operation would otherwise hold a thousand copies of its text (orjson's output alone takes 4 KiB)."""
    return key


@lru_cache(maxsize=4)
def _per_viewer_fields(schema: GraphQLSchema) -> frozenset[str]:
    """Names of the fields marked PER_VIEWER (by name only: a same-named field elsewhere just shares less)."""
    names = set()
    for graphql_type in schema.type_map.values():
        if isinstance(graphql_type, GraphQLObjectType):
            for name, field in graphql_type.fields.items():
                definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
                if definition is not None and definition.metadata.get(PER_VIEWER):
                    names.add(name)
    return frozenset(names)
