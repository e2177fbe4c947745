"""The laptop default: no MONGODB_URI starts an embedded SecantusDB process whose data survives restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import PASSWORD, GraphQLClient, sign_up

LOGIN = """
mutation($input: LoginInput!) { login(input: $input) { user { email } userErrors { code } } }
"""


async def _run(settings: Settings, scenario):  # type: ignore[no-untyped-def]
    app = build_app(settings)
    async with LifespanManager(app, startup_timeout=90) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as http:
            return await scenario(GraphQLClient(http))


async def test_embedded_database_keeps_data_across_restarts(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, taskql_env="development", mongodb_uri=None, data_dir=tmp_path)

    registered = await _run(settings, lambda client: sign_up(client, "Laptop"))
    email = registered.user["email"]
    again = await _run(
        settings, lambda client: client.execute(LOGIN, {"input": {"email": email, "password": PASSWORD}})
    )

    assert again["login"] == {"user": {"email": email}, "userErrors": []}
    assert (tmp_path / "db").is_dir()
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
