"""Where emails go: an SMTP server (SMTP_URL), or without one, .eml files under DATA_DIR/mail/."""

from __future__ import annotations

import logging
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from taskql.clock import utcnow
from taskql.settings import Settings

logger = logging.getLogger("taskql.jobs")
SMTP_PORTS = {"smtp": 587, "smtps": 465}


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hands the message over; raises if it was not accepted (the job retries)."""


class SmtpMailer:
    """A connection per message. `smtp://` upgrades with STARTTLS when the server offers it, and
    insists on it when the URL has credentials (they are never sent in clear); `smtps://` speaks
    TLS from the start."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        self._hostname = parts.hostname or "localhost"
        self._port = parts.port or SMTP_PORTS[parts.scheme]
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._implicit_tls = parts.scheme == "smtps"
        self._timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self._hostname,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._implicit_tls,
            # None: STARTTLS if offered. True: required (refused by a server that does not offer it).
            start_tls=None if self._implicit_tls or self._username is None else True,
            timeout=self._timeout,
        )


class MailDirectory:
    """Development: each message is written as an .eml file a developer can open in a mail client."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def send(self, message: EmailMessage) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(message["Subject"]))[:60].strip("-")
        path = self._directory / f"{utcnow():%Y%m%dT%H%M%S%f}-{slug}.eml"
        path.write_bytes(message.as_bytes())
        logger.info("email to %s written to %s (no SMTP_URL)", message["To"], path)


def create_mailer(settings: Settings) -> Mailer:
    if settings.smtp_url is None:
        return MailDirectory(settings.data_dir / "mail")
    return SmtpMailer(settings.smtp_url, timeout=settings.smtp_timeout_seconds)
