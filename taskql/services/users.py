"""Accounts and sessions: registration, login, token rotation, logout, profile, password."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.auth.permissions import Viewer
from taskql.auth.revocations import SESSION_ENDED
from taskql.auth.tokens import AccessClaims, hash_refresh_token, new_refresh_token
from taskql.clock import utcnow
from taskql.db import sessions as sessions_db
from taskql.db import users as users_db
from taskql.db.outbox import OutboxEvent
from taskql.db.projects import share_a_project
from taskql.db.users import UserRecord
from taskql.errors import InvalidCredentials, NotFound, Unauthenticated
from taskql.loaders.request import Loaders
from taskql.services import outbox
from taskql.services.common import Deps, Runtime
from taskql.services.follow_ups import email_request
from taskql.services.login_throttle import LoginThrottle
from taskql.services.validation import Checker, canonical_email

NAME_MAX_LENGTH = 100
BAD_LOGIN = "Wrong email or password."
BAD_REFRESH = "The refresh token is invalid, expired or already used; sign in again."
USER_NOT_FOUND = "User not found."


@dataclass(frozen=True)
class AuthResult:
    user: UserRecord
    access_token: str
    refresh_token: str
    expires_in: int  # seconds until the access token expires


def read_access_token(runtime: Runtime, authorization: str | None) -> AccessClaims | None:
    """The claims of a request's `Authorization: Bearer` token, its signature and expiry checked;
    None when absent. Whether its login is still going is `confirm_session`'s question."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Use `Authorization: Bearer <access token>`.")
    return runtime.tokens.decode_access_token(token.strip())


async def confirm_session(runtime: Runtime, loaders: Loaders, claims: AccessClaims) -> Viewer:
    """The viewer of a valid token whose login has not ended and whose user still exists."""
    # A logout (or logoutAll) revokes the login's family: its access tokens stop working at once,
    # on every instance (auth/revocations.py).
    user, active = await asyncio.gather(
        loaders.users.load(claims.user_id),
        runtime.revocations.is_active(family_id=claims.session_family_id, user_id=claims.user_id, now=utcnow()),
    )
    if user is None or not active:
        raise Unauthenticated(SESSION_ENDED)
    return Viewer(user=user, session_family_id=claims.session_family_id, access_expires_at=claims.expires_at)


async def authenticate(runtime: Runtime, loaders: Loaders, authorization: str | None) -> Viewer | None:
    """The viewer of a request from its `Authorization: Bearer` value; None when absent."""
    claims = read_access_token(runtime, authorization)
    return None if claims is None else await confirm_session(runtime, loaders, claims)


