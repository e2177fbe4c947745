"""Access logs: one line per request with what an operator needs, and never a secret."""

from __future__ import annotations

import json
import logging

import pytest

from taskql import logs
from taskql.logs import FIELDS, JsonFormatter, TextFormatter, configure_logging
from taskql.schema.relay import decode_id
from taskql.settings import Settings
from tests.conftest import PASSWORD, GraphQLClient, sign_up

LOGIN = "mutation SignIn($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "taskql.access"]


async def test_each_request_is_one_json_line_with_its_operation_user_and_outcome(
    anonymous: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = await sign_up(anonymous, "Logged")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="taskql.access")

    await user.http.post(
        "/graphql",
        json={"query": "query Me { viewer { id } }", "operationName": "Me"},
        headers={"authorization": f"Bearer {user.token}", "x-request-id": "req-42"},
    )
    await anonymous.http.post("/graphql", json={"query": "{ nonexistent }"})

    me, invalid = access_lines(caplog)
    assert me["request_id"] == "req-42"
    assert (me["method"], me["path"], me["status"]) == ("POST", "/graphql", 200)
    assert me["user_id"] == str(decode_id(user.user["id"], "User"))
    assert me["operations"] == [{"name": "Me", "type": "query"}]
    assert me["error_codes"] == []
    assert me["duration_ms"] >= 0
    assert invalid["error_codes"] == ["GRAPHQL_VALIDATION_FAILED"]
    assert invalid["user_id"] is None


async def test_no_password_or_token_is_ever_logged(anonymous: GraphQLClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = await sign_up(anonymous, "Secretive")
    await anonymous.post(LOGIN, {"e": user.user["email"], "p": PASSWORD})
    await anonymous.post(LOGIN, {"e": user.user["email"], "p": "a wrong password"})
    await user.post("{ viewer { id } }")
    await anonymous.http.post(
        "/graphql", json={"query": "{ viewer { id } }"}, headers={"authorization": "Bearer forged"}
    )

    rendered = "\n".join(JsonFormatter().format(r) + TextFormatter().format(r) for r in caplog.records)
    assert access_lines(caplog)  # something was logged
    for secret in (PASSWORD, "a wrong password", user.token, user.refresh_token, "Bearer forged"):
        assert secret and secret not in rendered


def test_text_lines_carry_the_fields() -> None:
    record = logging.LogRecord("taskql.access", logging.INFO, __file__, 1, "POST /graphql 200", None, None)
    setattr(record, FIELDS, {"request_id": "r1", "status": 200})
    assert TextFormatter().format(record).endswith("POST /graphql 200 request_id=r1 status=200")


def test_records_are_written_by_the_log_thread_with_their_exception(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(settings.model_copy(update={"log_format": "json"}))
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logging.getLogger("taskql.test").exception("failed %s", "here")
        assert logs._listener is not None
        logs._listener.stop()  # writes what is queued, then ends the thread
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)

    [line] = [json.loads(line) for line in capfd.readouterr().err.splitlines() if "taskql.test" in line]
    assert line["message"] == "failed here" and line["level"] == "ERROR"
    assert "ZeroDivisionError" in line["exception"]
