"""`taskql seed` writes demo data through the API, with a progress bar."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from pymongo import MongoClient

from tests.conftest import TEST_SECRET


def test_seed_writes_users_projects_and_tasks_through_the_api(mongodb_uri: str, tmp_path: Path) -> None:
    database = f"test_{uuid.uuid4().hex[:12]}"
    result = subprocess.run(
        [sys.executable, "-m", "taskql", "seed", "--users", "3", "--projects", "2", "--tasks", "4"],
        env={
            **os.environ,
            "MONGODB_URI": mongodb_uri,
            "MONGODB_DATABASE": database,
            "JWT_SECRET": TEST_SECRET,
            "DATA_DIR": str(tmp_path),
            "TASKQL_ENV": "test",
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # One progress bar per step, redrawn in place as the work advances, each ending full.
    for label, total in (("users", 3), ("projects", 2), ("tasks", 8)):
        steps = [token for token in result.stderr.split() if token.endswith(f"/{total}")]
        assert steps == [f"{n}/{total}" for n in range(total + 1)]
        assert f"{label:<9}[{'#' * 30}] {total:>7,}/{total:,}  " in result.stderr
    assert "3 users, password" in result.stdout

    with MongoClient(mongodb_uri) as client:
        db = client[database]
        assert db.users.count_documents({}) == 3
        assert db.projects.count_documents({}) == 2
        assert db.tasks.count_documents({}) == 8
        # Written like any other write: activity trail and search terms included.
        assert db.activity.count_documents({"kind": "TASK_CREATED"}) == 8
        assert all(task["search_terms"] for task in db.tasks.find())
        client.drop_database(database)
