"""The schema: root Query and Mutation wired to resolvers, and the extensions every request runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from opentelemetry.trace import Tracer
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from taskql.resolvers import exports as export_fields
from taskql.resolvers import nodes as node_fields
from taskql.resolvers import notifications as notification_fields
from taskql.resolvers import projects as project_fields
from taskql.resolvers import subscriptions as subscription_fields
from taskql.resolvers import tasks as task_fields
from taskql.resolvers import users as user_fields
from taskql.resolvers import webhooks as webhook_fields
from taskql.schema.errors import IsAuthenticated, format_errors
from taskql.schema.events import TaskEvent
from taskql.schema.exports import ExportTasksPayload
from taskql.schema.extensions.guard import Documents, OperationGuard
from taskql.schema.extensions.limits import shape_limits, validation_rules
from taskql.schema.extensions.metrics import OperationMetrics, count_errors, time_root_fields
from taskql.schema.extensions.shared_events import SharedEventExecutor
from taskql.schema.notifications import MarkNotificationsReadPayload, Notification
from taskql.schema.projects import DeleteProjectPayload, Project, ProjectPayload
from taskql.schema.relay import Connection, Node
from taskql.schema.scalars import DATE_TIME
from taskql.schema.tasks import DeleteTaskPayload, Task, TaskPayload
from taskql.schema.users import AuthPayload, LogoutPayload, User, UserPayload
from taskql.schema.webhooks import DeleteWebhookPayload, WebhookDeliveryPayload, WebhookPayload
from taskql.settings import Settings
from taskql.tracing import GraphQLTracing


def _query(resolver: Callable[..., Any], *, signed_in: bool = True) -> Any:
    """A root field; its resolver's docstring documents it in GraphiQL."""
    return strawberry.field(
        resolver=resolver, description=inspect.getdoc(resolver), permission_classes=_guard(signed_in)
    )


def _mutation(resolver: Callable[..., Any], *, signed_in: bool = True) -> Any:
    return strawberry.mutation(
        resolver=resolver, description=inspect.getdoc(resolver), permission_classes=_guard(signed_in)
    )


def _guard(signed_in: bool) -> list[type[BasePermission]]:
    return [IsAuthenticated] if signed_in else []


@strawberry.type
class Query:
    viewer: User | None = _query(user_fields.viewer, signed_in=False)
    node: Node | None = _query(node_fields.node)
    nodes: list[Node | None] = _query(node_fields.nodes)
    projects: Connection[Project] = _query(project_fields.projects)
    project: Project | None = _query(project_fields.project)
    task: Task | None = _query(task_fields.task)
    tasks: Connection[Task] = _query(task_fields.tasks)
    my_tasks: Connection[Task] = _query(task_fields.my_tasks)
    search_tasks: Connection[Task] = _query(task_fields.search_tasks)


@strawberry.type
class Mutation:
    register: AuthPayload = _mutation(user_fields.register, signed_in=False)
    login: AuthPayload = _mutation(user_fields.login, signed_in=False)
    refresh_token: AuthPayload = _mutation(user_fields.refresh_token, signed_in=False)
    logout: LogoutPayload = _mutation(user_fields.logout, signed_in=False)
    logout_all: LogoutPayload = _mutation(user_fields.logout_all)
    update_profile: UserPayload = _mutation(user_fields.update_profile)
    change_password: UserPayload = _mutation(user_fields.change_password)
    create_project: ProjectPayload = _mutation(project_fields.create_project)
    update_project: ProjectPayload = _mutation(project_fields.update_project)
    delete_project: DeleteProjectPayload = _mutation(project_fields.delete_project)
    add_project_member: ProjectPayload = _mutation(project_fields.add_project_member)
    update_project_member: ProjectPayload = _mutation(project_fields.update_project_member)
    remove_project_member: ProjectPayload = _mutation(project_fields.remove_project_member)
    create_task: TaskPayload = _mutation(task_fields.create_task)
    update_task: TaskPayload = _mutation(task_fields.update_task)
    delete_task: DeleteTaskPayload = _mutation(task_fields.delete_task)
    mark_notifications_read: MarkNotificationsReadPayload = _mutation(notification_fields.mark_notifications_read)
    export_tasks: ExportTasksPayload = _mutation(export_fields.export_tasks)
    create_webhook: WebhookPayload = _mutation(webhook_fields.create_webhook)
    update_webhook: WebhookPayload = _mutation(webhook_fields.update_webhook)
    delete_webhook: DeleteWebhookPayload = _mutation(webhook_fields.delete_webhook)
    redeliver_webhook_delivery: WebhookDeliveryPayload = _mutation(webhook_fields.redeliver_webhook_delivery)


@strawberry.type
class Subscription:
    task_events: TaskEvent = strawberry.subscription(
        resolver=subscription_fields.task_events,
        description=inspect.getdoc(subscription_fields.task_events),
        permission_classes=[IsAuthenticated],
    )
    notification_added: Notification = strawberry.subscription(
        resolver=notification_fields.notification_added,
        description=inspect.getdoc(notification_fields.notification_added),
        permission_classes=[IsAuthenticated],
    )


class TaskQLSchema(strawberry.Schema):
    documents: Documents  # parsed and validated once per distinct text (guard.py)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Codes and masks errors; logs only unexpected ones (with the request id), not expected failures."""
        context = execution_context.context if execution_context else None
        format_errors(errors, getattr(context, "request_id", None))
        count_errors(errors)  # here, as every error passes here once, with its code


def build_schema(settings: Settings | None = None, tracer: Tracer | None = None) -> TaskQLSchema:
    """The schema with the request limits of `settings` (defaults when None); in production, without
    introspection or "Did you mean …" suggestions, which would map the API for an attacker. With a
    tracer, operations and resolvers are traced (tracing.py)."""
    settings = settings or Settings(_env_file=None)
    # First: the operation's span is current while the other extensions run.
    tracing = [] if tracer is None else [lambda: GraphQLTracing(tracer)]
    # Next: an operation's duration includes what the other extensions do (parsing, limits, cost).
    measuring = [OperationMetrics] if settings.metrics_enabled else []
    documents = Documents(
        validation_rules(settings),
        shape_limits(settings),
        settings.max_query_tokens,
        hide_schema=settings.is_production,
    )
    schema = TaskQLSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[User, Project, Task],
        extensions=[
            *tracing,
            *measuring,
            OperationGuard.factory(documents),
        ],
        execution_context_class=SharedEventExecutor.for_one_schema(),
        config=StrawberryConfig(
            scalar_map={datetime: DATE_TIME},
            disable_field_suggestions=settings.is_production,
            batching_config={"max_operations": settings.batch_max_operations}
            if settings.batch_max_operations
            else None,
        ),
    )
    schema.documents = documents
    if settings.metrics_enabled and settings.metrics_resolver_sample_rate > 0:
        time_root_fields(schema._schema, settings.metrics_resolver_sample_rate)
    return schema
