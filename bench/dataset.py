"""A reproducible, realistic dataset written through TaskQL's own repositories.

Users and projects go through the repository functions one by one. Tasks are too many for that
(SecantusDB takes ~330 single inserts/s with every task index in place, ~750/s in batches), so they
are sent with insert_many, built exactly like `insert_task` builds them; the first task of the run is
written by `insert_task` itself and the two shapes are compared, so a drift fails the run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from taskql.auth.passwords import Passwords
from taskql.clock import utcnow
from taskql.db import tasks as tasks_db
from taskql.db.client import Database
from taskql.db.indexes import ensure_indexes
from taskql.db.projects import ProjectRecord, add_member, insert_project
from taskql.db.users import UserRecord, insert_user
from taskql.progress import ProgressBar

VIEWER_EMAIL = "bench@example.com"
VIEWER_PASSWORD = "bench correct horse battery"
TASK_BATCH_SIZE = 500

FIRST_NAMES = (
    "Ada", "Alan", "Barbara", "Claude", "Dennis", "Donald", "Edsger", "Frances", "Grace", "Guido",
    "Hedy", "John", "Ken", "Linus", "Margaret", "Niklaus", "Radia", "Sophie", "Tim", "Yukihiro",
)  # fmt: skip
LAST_NAMES = (
    "Allen", "Backus", "Cerf", "Dijkstra", "Hamilton", "Hopper", "Kay", "Knuth", "Lamarr", "Liskov",
    "Lovelace", "McCarthy", "Perlman", "Ritchie", "Shannon", "Thompson", "Torvalds", "Turing", "Wilson", "Wirth",
)  # fmt: skip
PROJECT_AREAS = ("Billing", "Checkout", "Search", "Onboarding", "Mobile app", "Admin console", "Data platform")
PROJECT_INITIATIVES = ("redesign", "migration", "launch", "hardening", "cleanup", "v2", "performance push")
TASK_VERBS = ("Fix", "Add", "Update", "Remove", "Refactor", "Document", "Test", "Review", "Investigate")
TASK_OBJECTS = (
    "login redirect", "invoice PDF export", "password reset email", "search ranking", "CSV import",
    "dark mode toggle", "rate limiter", "audit log", "webhook retries", "cache invalidation",
    "onboarding checklist", "timezone handling", "API pagination", "error messages", "feature flags",
)  # fmt: skip
TASK_CONTEXTS = ("on Safari", "for admins", "in the mobile app", "after the migration", "for large teams", "")
TASK_REASONS = (
    "Customers reported it twice this week.",
    "It blocks the next release.",
    "Support keeps answering the same question.",
    "The current behaviour is confusing and undocumented.",
    "Found during the security review.",
    "Needed before the enterprise pilot starts.",
)
TAGS = ("backend", "frontend", "bug", "ux", "security", "infra", "docs", "performance")


@dataclass(frozen=True)
class DatasetSpec:
    users: int = 200
    projects: int = 50
    tasks: int = 20_000
    viewer_projects: int = 10  # how many projects the benchmark user belongs to
    min_members: int = 4  # per project, owner included
    max_members: int = 8
    seed: int = 20_260_501  # same seed, same names, memberships and tasks (ids differ between runs)

    def __post_init__(self) -> None:
        if not 1 <= self.viewer_projects <= self.projects:
            raise ValueError("viewer_projects must be between 1 and the number of projects")
        if not 2 <= self.min_members <= self.max_members < self.users:
            raise ValueError("need 2 <= min_members <= max_members < users")


@dataclass(frozen=True)
class Dataset:
    viewer_email: str
    viewer_password: str
    members_per_viewer_project: list[int]
    seconds: float


async def seed(db: Database, spec: DatasetSpec) -> Dataset:
    """Writes the dataset into an empty database; the benchmark user signs in with VIEWER_EMAIL."""
    started = time.perf_counter()
    now = utcnow()
    rng = random.Random(spec.seed)
    await ensure_indexes(db)  # before the inserts, as in production: index upkeep is part of a realistic load
    users = await _seed_users(db, spec, rng, now)
    projects = await _seed_projects(db, spec, rng, users, now)
    await _seed_tasks(db, spec, rng, projects, now)
    return Dataset(
        viewer_email=VIEWER_EMAIL,
        viewer_password=VIEWER_PASSWORD,
        members_per_viewer_project=[len(project.members) for project in projects[: spec.viewer_projects]],
        seconds=time.perf_counter() - started,
    )


async def _seed_users(db: Database, spec: DatasetSpec, rng: random.Random, now: datetime) -> list[UserRecord]:
    # Everyone shares one hash: argon2 takes ~77 ms a hash here, and only the viewer ever signs in.
    password_hash = await Passwords().hash(VIEWER_PASSWORD)
    users = []
    with ProgressBar("users", spec.users) as bar:
        for index in range(spec.users):
            email, name = (
                (VIEWER_EMAIL, "Bench Viewer")
                if index == 0
                else (f"user{index:04d}@example.com", f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")
            )
            joined = now - timedelta(minutes=rng.randrange(2 * 365 * 24 * 60))
            users.append(
                await insert_user(db, email=email, name=name, password_hash=password_hash, role="USER", now=joined)
            )
            bar.advance()
    return users


async def _seed_projects(
    db: Database, spec: DatasetSpec, rng: random.Random, users: list[UserRecord], now: datetime
) -> list[ProjectRecord]:
    """The first `viewer_projects` projects include the benchmark user (users[0]) in a rotating role."""
    viewer, others = users[0], users[1:]
    projects = []
    with ProgressBar("projects", spec.projects) as bar:
        for index in range(spec.projects):
            viewer_role = ("OWNER", "EDITOR", "VIEWER")[index % 3] if index < spec.viewer_projects else None
            team = rng.sample(others, rng.randint(spec.min_members, spec.max_members))
            if viewer_role == "OWNER":
                team[0] = viewer
            elif viewer_role is not None:
                team[1] = viewer
            created = now - timedelta(minutes=rng.randrange(60, 365 * 24 * 60))
            project = await insert_project(
                db,
                name=f"{rng.choice(PROJECT_AREAS)} {rng.choice(PROJECT_INITIATIVES)}",
                description=f"Everything the team needs to ship in Q{rng.randint(1, 4)}.",
                owner_id=team[0].id,
                now=created,
            )
            for position, member in enumerate(team[1:], start=1):
                role = viewer_role if member.id == viewer.id else rng.choice(("EDITOR", "EDITOR", "VIEWER"))
                updated = await add_member(
                    db, project_id=project.id, user_id=member.id, role=role, now=created + timedelta(minutes=position)
                )
                if updated is None:
                    raise RuntimeError(f"could not add a member to project {project.id}")
                project = updated
            projects.append(project)
            bar.advance()
    return projects


def _task_values(rng: random.Random, project: ProjectRecord, now: datetime) -> dict[str, Any]:
    """The values TaskService.create passes to insert_task, for a task of some age in `project`."""
    age_minutes = max(int((now - project.created_at) / timedelta(minutes=1)), 1)
    created = project.created_at + timedelta(minutes=rng.randrange(age_minutes))
    updated = min(created + timedelta(minutes=rng.randrange(14 * 24 * 60)), now)
    status = rng.choices(("TODO", "IN_PROGRESS", "DONE"), weights=(4, 2, 4))[0]
    writers = [member.user_id for member in project.members if member.role != "VIEWER"]
    return {
        "project_id": project.id,
        "title": f"{rng.choice(TASK_VERBS)} {rng.choice(TASK_OBJECTS)} {rng.choice(TASK_CONTEXTS)}".strip(),
        "description": f"{rng.choice(TASK_REASONS)} {rng.choice(TASK_REASONS)}",
        "status": status,
        "priority": rng.choices(("LOW", "MEDIUM", "HIGH", "URGENT"), weights=(3, 4, 2, 1))[0],
        "due_at": None if rng.random() < 0.3 else created + timedelta(days=rng.randrange(1, 60)),
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
        "assignee_id": None if rng.random() < 0.15 else rng.choice(project.members).user_id,
        "created_by": rng.choice(writers),
        "created_at": created,
        "updated_at": updated,
        "completed_at": updated if status == "DONE" else None,
    }


def _task_document(values: dict[str, Any]) -> dict[str, Any]:
    """What insert_task writes for `values`: its id, first version and derived (sort and search) fields."""
    document = {"_id": ObjectId(), **values, "version": 1}
    document.update(tasks_db.derived_fields(document))
    return document


async def _seed_tasks(
    db: Database, spec: DatasetSpec, rng: random.Random, projects: list[ProjectRecord], now: datetime
) -> None:
    """`spec.tasks` tasks, dealt round-robin to the projects (400 each by default)."""
    with ProgressBar("tasks", spec.tasks) as bar:
        values = _task_values(rng, projects[0], now)
        first = await tasks_db.insert_task(db, values=values)
        written = await db.tasks.find_one({"_id": first.id})
        if written is None or written.keys() != _task_document(values).keys():
            raise RuntimeError("bench/dataset.py builds tasks unlike taskql.db.tasks.insert_task; update it")
        bar.advance()
        for start in range(1, spec.tasks, TASK_BATCH_SIZE):
            indexes = range(start, min(start + TASK_BATCH_SIZE, spec.tasks))
            await db.tasks.insert_many(
                [_task_document(_task_values(rng, projects[index % len(projects)], now)) for index in indexes]
            )
            bar.advance(len(indexes))