class AccountService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._runtime = deps.runtime
        self._db = deps.db

    async def _start_session(
        self, user: UserRecord, *, family_id: ObjectId | None = None, refresh_token: str | None = None
    ) -> AuthResult:
        """A new login (no family yet), or the next step of one: `refresh_token` is then the
        successor of the token it rotates."""
        now = utcnow()
        family_id = family_id or ObjectId()
        refresh_token = refresh_token or new_refresh_token()
        await sessions_db.save_session(
            self._db,
            family_id=family_id,
            user_id=user.id,
            token_hash=hash_refresh_token(refresh_token),
            now=now,
            expires_at=now + self._runtime.settings.refresh_token_ttl,
        )
        tokens = self._runtime.tokens
        return AuthResult(
            user=user,
            access_token=tokens.issue_access_token(user_id=user.id, session_family_id=family_id, now=now),
            refresh_token=refresh_token,
            expires_in=int(tokens.access_ttl.total_seconds()),
        )

    async def _stage_email(
        self, session: AsyncClientSession | None, template: str, user: UserRecord
    ) -> list[OutboxEvent]:
        """The account email a write sends, queued once the write is committed."""
        return await outbox.stage(self._db, session, [outbox.jobs_only(email_request(template, user_id=user.id))])

    async def register(self, *, email: str, name: str, password: str) -> AuthResult:
        # Failed registrations count too: "email already taken" would otherwise list the accounts.
        throttle = LoginThrottle(self._deps, "register", canonical_email(email))
        await throttle.reserve()
        check = Checker()
        email = check.email(("input", "email"), email)
        name = check.text(("input", "name"), name, min_length=1, max_length=NAME_MAX_LENGTH)
        check.password(("input", "password"), password)
        check.raise_if_any()
        password_hash = await self._runtime.passwords.hash(password)

        async def write(session: AsyncClientSession | None) -> tuple[UserRecord, list[OutboxEvent]]:
            user = await users_db.insert_user(
                self._db,
                email=email,
                name=name,
                password_hash=password_hash,
                role="USER",
                now=utcnow(),
                session=session,
            )
            return user, await self._stage_email(session, "welcome", user)

        user, events = await self._db.in_transaction(write)
        await self._runtime.outbox.publish(events)
        await throttle.succeeded()
        return await self._start_session(user)

    async def login(self, *, email: str, password: str) -> AuthResult:
        email = canonical_email(email)
        throttle = LoginThrottle(self._deps, "login", email)
        await throttle.reserve()  # a failure, unless it succeeds
        found = await users_db.find_credentials(self._db, email=email)
        # Unknown emails still pay for a hash check: timing must not reveal which accounts exist.
        verification = await self._runtime.passwords.verify(found.password_hash if found else None, password)
        if found is None or not verification.ok:
            raise InvalidCredentials(BAD_LOGIN)
        await throttle.succeeded()
        if verification.new_hash:
            await users_db.set_password_hash_if_unchanged(
                self._db, user_id=found.user.id, old_hash=found.password_hash, new_hash=verification.new_hash
            )
        return await self._start_session(found.user)

    async def _logins_ended(self, family_ids: list[ObjectId]) -> None:
        """After MongoDB recorded them ended: their tokens are refused from the next request, and
        their live subscriptions end, on every instance."""
        await self._runtime.revocations.revoke(family_ids)
        await self._runtime.ended_logins.announce(family_ids)

    async def refresh(self, *, refresh_token: str) -> AuthResult:
        """The next tokens of a login. Each refresh token works once; presented again within
        REFRESH_REUSE_GRACE_SECONDS of its use (two tabs refreshing together) it gives the same
        successor, later it ends the whole login (a rotated token that comes back was stolen)."""
        token_hash = hash_refresh_token(refresh_token)
        now = utcnow()
        session = await sessions_db.claim_session(self._db, token_hash=token_hash, now=now)
        if session is None:
            session = await sessions_db.find_session_by_hash(self._db, token_hash=token_hash)
            # Unknown, ended, expired, or (unused, yet not claimed) stored after the claim looked.
            if session is None or session.revoked_at is not None or session.expires_at <= now or not session.used_at:
                raise InvalidCredentials(BAD_REFRESH, field=("input", "refreshToken"))
            grace = self._runtime.settings.refresh_reuse_grace
            # (A concurrent refresh may have stamped its use after this one's `now`: still within.)
            if not grace or now - session.used_at >= grace:
                await sessions_db.revoke_family(self._db, family_id=session.family_id, now=now)
                await self._logins_ended([session.family_id])
                raise InvalidCredentials(BAD_REFRESH, field=("input", "refreshToken"))
        user = await self._deps.loaders.users.load(session.user_id)
        if user is None:
            raise InvalidCredentials(BAD_REFRESH, field=("input", "refreshToken"))
        successor = self._runtime.tokens.successor_refresh_token(refresh_token)
        return await self._start_session(user, family_id=session.family_id, refresh_token=successor)

    async def logout(self, *, refresh_token: str) -> None:
        """Ends the login the refresh token belongs to (its access tokens stop working too)."""
        known = await sessions_db.find_session_by_hash(self._db, token_hash=hash_refresh_token(refresh_token))
        if known is None or known.revoked_at is not None:
            raise InvalidCredentials(BAD_REFRESH, field=("input", "refreshToken"))
        await sessions_db.revoke_family(self._db, family_id=known.family_id, now=utcnow())
        await self._logins_ended([known.family_id])

    async def logout_all(self, *, keep_current: bool) -> None:
        viewer = self._deps.require_viewer()
        revoked = await sessions_db.revoke_user_sessions(
            self._db,
            user_id=viewer.id,
            now=utcnow(),
            keep_family=viewer.session_family_id if keep_current else None,
        )
        await self._logins_ended(revoked)

    async def update_profile(
        self, *, name: str | None, email: str | None, email_notifications: bool | None = None
    ) -> UserRecord:
        """`email_notifications`: whether emails about tasks are sent (account emails always are)."""
        viewer = self._deps.require_viewer()
        check = Checker()
        changes: dict[str, str | bool] = {}
        if email_notifications is not None and email_notifications != viewer.user.email_notifications:
            changes["email_notifications"] = email_notifications
        if name is not None:
            changes["name"] = check.text(("input", "name"), name, min_length=1, max_length=NAME_MAX_LENGTH)
        if email is not None:
            changes["email"] = check.email(("input", "email"), email)
        check.raise_if_any()
        if not changes:
            return viewer.user
        # "Email already taken" tells whose address it is: each try at a new address counts as a
        # failure until it succeeds, as sign-ins do, so the answer cannot list the accounts.
        throttle = LoginThrottle(self._deps, "email_change", str(viewer.id)) if "email" in changes else None
        if throttle is not None:
            await throttle.reserve()
        user = await users_db.update_user(self._db, user_id=viewer.id, changes=changes, now=utcnow())
        if user is None:
            raise NotFound(USER_NOT_FOUND)
        if throttle is not None:
            await throttle.succeeded()
        await self._deps.loaders.users.store(user)
        return user

    async def change_password(self, *, current_password: str, new_password: str) -> UserRecord:
        """Replaces the password and ends every other login of the user."""
        viewer = self._deps.require_viewer()
        check = Checker()
        check.password(("input", "newPassword"), new_password)
        check.raise_if_any()
        found = await users_db.find_credentials(self._db, user_id=viewer.id)
        verification = await self._runtime.passwords.verify(found.password_hash if found else None, current_password)
        if not verification.ok:
            raise InvalidCredentials("The current password is wrong.", field=("input", "currentPassword"))
        now = utcnow()
        new_hash = await self._runtime.passwords.hash(new_password)

        async def write(session: AsyncClientSession | None) -> tuple[UserRecord | None, list[OutboxEvent]]:
            user = await users_db.update_user(
                self._db, user_id=viewer.id, changes={"password_hash": new_hash}, now=now, session=session
            )
            return user, [] if user is None else await self._stage_email(session, "password_changed", user)

        user, events = await self._db.in_transaction(write)
        if user is None:
            raise NotFound(USER_NOT_FOUND)
        await self._runtime.outbox.publish(events)
        revoked = await sessions_db.revoke_user_sessions(
            self._db, user_id=viewer.id, now=now, keep_family=viewer.session_family_id
        )
        await self._logins_ended(revoked)
        return await self._deps.loaders.users.store(user)


class UserService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def get_visible(self, user_id: ObjectId) -> UserRecord:
        """Users see themselves and the people they share a project with; admins see everyone."""
        viewer = self._deps.require_viewer()
        user = await self._deps.loaders.users.load(user_id)
        visible = user is not None and (
            viewer.is_admin
            or user.id == viewer.id
            or await share_a_project(self._deps.db, user_ids=[viewer.id, user.id])
        )
        if not visible:
            raise NotFound(USER_NOT_FOUND)
        return user
