"""Accounts and sessions end to end: register, login, tokens, rotation, logout, profile, settings."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from bson import ObjectId
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from taskql.auth.passwords import Passwords
from taskql.auth.tokens import TokenIssuer
from taskql.clock import utcnow
from taskql.errors import Unauthenticated
from taskql.settings import Settings
from tests.conftest import CREATE_PROJECT, PASSWORD, REGISTER, GraphQLClient, Instances, sign_up

LOGIN = """
mutation Login($input: LoginInput!) {
  login(input: $input) {
    accessToken refreshToken expiresIn
    user { id email name }
    userErrors { code field message }
  }
}
"""
REFRESH = """
mutation Refresh($input: RefreshTokenInput!) {
  refreshToken(input: $input) {
    accessToken refreshToken expiresIn
    user { id email }
    userErrors { code field message }
  }
}
"""
LOGOUT = """
mutation Logout($input: LogoutInput!) {
  logout(input: $input) { success userErrors { code field message } }
}
"""
LOGOUT_ALL = """
mutation LogoutAll($input: LogoutAllInput) {
  logoutAll(input: $input) { success userErrors { code field message } }
}
"""
CHANGE_PASSWORD = """
mutation ChangePassword($input: ChangePasswordInput!) {
  changePassword(input: $input) { user { id email } userErrors { code field message } }
}
"""
UPDATE_PROFILE = """
mutation UpdateProfile($input: UpdateProfileInput!) {
  updateProfile(input: $input) { user { id email name } userErrors { code field message } }
}
"""
VIEWER = "query { viewer { id email name } }"

NEW_PASSWORD = "a brand new passphrase"
SETTINGS_ENV = ("TASKQL_ENV", "JWT_SECRET", "DATA_DIR", "MONGODB_URI")


async def log_in(anonymous: GraphQLClient, email: str, password: str = PASSWORD) -> GraphQLClient:
    """A new, independent session (refresh-token family) for an existing account."""
    payload = (await anonymous.execute(LOGIN, {"input": {"email": email, "password": password}}))["login"]
    assert payload["userErrors"] == []
    client = anonymous.as_user(payload["accessToken"])
    client.user = payload["user"]
    client.refresh_token = payload["refreshToken"]
    return client


async def refresh(anonymous: GraphQLClient, refresh_token: str) -> dict[str, Any]:
    return (await anonymous.execute(REFRESH, {"input": {"refreshToken": refresh_token}}))["refreshToken"]


async def viewer_error_code(anonymous: GraphQLClient, token: str) -> str | None:
    """The top-level error code of `viewer` sent with `token`, None when it succeeds as a user."""
    body = await anonymous.post(VIEWER, token=token)
    if "errors" in body:
        assert body["data"] is None or body["data"]["viewer"] is None
        return body["errors"][0]["extensions"]["code"]
    assert body["data"]["viewer"] is not None
    return None


async def users_collection_find(settings: Settings, query: dict[str, Any]) -> list[dict[str, Any]]:
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    try:
        return await mongo[settings.mongodb_database].users.find(query).to_list()
    finally:
        await mongo.close()


async def set_stored_hash(settings: Settings, email: str, password_hash: str) -> None:
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    try:
        result = await mongo[settings.mongodb_database].users.update_one(
            {"email": email}, {"$set": {"password_hash": password_hash}}
        )
        assert result.modified_count == 1
    finally:
        await mongo.close()


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


# --- register ---------------------------------------------------------------------------------------


async def test_register_normalises_the_email(anonymous: GraphQLClient, settings: Settings) -> None:
    data = await anonymous.execute(
        REGISTER, {"input": {"email": "  Alice.Smith@Example.COM ", "name": "  Alice  ", "password": PASSWORD}}
    )

    payload = data["register"]
    assert payload["userErrors"] == []
    assert payload["user"]["email"] == "alice.smith@example.com"
    assert payload["user"]["name"] == "Alice"
    assert payload["user"]["role"] == "USER"
    assert payload["expiresIn"] == 900
    assert payload["accessToken"] and payload["refreshToken"]
    stored = await users_collection_find(settings, {})
    assert [doc["email"] for doc in stored] == ["alice.smith@example.com"]
    session = await log_in(anonymous, "ALICE.SMITH@example.com ")
    assert session.user["id"] == payload["user"]["id"]


async def test_register_with_a_taken_email_in_another_case_is_a_conflict(
    anonymous: GraphQLClient, settings: Settings
) -> None:
    first = await sign_up(anonymous, "Taken")

    data = await anonymous.execute(
        REGISTER,
        {"input": {"email": f" {first.user['email'].upper()} ", "name": "Impostor", "password": "other password"}},
    )

    payload = data["register"]
    assert payload["accessToken"] is None and payload["refreshToken"] is None and payload["user"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("CONFLICT", ["input", "email"])]
    assert len(await users_collection_find(settings, {})) == 1
    login = (await anonymous.execute(LOGIN, {"input": {"email": first.user["email"], "password": "other password"}}))[
        "login"
    ]
    assert login["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_register_reports_every_invalid_field_and_writes_nothing(
    anonymous: GraphQLClient, settings: Settings
) -> None:
    data = await anonymous.execute(REGISTER, {"input": {"email": "not-an-email", "name": "   ", "password": "short"}})

    payload = data["register"]
    assert payload["accessToken"] is None and payload["user"] is None
    assert {e["code"] for e in payload["userErrors"]} == {"VALIDATION"}
    assert sorted(tuple(e["field"]) for e in payload["userErrors"]) == [
        ("input", "email"),
        ("input", "name"),
        ("input", "password"),
    ]
    assert all(e["message"] for e in payload["userErrors"])
    assert await users_collection_find(settings, {}) == []
    login = (await anonymous.execute(LOGIN, {"input": {"email": "not-an-email", "password": "short"}}))["login"]
    assert login["accessToken"] is None
    assert login["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_register_with_one_invalid_field_writes_nothing(anonymous: GraphQLClient, settings: Settings) -> None:
    data = await anonymous.execute(
        REGISTER, {"input": {"email": "valid@example.com", "name": "Valid", "password": "1234567"}}
    )

    assert [(e["code"], e["field"]) for e in data["register"]["userErrors"]] == [("VALIDATION", ["input", "password"])]
    assert await users_collection_find(settings, {"email": "valid@example.com"}) == []
    login = (await anonymous.execute(LOGIN, {"input": {"email": "valid@example.com", "password": "1234567"}}))["login"]
    assert login["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_password_is_stored_as_an_argon2id_hash(anonymous: GraphQLClient, settings: Settings) -> None:
    client = await sign_up(anonymous, "Hashed")

    [doc] = await users_collection_find(settings, {"email": client.user["email"]})

    stored = doc["password_hash"]
    assert stored != PASSWORD
    assert PASSWORD not in stored
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, PASSWORD)
    assert not PasswordHasher().check_needs_rehash(stored)


# --- login ------------------------------------------------------------------------------------------


async def test_login_returns_a_working_session(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    data = await anonymous.execute(LOGIN, {"input": {"email": owner_client.user["email"], "password": PASSWORD}})

    payload = data["login"]
    assert payload["userErrors"] == []
    assert payload["user"]["id"] == owner_client.user["id"]
    assert payload["expiresIn"] == 900
    assert payload["refreshToken"] != owner_client.refresh_token
    viewer = await anonymous.as_user(payload["accessToken"]).execute(VIEWER)
    assert viewer["viewer"]["id"] == owner_client.user["id"]


async def test_wrong_password_and_unknown_email_fail_identically(
    anonymous: GraphQLClient, owner_client: GraphQLClient
) -> None:
    wrong_password = await anonymous.execute(
        LOGIN, {"input": {"email": owner_client.user["email"], "password": "not the password"}}
    )
    unknown_email = await anonymous.execute(LOGIN, {"input": {"email": "nobody@example.com", "password": PASSWORD}})

    for payload in (wrong_password["login"], unknown_email["login"]):
        assert payload["accessToken"] is None and payload["refreshToken"] is None and payload["user"] is None
        assert len(payload["userErrors"]) == 1
        assert payload["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert wrong_password["login"]["userErrors"] == unknown_email["login"]["userErrors"]


async def test_login_rehashes_a_password_hashed_with_outdated_parameters(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert PasswordHasher().check_needs_rehash(weak)
    await set_stored_hash(settings, owner_client.user["email"], weak)

    await log_in(anonymous, owner_client.user["email"])

    [doc] = await users_collection_find(settings, {"email": owner_client.user["email"]})
    new = doc["password_hash"]
    assert new != weak
    assert new.startswith("$argon2id$")
    assert PasswordHasher().check_needs_rehash(new) is False
    assert PasswordHasher().verify(new, PASSWORD)
    await log_in(anonymous, owner_client.user["email"])  # the new hash still accepts the password


async def test_verify_without_a_stored_hash_fails() -> None:
    passwords = Passwords()

    unknown = await passwords.verify(None, PASSWORD)
    dummy_password = await passwords.verify(None, "taskql-dummy-password")

    assert (unknown.ok, unknown.new_hash) == (False, None)
    assert (dummy_password.ok, dummy_password.new_hash) == (False, None)
    real = await passwords.verify(await passwords.hash(PASSWORD), PASSWORD)
    assert real.ok is True


# --- access tokens ----------------------------------------------------------------------------------


async def test_access_token_is_a_short_lived_hs256_jwt(owner_client: GraphQLClient, settings: Settings) -> None:
    header = jwt.get_unverified_header(owner_client.token)
    claims = decode_access_token(settings, owner_client.token)

    assert header["alg"] == "HS256"
    assert {"sub", "iat", "exp", "iss", "aud", "jti", "typ", "sid"} <= claims.keys()
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 60
    assert (claims["iss"], claims["aud"], claims["typ"]) == (settings.jwt_issuer, settings.jwt_audience, "access")
    [doc] = await users_collection_find(settings, {"email": owner_client.user["email"]})
    assert claims["sub"] == str(doc["_id"])


async def test_a_token_whose_check_was_kept_is_refused_once_it_expires() -> None:
    # The process keeps the tokens it has verified, so as not to check a signature on every request;
    # expiry is still judged on every one.
    issuer = TokenIssuer(secret="s" * 40, issuer="taskql", audience="taskql", access_ttl=timedelta(seconds=2))
    user, family = ObjectId(), ObjectId()
    token = issuer.issue_access_token(user_id=user, session_family_id=family, now=datetime.now(UTC))
    forged = jwt.encode({**jwt.decode(token, options={"verify_signature": False}), "sub": str(ObjectId())}, "x" * 40)

    claims = issuer.decode_access_token(token)
    assert (claims.user_id, claims.session_family_id) == (user, family)
    assert issuer.decode_access_token(token) == claims  # from what was kept
    for _ in range(2):  # a refused token is checked again each time, never kept
        with pytest.raises(Unauthenticated, match="invalid"):
            issuer.decode_access_token(forged)
    await asyncio.sleep((claims.expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        issuer.decode_access_token(token)


async def test_a_re_signed_copy_of_a_valid_token_is_accepted(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    # Control for the forged-token tests below: the forging itself yields tokens the server accepts.
    claims = decode_access_token(settings, owner_client.token)

    token = jwt.encode({**claims, "jti": secrets.token_hex(16)}, settings.jwt_secret, algorithm="HS256")

    assert await viewer_error_code(anonymous, token) is None


async def test_token_signed_with_another_secret_is_rejected(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    claims = decode_access_token(settings, owner_client.token)

    token = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")

    assert await viewer_error_code(anonymous, token) == "UNAUTHENTICATED"


async def test_unsigned_token_is_rejected(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    claims = decode_access_token(settings, owner_client.token)

    token = jwt.encode(claims, None, algorithm="none")

    assert await viewer_error_code(anonymous, token) == "UNAUTHENTICATED"


async def test_token_of_another_type_is_rejected(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    claims = decode_access_token(settings, owner_client.token)

    token = jwt.encode({**claims, "typ": "refresh"}, settings.jwt_secret, algorithm="HS256")

    assert await viewer_error_code(anonymous, token) == "UNAUTHENTICATED"


async def test_expired_token_is_rejected(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    claims = decode_access_token(settings, owner_client.token)
    now = int(time.time())

    token = jwt.encode({**claims, "iat": now - 1000, "exp": now - 100}, settings.jwt_secret, algorithm="HS256")

    assert await viewer_error_code(anonymous, token) == "UNAUTHENTICATED"


async def test_garbage_token_is_rejected(anonymous: GraphQLClient) -> None:
    assert await viewer_error_code(anonymous, "not.a.jwt") == "UNAUTHENTICATED"
    assert await viewer_error_code(anonymous, "garbage") == "UNAUTHENTICATED"


async def test_non_bearer_authorization_is_rejected(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    response = await anonymous.http.post(
        "/graphql", json={"query": VIEWER}, headers={"authorization": f"Basic {owner_client.token}"}
    )

    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_viewer_without_a_token_is_null(anonymous: GraphQLClient) -> None:
    body = await anonymous.post(VIEWER)

    assert "errors" not in body
    assert body["data"] == {"viewer": None}


async def test_viewer_with_a_valid_token_is_the_user(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(VIEWER)

    assert data["viewer"] == {"id": owner_client.user["id"], "email": owner_client.user["email"], "name": "Owner"}


async def test_mutation_needing_auth_without_a_token_is_unauthenticated(
    anonymous: GraphQLClient, settings: Settings
) -> None:
    body = await anonymous.post(CREATE_PROJECT, {"input": {"name": "Nope"}})

    assert body["data"] is None  # the payload is non-null: its error nulls the whole answer, as the spec says
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert body["errors"][0]["path"] == ["createProject"]
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    try:
        assert await mongo[settings.mongodb_database].projects.count_documents({}) == 0
    finally:
        await mongo.close()


# --- refresh tokens ---------------------------------------------------------------------------------


async def test_refresh_token_rotates(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    payload = await refresh(anonymous, owner_client.refresh_token)

    assert payload["userErrors"] == []
    assert payload["user"]["id"] == owner_client.user["id"]
    assert payload["expiresIn"] == 900
    assert payload["refreshToken"] and payload["refreshToken"] != owner_client.refresh_token
    assert payload["accessToken"] and payload["accessToken"] != owner_client.token
    assert await viewer_error_code(anonymous, payload["accessToken"]) is None
    rotated_again = await refresh(anonymous, payload["refreshToken"])
    assert rotated_again["userErrors"] == []


async def strict(instances: Instances, settings: Settings) -> GraphQLClient:
    """An instance with REFRESH_REUSE_GRACE_SECONDS=0: a rotated refresh token never works again."""
    [client] = await instances.start(settings.model_copy(update={"refresh_reuse_grace_seconds": 0}), 1)
    return client


async def test_reused_refresh_token_revokes_its_whole_family(
    instances: Instances, settings: Settings, owner_client: GraphQLClient
) -> None:
    anonymous = await strict(instances, settings)
    other_session = await log_in(anonymous, owner_client.user["email"])
    first = await refresh(anonymous, owner_client.refresh_token)
    second = await refresh(anonymous, first["refreshToken"])
    assert first["userErrors"] == [] and second["userErrors"] == []

    reused = await refresh(anonymous, owner_client.refresh_token)

    assert reused["accessToken"] is None and reused["refreshToken"] is None
    assert [(e["code"], e["field"]) for e in reused["userErrors"]] == [
        ("INVALID_CREDENTIALS", ["input", "refreshToken"])
    ]
    newest = await refresh(anonymous, second["refreshToken"])
    assert newest["accessToken"] is None
    assert newest["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    for token in (owner_client.token, first["accessToken"], second["accessToken"]):
        assert await viewer_error_code(anonymous, token) == "UNAUTHENTICATED"
    assert await viewer_error_code(anonymous, other_session.token) is None
    assert (await refresh(anonymous, other_session.refresh_token))["userErrors"] == []


async def test_concurrent_refreshes_with_one_token_exactly_one_wins_without_a_grace_window(
    instances: Instances, settings: Settings, owner_client: GraphQLClient
) -> None:
    anonymous = await strict(instances, settings)
    results = await asyncio.gather(
        refresh(anonymous, owner_client.refresh_token), refresh(anonymous, owner_client.refresh_token)
    )

    winners = [r for r in results if r["accessToken"]]
    losers = [r for r in results if not r["accessToken"]]
    assert len(winners) == 1 and len(losers) == 1
    assert winners[0]["userErrors"] == []
    assert losers[0]["refreshToken"] is None
    assert losers[0]["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_two_tabs_refreshing_together_get_the_same_next_token_and_reuse_later_ends_the_login(
    anonymous: GraphQLClient, owner_client: GraphQLClient, settings: Settings
) -> None:
    # Two tabs of one app share one refresh token and refresh it at once: the second used to find it
    # used, and that ended the login (both tabs signed out).
    tabs = await asyncio.gather(*(refresh(anonymous, owner_client.refresh_token) for _ in range(2)))
    late_tab = await refresh(anonymous, owner_client.refresh_token)  # still within the window

    assert [tab["userErrors"] for tab in (*tabs, late_tab)] == [[], [], []]
    assert tabs[0]["refreshToken"] == tabs[1]["refreshToken"] == late_tab["refreshToken"]
    for tab in (*tabs, late_tab):
        assert await viewer_error_code(anonymous, tab["accessToken"]) is None
    following = await refresh(anonymous, tabs[0]["refreshToken"])  # the chain goes on from the shared token
    assert following["userErrors"] == []

    # Past the window (REFRESH_REUSE_GRACE_SECONDS, 10 s), the first token coming back is a stolen one.
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    try:
        sessions = mongo[settings.mongodb_database].sessions
        await sessions.update_many({"used_at": {"$ne": None}}, {"$set": {"used_at": utcnow() - timedelta(seconds=11)}})
    finally:
        await mongo.close()
    stolen = await refresh(anonymous, owner_client.refresh_token)

    assert stolen["accessToken"] is None and stolen["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert await viewer_error_code(anonymous, following["accessToken"]) == "UNAUTHENTICATED"  # the login ended


async def test_unknown_refresh_token_is_invalid(anonymous: GraphQLClient) -> None:
    payload = await refresh(anonymous, "made-up-token")

    assert payload["accessToken"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID_CREDENTIALS", ["input", "refreshToken"])
    ]


# --- logout -----------------------------------------------------------------------------------------


async def test_logout_ends_only_that_session(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    other_session = await log_in(anonymous, owner_client.user["email"])

    data = await owner_client.execute(LOGOUT, {"input": {"refreshToken": owner_client.refresh_token}})

    assert data["logout"] == {"success": True, "userErrors": []}
    assert await viewer_error_code(anonymous, owner_client.token) == "UNAUTHENTICATED"
    assert (await refresh(anonymous, owner_client.refresh_token))["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert await viewer_error_code(anonymous, other_session.token) is None
    assert (await refresh(anonymous, other_session.refresh_token))["userErrors"] == []


async def test_logout_twice_with_the_same_token_fails(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    await anonymous.execute(LOGOUT, {"input": {"refreshToken": owner_client.refresh_token}})

    data = await anonymous.execute(LOGOUT, {"input": {"refreshToken": owner_client.refresh_token}})

    assert data["logout"]["success"] is False
    assert data["logout"]["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_logout_all_ends_every_session_of_the_user(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    other_session = await log_in(anonymous, owner_client.user["email"])
    someone_else = await sign_up(anonymous, "Bystander")

    data = await owner_client.execute(LOGOUT_ALL)

    assert data["logoutAll"] == {"success": True, "userErrors": []}
    for session in (owner_client, other_session):
        assert await viewer_error_code(anonymous, session.token) == "UNAUTHENTICATED"
        assert (await refresh(anonymous, session.refresh_token))["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert await viewer_error_code(anonymous, someone_else.token) is None


async def test_logout_all_can_keep_the_current_session(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    other_session = await log_in(anonymous, owner_client.user["email"])

    data = await owner_client.execute(LOGOUT_ALL, {"input": {"keepCurrentSession": True}})

    assert data["logoutAll"] == {"success": True, "userErrors": []}
    assert await viewer_error_code(anonymous, owner_client.token) is None
    assert await viewer_error_code(anonymous, other_session.token) == "UNAUTHENTICATED"
    assert (await refresh(anonymous, other_session.refresh_token))["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert (await refresh(anonymous, owner_client.refresh_token))["userErrors"] == []


async def test_logout_all_without_a_token_is_unauthenticated(anonymous: GraphQLClient) -> None:
    body = await anonymous.post(LOGOUT_ALL)

    assert body["data"] is None  # a non-null payload's error nulls the answer
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# --- password and profile ---------------------------------------------------------------------------


async def test_change_password_with_a_wrong_current_password_fails(
    anonymous: GraphQLClient, owner_client: GraphQLClient
) -> None:
    data = await owner_client.execute(
        CHANGE_PASSWORD, {"input": {"currentPassword": "not the password", "newPassword": NEW_PASSWORD}}
    )

    payload = data["changePassword"]
    assert payload["user"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID_CREDENTIALS", ["input", "currentPassword"])
    ]
    await log_in(anonymous, owner_client.user["email"], PASSWORD)
    login = await anonymous.execute(LOGIN, {"input": {"email": owner_client.user["email"], "password": NEW_PASSWORD}})
    assert login["login"]["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_change_password_to_a_short_one_is_a_validation_error(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(CHANGE_PASSWORD, {"input": {"currentPassword": PASSWORD, "newPassword": "short"}})

    assert [(e["code"], e["field"]) for e in data["changePassword"]["userErrors"]] == [
        ("VALIDATION", ["input", "newPassword"])
    ]


async def test_change_password_replaces_it_and_ends_other_sessions(
    anonymous: GraphQLClient, owner_client: GraphQLClient
) -> None:
    other_session = await log_in(anonymous, owner_client.user["email"])

    data = await owner_client.execute(
        CHANGE_PASSWORD, {"input": {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}}
    )

    assert data["changePassword"]["userErrors"] == []
    assert data["changePassword"]["user"]["id"] == owner_client.user["id"]
    await log_in(anonymous, owner_client.user["email"], NEW_PASSWORD)
    old = (await anonymous.execute(LOGIN, {"input": {"email": owner_client.user["email"], "password": PASSWORD}}))[
        "login"
    ]
    assert old["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert await viewer_error_code(anonymous, other_session.token) == "UNAUTHENTICATED"
    assert (await refresh(anonymous, other_session.refresh_token))["userErrors"][0]["code"] == "INVALID_CREDENTIALS"
    assert await viewer_error_code(anonymous, owner_client.token) is None
    assert (await refresh(anonymous, owner_client.refresh_token))["userErrors"] == []


async def test_update_profile_changes_the_name(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(UPDATE_PROFILE, {"input": {"name": "  Renamed  "}})

    assert data["updateProfile"]["userErrors"] == []
    assert data["updateProfile"]["user"]["name"] == "Renamed"
    viewer = (await owner_client.execute(VIEWER))["viewer"]
    assert viewer == {"id": owner_client.user["id"], "email": owner_client.user["email"], "name": "Renamed"}


async def test_update_profile_changes_and_normalises_the_email(
    anonymous: GraphQLClient, owner_client: GraphQLClient
) -> None:
    data = await owner_client.execute(UPDATE_PROFILE, {"input": {"email": " New.Address@Example.COM "}})

    assert data["updateProfile"]["userErrors"] == []
    assert data["updateProfile"]["user"]["email"] == "new.address@example.com"
    assert (await owner_client.execute(VIEWER))["viewer"]["email"] == "new.address@example.com"
    session = await log_in(anonymous, "new.address@example.com")
    assert session.user["id"] == owner_client.user["id"]
    old = (await anonymous.execute(LOGIN, {"input": {"email": owner_client.user["email"], "password": PASSWORD}}))[
        "login"
    ]
    assert old["userErrors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_update_profile_to_a_taken_email_is_a_conflict(
    anonymous: GraphQLClient, owner_client: GraphQLClient
) -> None:
    other = await sign_up(anonymous, "Other")

    data = await owner_client.execute(UPDATE_PROFILE, {"input": {"email": other.user["email"].upper()}})

    assert data["updateProfile"]["user"] is None
    assert [(e["code"], e["field"]) for e in data["updateProfile"]["userErrors"]] == [("CONFLICT", ["input", "email"])]
    assert (await owner_client.execute(VIEWER))["viewer"]["email"] == owner_client.user["email"]
    assert (await other.execute(VIEWER))["viewer"]["email"] == other.user["email"]


async def test_update_profile_with_an_invalid_name_is_a_validation_error(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(UPDATE_PROFILE, {"input": {"name": "   ", "email": "broken"}})

    assert data["updateProfile"]["user"] is None
    errors = data["updateProfile"]["userErrors"]
    assert {e["code"] for e in errors} == {"VALIDATION"}
    assert sorted(tuple(e["field"]) for e in errors) == [("input", "email"), ("input", "name")]
    assert (await owner_client.execute(VIEWER))["viewer"]["name"] == "Owner"
    long_name = await owner_client.execute(UPDATE_PROFILE, {"input": {"name": "n" * 101}})
    assert [(e["code"], e["field"]) for e in long_name["updateProfile"]["userErrors"]] == [
        ("VALIDATION", ["input", "name"])
    ]


# --- settings ---------------------------------------------------------------------------------------


def test_production_refuses_a_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)

    with pytest.raises(ValidationError):
        Settings(taskql_env="production", jwt_secret="changeme", _env_file=None)
    with pytest.raises(ValidationError):
        Settings(taskql_env="production", jwt_secret="", _env_file=None)
    with pytest.raises(ValidationError):
        Settings(taskql_env="production", jwt_secret=secrets.token_hex(15) + "a", _env_file=None)  # 31 chars


def test_production_accepts_a_long_random_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)
    secret = secrets.token_urlsafe(36)
    assert len(secret) == 48

    settings = Settings(taskql_env="production", jwt_secret=secret, _env_file=None)

    assert settings.is_production
    assert settings.resolved_jwt_secret() == secret


def test_development_generates_and_keeps_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_settings_env(monkeypatch)
    data_dir = tmp_path / "data"

    first = Settings(taskql_env="development", jwt_secret="", data_dir=data_dir, _env_file=None).resolved_jwt_secret()
    second = Settings(taskql_env="development", jwt_secret="", data_dir=data_dir, _env_file=None).resolved_jwt_secret()

    assert len(first) >= 32
    assert first == second
    path = data_dir / "jwt-secret"
    assert path.read_text().strip() == first
    assert os.stat(path).st_mode & 0o777 == 0o600
    other_dir = Settings(taskql_env="test", jwt_secret="", data_dir=tmp_path / "other", _env_file=None)
    assert other_dir.resolved_jwt_secret() != first


async def test_emails_are_nfkc_normalised_and_control_characters_refused(anonymous: GraphQLClient) -> None:
    full_width = "\uff41\uff44\uff41@example.com"  # ａｄａ@example.com
    registered = (
        await anonymous.execute(REGISTER, {"input": {"email": full_width, "name": "Ada", "password": PASSWORD}})
    )["register"]
    logins = [
        (await anonymous.execute(LOGIN, {"input": {"email": email, "password": PASSWORD}}))["login"]
        for email in ("ADA@example.com", full_width)
    ]
    refused = [
        (await anonymous.execute(REGISTER, {"input": {"email": email, "name": "Eve", "password": PASSWORD}}))[
            "register"
        ]["userErrors"]
        for email in ("a\u200bda@example.com", "ada\u0007@example.com", "a\u202eda@example.com")
    ]

    assert registered["user"]["email"] == "ada@example.com"
    assert [login["user"]["email"] for login in logins] == ["ada@example.com"] * 2  # the same account
    assert (
        refused
        == [[{"code": "VALIDATION", "field": ["input", "email"], "message": "must be a valid email address"}]] * 3
    )


async def test_names_refuse_control_characters_but_keep_tabs_and_joiners(owner_client: GraphQLClient) -> None:
    update = "mutation($n: String) { updateProfile(input: {name: $n}) { user { name } userErrors { code field } } }"
    bell = (await owner_client.execute(update, {"n": "Ada\u0007"}))["updateProfile"]
    tab = (await owner_client.execute(update, {"n": "Ada\tLovelace"}))["updateProfile"]
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a zero-width non-joiner, as Persian writes it
    joined = (await owner_client.execute(update, {"n": persian}))["updateProfile"]

    assert bell["userErrors"] == [{"code": "VALIDATION", "field": ["input", "name"]}]
    assert tab == {"user": {"name": "Ada\tLovelace"}, "userErrors": []}
    assert joined == {"user": {"name": persian}, "userErrors": []}
