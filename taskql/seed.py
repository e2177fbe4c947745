"""`taskql seed`: demo data, written through the GraphQL schema of an in-process app.

Going through the API (not the collections) gives the data everything real writes have: validation,
search terms, the activity trail, cache entries and live events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import HTTPConnection

from taskql.context import Context, authenticated_deps
from taskql.progress import ProgressBar
from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.services.common import Runtime
from taskql.settings import UNLIMITED_RATE, Settings

DEMO_PASSWORD = "taskql demo password"
STATUSES = ["TODO", "IN_PROGRESS", "DONE"]
PRIORITIES = ["LOW", "MEDIUM", "HIGH", "URGENT"]
TAGS = ["frontend", "backend", "design", "bug", "docs", "ops"]
VERBS = ["Write", "Review", "Fix", "Plan", "Ship", "Test", "Design", "Document"]
THINGS = ["login page", "release notes", "search", "dashboard", "API limits", "onboarding", "billing", "alerts"]

REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } userErrors { message } } }"
CREATE_PROJECT = (
    "mutation($i: CreateProjectInput!) { createProject(input: $i) { project { id } userErrors { message } } }"
)
ADD_MEMBER = "mutation($i: AddProjectMemberInput!) { addProjectMember(input: $i) { userErrors { message } } }"
CREATE_TASK = "mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } userErrors { message } } }"


@dataclass(frozen=True)
class SeedPlan:
    users: int
    projects: int
    tasks_per_project: int
    run_id: str  # keeps the emails of two seedings apart


class _Api:
    """The schema, called as a given user would call it over HTTP."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self._runtime = runtime
        self._schema = build_schema(settings)
        self._connection = HTTPConnection({"type": "http", "headers": [], "client": ("127.0.0.1", 0)})

    async def call(self, token: str | None, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        authorization = f"Bearer {token}" if token else None
        deps = await authenticated_deps(self._runtime, self._connection, authorization)
        context = Context(request=self._connection, response=None, request_id="seed", deps=deps)  # type: ignore[arg-type]
        result = await self._schema.execute(query, variables, context_value=context)
        if result.errors:
            raise RuntimeError(f"seeding failed: {result.errors[0].message}")
        payload = next(iter((result.data or {}).values()))
        if payload.get("userErrors"):
            raise RuntimeError(f"seeding failed: {payload['userErrors'][0]['message']}")
        return payload


async def seed(settings: Settings, plan: SeedPlan) -> list[str]:
    """Writes the demo data; returns the users' emails (all with DEMO_PASSWORD)."""
    # Our own calls, from one address: the budgets meant for clients do not apply.
    settings = settings.model_copy(update=UNLIMITED_RATE)
    app = build_app(settings)
    rng = random.Random(plan.run_id)
    async with app.router.lifespan_context(app):
        api = _Api(app.state.runtime, settings)
        users = []
        with ProgressBar("users", plan.users) as bar:
            for n in range(plan.users):
                email = f"demo{n + 1}-{plan.run_id}@example.com"
                account = {"email": email, "name": f"Demo User {n + 1}", "password": DEMO_PASSWORD}
                registered = await api.call(None, REGISTER, {"i": account})
                users.append((registered["accessToken"], registered["user"]["id"], email))
                bar.advance()
        projects = []  # (owner's token, project id, member ids)
        with ProgressBar("projects", plan.projects) as bar:
            for p in range(plan.projects):
                token, owner_id, owner_email = users[p % len(users)]
                project = await api.call(token, CREATE_PROJECT, {"i": {"name": f"Demo project {p + 1}"}})
                project_id = project["project"]["id"]
                members = [owner_id]
                for _, user_id, email in rng.sample(users, k=min(3, len(users))):
                    if email != owner_email:
                        member = {"projectId": project_id, "email": email, "role": rng.choice(["EDITOR", "VIEWER"])}
                        await api.call(token, ADD_MEMBER, {"i": member})
                        members.append(user_id)
                projects.append((token, project_id, members))
                bar.advance()
        with ProgressBar("tasks", plan.projects * plan.tasks_per_project) as bar:
            for token, project_id, members in projects:
                for _ in range(plan.tasks_per_project):
                    await api.call(token, CREATE_TASK, {"i": _demo_task(rng, project_id, members)})
                    bar.advance()
    return [email for _, _, email in users]


def _demo_task(rng: random.Random, project_id: str, members: list[str]) -> dict[str, Any]:
    due = datetime.now(UTC) + timedelta(days=rng.randint(-7, 21))
    return {
        "projectId": project_id,
        "title": f"{rng.choice(VERBS)} {rng.choice(THINGS)}",
        "status": rng.choice(STATUSES),
        "priority": rng.choice(PRIORITIES),
        "tags": rng.sample(TAGS, k=rng.randint(0, 2)),
        "dueAt": due.isoformat() if rng.random() < 0.7 else None,
        "assigneeId": rng.choice([*members, None]),
    }
