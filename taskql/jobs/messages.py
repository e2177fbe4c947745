"""The emails TaskQL sends, each with a plain-text and an HTML part and links to PUBLIC_URL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html import escape

from taskql.clock import utcnow
from taskql.db.projects import ProjectRecord
from taskql.db.tasks import TaskRecord
from taskql.db.users import UserRecord
from taskql.schema.relay import encode_id
from taskql.settings import Settings

# Emails about tasks; a user turns them off with updateProfile(input: {emailNotifications: false}).
# Account emails (welcome, password changed) are always sent.
TASK_TEMPLATES = frozenset({"task_assigned", "task_due_soon"})
TEMPLATES = frozenset({"welcome", "password_changed", *TASK_TEMPLATES})


@dataclass(frozen=True)
class Subject:
    """What an email is about, as read when it is sent."""

    user: UserRecord
    task: TaskRecord | None = None
    project: ProjectRecord | None = None
    actor: UserRecord | None = None


@dataclass(frozen=True)
class _Content:
    subject: str
    lines: list[str]  # paragraphs, plain text
    link_text: str
    link: str


def _content(template: str, about: Subject, base: str) -> _Content:
    user, task, project, actor = about.user, about.task, about.project, about.actor
    if template == "welcome":
        return _Content(
            "Welcome to TaskQL",
            [f"Hi {user.name},", f"Your TaskQL account for {user.email} is ready."],
            "Open TaskQL",
            base,
        )
    if template == "password_changed":
        return _Content(
            "Your TaskQL password was changed",
            [
                f"Hi {user.name},",
                "The password of your TaskQL account was just changed, and your other sign-ins were ended.",
                "If you did not do this, reset your password now and tell your administrator.",
            ],
            "Review your account",
            f"{base}/settings/security",
        )
    assert task is not None and project is not None, f"{template} is about a task"
    task_link = f"{base}/tasks/{encode_id('Task', task.id)}"
    if template == "task_assigned":
        who = actor.name if actor is not None else "Someone"
        return _Content(
            f"{who} assigned you: {task.title}",
            [f"Hi {user.name},", f"{who} assigned you “{task.title}” in {project.name}."],
            "Open the task",
            task_link,
        )
    if template == "task_due_soon":
        due = "soon" if task.due_at is None else f"on {task.due_at:%A %d %B %Y at %H:%M} UTC"
        return _Content(
            f"Due soon: {task.title}",
            [f"Hi {user.name},", f"“{task.title}” in {project.name} is due {due}."],
            "Open the task",
            task_link,
        )
    raise ValueError(f"no email template {template!r}")


def message_id(cause: str, mail_from: str) -> str:
    """The same for every attempt at one cause's email: a mail system that took a first copy can
    drop a second (db/emails.py)."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "taskql.invalid"
    return f"<{hashlib.sha256(cause.encode()).hexdigest()[:32]}@{domain}>"


def compose(template: str, about: Subject, *, cause: str, settings: Settings) -> EmailMessage:
    base = settings.public_url.rstrip("/")
    content = _content(template, about, base)
    footer = "You receive this because of your TaskQL account."
    if template in TASK_TEMPLATES:
        footer = f"Turn off emails about tasks in your settings: {base}/settings/notifications"
    message = EmailMessage()
    message["Subject"] = content.subject
    message["From"] = settings.mail_from
    message["To"] = Address(display_name=about.user.name, addr_spec=about.user.email)
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id(cause, settings.mail_from)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    text = "\n\n".join([*content.lines, f"{content.link_text}: {content.link}", f"-- \n{footer}"])
    message.set_content(text + "\n")
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in content.lines)
    html = (
        f'<!doctype html><html><body style="font-family: sans-serif">{paragraphs}'
        f'<p><a href="{escape(content.link)}">{escape(content.link_text)}</a></p>'
        f'<hr><p style="color: #666; font-size: small">{escape(footer)}</p></body></html>'
    )
    message.add_alternative(html, subtype="html")
    return message
