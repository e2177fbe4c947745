"""Root fields for accounts: parse arguments, call a service, map records to types."""

from __future__ import annotations

import strawberry

from taskql.schema.errors import UserError, attempt
from taskql.schema.users import (
    AuthPayload,
    ChangePasswordInput,
    LoginInput,
    LogoutAllInput,
    LogoutInput,
    LogoutPayload,
    RefreshTokenInput,
    RegisterInput,
    UpdateProfileInput,
    User,
    UserPayload,
)
from taskql.services.users import AuthResult


def viewer(info: strawberry.Info) -> User | None:
    """The signed-in user, or null when no token is sent."""
    current = info.context.deps.viewer
    if current is None and info.context.deps.auth_problem:
        info.context.deps.require_viewer()  # a refused token is an error, so the client refreshes
    return User.from_record(current.user) if current else None


def _auth_payload(result: AuthResult | None, errors: list[UserError]) -> AuthPayload:
    if result is None:
        return AuthPayload(user_errors=errors)
    return AuthPayload(
        access_token=result.access_token,
        refresh_token=result.refresh_token,
        expires_in=result.expires_in,
        user=User.from_record(result.user),
    )


async def register(info: strawberry.Info, input: RegisterInput) -> AuthPayload:
    """Create an account and start a session."""
    return _auth_payload(
        *await attempt(info.context.accounts.register(email=input.email, name=input.name, password=input.password))
    )


async def login(info: strawberry.Info, input: LoginInput) -> AuthPayload:
    """Start a session with email and password."""
    return _auth_payload(*await attempt(info.context.accounts.login(email=input.email, password=input.password)))


async def refresh_token(info: strawberry.Info, input: RefreshTokenInput) -> AuthPayload:
    """Trade a refresh token (usable once) for a new access and refresh token."""
    return _auth_payload(*await attempt(info.context.accounts.refresh(refresh_token=input.refresh_token)))


async def logout(info: strawberry.Info, input: LogoutInput) -> LogoutPayload:
    """End the session a refresh token belongs to; its access tokens stop working."""
    _, errors = await attempt(info.context.accounts.logout(refresh_token=input.refresh_token))
    return LogoutPayload(success=not errors, user_errors=errors)


async def logout_all(info: strawberry.Info, input: LogoutAllInput | None = None) -> LogoutPayload:
    """End every session of the viewer (optionally all but the current one)."""
    keep = input.keep_current_session if input else False
    _, errors = await attempt(info.context.accounts.logout_all(keep_current=keep))
    return LogoutPayload(success=not errors, user_errors=errors)


async def update_profile(info: strawberry.Info, input: UpdateProfileInput) -> UserPayload:
    """Change the viewer's name, email, or whether they get emails about tasks."""
    user, errors = await attempt(
        info.context.accounts.update_profile(
            name=input.name, email=input.email, email_notifications=input.email_notifications
        )
    )
    return UserPayload(user=User.from_record(user) if user else None, user_errors=errors)


async def change_password(info: strawberry.Info, input: ChangePasswordInput) -> UserPayload:
    """Change the viewer's password; every other session ends."""
    user, errors = await attempt(
        info.context.accounts.change_password(current_password=input.current_password, new_password=input.new_password)
    )
    return UserPayload(user=User.from_record(user) if user else None, user_errors=errors)
