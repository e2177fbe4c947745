from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from bson import ObjectId

from taskql.db.users import UserRecord
from taskql.schema.errors import UserError
from taskql.schema.extensions.shared_events import PER_VIEWER
from taskql.schema.relay import Connection, Node, encode_id

if TYPE_CHECKING:
    from taskql.schema.exports import Export
    from taskql.schema.notifications import Notification

_NOTIFICATIONS = "taskql.schema.notifications"
_EXPORTS = "taskql.schema.exports"


@strawberry.enum
class UserRole(Enum):
    USER = "USER"
    ADMIN = "ADMIN"


@strawberry.type
class User(Node):
    record: strawberry.Private[UserRecord]
    id: strawberry.ID
    email: str
    name: str
    role: UserRole
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, user: UserRecord) -> User:
        return cls(
            record=user,
            id=encode_id("User", user.id),
            email=user.email,
            name=user.name,
            role=UserRole(user.role),
            created_at=user.created_at,
            updated_at=user.updated_at,
        )

    @strawberry.field(
        description="Whether emails about tasks (assigned, due soon) are sent. Only on `viewer`.",
        metadata={PER_VIEWER: True},
    )
    def email_notifications(self, info: strawberry.Info) -> bool:
        info.context.notifications.require_self(self.record.id)
        return self.record.email_notifications

    @strawberry.field(description="The viewer's notifications, newest first. Only on `viewer`.")
    async def notifications(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        unread_only: bool = False,
    ) -> Connection[Annotated[Notification, strawberry.lazy(_NOTIFICATIONS)]]:
        from taskql.schema.notifications import user_notifications

        return await user_notifications(info, self.record.id, first, after, unread_only)

    @strawberry.field(description="The viewer's exports, newest first, until they expire. Only on `viewer`.")
    async def exports(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Export, strawberry.lazy(_EXPORTS)]]:
        from taskql.schema.exports import user_exports

        return await user_exports(info, self.record.id, first, after)

    @strawberry.field(description="How many of the viewer's notifications are unread. Only on `viewer`.")
    async def unread_notification_count(self, info: strawberry.Info) -> int:
        return await info.context.notifications.count(self.record.id, unread_only=True)


async def load_user(info: strawberry.Info, user_id: ObjectId) -> User:
    """A referenced user (owner, member, assignee, author, actor); users are never deleted."""
    record = await info.context.deps.loaders.users.load(user_id)
    if record is None:
        raise LookupError(f"user {user_id} is referenced but missing")
    return User.from_record(record)


@strawberry.input
class RegisterInput:
    email: str
    name: str
    password: str


@strawberry.input
class LoginInput:
    email: str
    password: str


@strawberry.input
class RefreshTokenInput:
    refresh_token: str


@strawberry.input
class LogoutInput:
    refresh_token: str = strawberry.field(description="The refresh token of the session to end.")


@strawberry.input
class LogoutAllInput:
    keep_current_session: bool = strawberry.field(
        default=False, description="End every other session but keep the one making this request."
    )


@strawberry.input
class UpdateProfileInput:
    name: str | None = None
    email: str | None = None
    email_notifications: bool | None = strawberry.field(
        default=None, description="Whether emails about tasks (assigned, due soon) are sent to you."
    )


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.type(description="Tokens of a new or refreshed session.")
class AuthPayload:
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: int | None = strawberry.field(default=None, description="Seconds until the access token expires.")
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserPayload:
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LogoutPayload:
    success: bool
    user_errors: list[UserError] = strawberry.field(default_factory=list)
