"""A real SMTP server for the email tests (aiosmtpd on a free loopback port), and what it received."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from taskql.embedded.child import free_port


class Inbox:
    """aiosmtpd's handler: keeps every message accepted; refuses the next `refusals` ones with a 451
    (a temporary failure, as a greylisting or overloaded server answers)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refusals = 0
        self.refused = 0
        self.stalls: list[tuple[float, bool]] = []  # the next messages: (seconds to wait, then accept?)
        self.receiving = threading.Event()  # a stalled message started arriving (aiosmtpd runs in a thread)
        self.url = ""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stalls:
            seconds, accept = self.stalls.pop(0)
            self.receiving.set()
            await asyncio.sleep(seconds)
            if not accept:
                return "451 4.3.0 Try again later"
        elif self.refusals:
            self.refusals -= 1
            self.refused += 1
            return "451 4.3.0 Try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]

    async def wait_for(self, count: int, *, timeout: float = 15) -> list[EmailMessage]:
        """The messages, once there are at least `count`."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                await asyncio.sleep(0.05)
        return self.messages


def smtp_inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return part.get_content()
