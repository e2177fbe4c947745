"""The schema: root Query and Mutation wired to resolvers, and the extensions every request runs."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.types import ExecutionContext

from taskql.resolvers import nodes as node_fields
from taskql.resolvers import projects as project_fields
from taskql.resolvers import tasks as task_fields
from taskql.resolvers import users as user_fields
from taskql.schema.errors import IsAuthenticated, format_errors
from taskql.schema.projects import DeleteProjectPayload, Project, ProjectPayload
from taskql.schema.relay import Connection, Node
from taskql.schema.tasks import DeleteTaskPayload, Task, TaskPayload
from taskql.schema.users import AuthPayload, LogoutPayload, User, UserPayload

AUTHENTICATED = [IsAuthenticated]


@strawberry.type
class Query:
    viewer: User | None = strawberry.field(resolver=user_fields.viewer)
    node: Node | None = strawberry.field(resolver=node_fields.node, permission_classes=AUTHENTICATED)
    nodes: list[Node | None] = strawberry.field(resolver=node_fields.nodes, permission_classes=AUTHENTICATED)
    projects: Connection[Project] = strawberry.field(resolver=project_fields.projects, permission_classes=AUTHENTICATED)
    project: Project | None = strawberry.field(resolver=project_fields.project, permission_classes=AUTHENTICATED)
    task: Task | None = strawberry.field(resolver=task_fields.task, permission_classes=AUTHENTICATED)
    tasks: Connection[Task] = strawberry.field(resolver=task_fields.tasks, permission_classes=AUTHENTICATED)
    my_tasks: Connection[Task] = strawberry.field(resolver=task_fields.my_tasks, permission_classes=AUTHENTICATED)
    search_tasks: Connection[Task] = strawberry.field(
        resolver=task_fields.search_tasks, permission_classes=AUTHENTICATED
    )


@strawberry.type
class Mutation:
    register: AuthPayload = strawberry.mutation(resolver=user_fields.register)
    login: AuthPayload = strawberry.mutation(resolver=user_fields.login)
    refresh_token: AuthPayload = strawberry.mutation(resolver=user_fields.refresh_token)
    logout: LogoutPayload = strawberry.mutation(resolver=user_fields.logout)
    logout_all: LogoutPayload | None = strawberry.mutation(
        resolver=user_fields.logout_all, permission_classes=AUTHENTICATED
    )
    update_profile: UserPayload | None = strawberry.mutation(
        resolver=user_fields.update_profile, permission_classes=AUTHENTICATED
    )
    change_password: UserPayload | None = strawberry.mutation(
        resolver=user_fields.change_password, permission_classes=AUTHENTICATED
    )
    create_project: ProjectPayload | None = strawberry.mutation(
        resolver=project_fields.create_project, permission_classes=AUTHENTICATED
    )
    update_project: ProjectPayload | None = strawberry.mutation(
        resolver=project_fields.update_project, permission_classes=AUTHENTICATED
    )
    delete_project: DeleteProjectPayload | None = strawberry.mutation(
        resolver=project_fields.delete_project, permission_classes=AUTHENTICATED
    )
    add_project_member: ProjectPayload | None = strawberry.mutation(
        resolver=project_fields.add_project_member, permission_classes=AUTHENTICATED
    )
    update_project_member: ProjectPayload | None = strawberry.mutation(
        resolver=project_fields.update_project_member, permission_classes=AUTHENTICATED
    )
    remove_project_member: ProjectPayload | None = strawberry.mutation(
        resolver=project_fields.remove_project_member, permission_classes=AUTHENTICATED
    )
    create_task: TaskPayload | None = strawberry.mutation(
        resolver=task_fields.create_task, permission_classes=AUTHENTICATED
    )
    update_task: TaskPayload | None = strawberry.mutation(
        resolver=task_fields.update_task, permission_classes=AUTHENTICATED
    )
    delete_task: DeleteTaskPayload | None = strawberry.mutation(
        resolver=task_fields.delete_task, permission_classes=AUTHENTICATED
    )


class TaskQLSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Codes and masks errors; logs only unexpected ones (with the request id), not expected failures."""
        context = execution_context.context if execution_context else None
        format_errors(errors, getattr(context, "request_id", None))


def build_schema(**options: Any) -> strawberry.Schema:
    return TaskQLSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Project, Task],
        extensions=[ParserCache, ValidationCache],
        **options,
    )
