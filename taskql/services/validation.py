"""Input checks that collect every problem, each naming its field, before anything is written."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime

from taskql.errors import FieldProblem, ValidationFailed

Field = tuple[str, ...]
# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is the mail server's job.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256  # bounds the cost of hashing a hostile input
EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(9000, 1, 1, tzinfo=UTC)


# Not text: control characters and lone surrogates (nothing can store them). An email address also
# refuses format characters (zero-width and direction marks), private-use and unassigned code
# points, which other text needs (Persian's zero-width non-joiner, emoji sequences).
_NOT_TEXT = frozenset({"Cc", "Cs"})
_NOT_IN_EMAIL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def canonical_email(value: str) -> str:
    """An email address as stored and looked up: NFKC-normalised (full-width and other compatibility
    forms become their plain letters, so `ａｄａ@example.com` is `ada@example.com`), trimmed and
    lower-cased. Letters of different scripts that look alike stay different addresses: an address is
    what a mail server delivers to, and it would deliver them to different mailboxes."""
    return unicodedata.normalize("NFKC", value).strip().lower()


def _has_any(categories: frozenset[str], value: str, allowed: str = "") -> bool:
    return any(unicodedata.category(char) in categories and char not in allowed for char in value)


class Checker:
    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, field: Field, message: str) -> None:
        self.problems.append(FieldProblem(field, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationFailed(self.problems)

    def text(self, field: Field, value: str, *, min_length: int = 0, max_length: int) -> str:
        """Trimmed `value`; records a problem when its length is out of bounds or it holds what is not
        text (control characters other than line breaks and tabs, lone surrogates)."""
        value = value.strip()
        if _has_any(_NOT_TEXT, value, allowed="\n\r\t"):
            self.add(field, "must be text without control characters")
        elif len(value) < min_length:
            self.add(field, "must not be empty" if min_length == 1 else f"must be at least {min_length} characters")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        return value

    def email(self, field: Field, value: str) -> str:
        value = canonical_email(value)
        if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.match(value) or _has_any(_NOT_IN_EMAIL, value):
            self.add(field, "must be a valid email address")
        return value

    def password(self, field: Field, value: str) -> str:
        if len(value) < MIN_PASSWORD_LENGTH:
            self.add(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")
        elif len(value) > MAX_PASSWORD_LENGTH:
            self.add(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")
        return value

    def datetime(self, field: Field, value: datetime) -> datetime:
        if value.tzinfo is None:
            self.add(field, "must include a time zone offset, e.g. 2026-05-01T09:00:00Z")
            return value
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # the offset carries it past year 1 or 9999
            self.add(field, "must be between 1970 and 9000")
            return value
        if not EARLIEST_DATE <= value < LATEST_DATE:
            self.add(field, "must be between 1970 and 9000")
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def tags(self, field: Field, values: Sequence[str], *, max_count: int, max_length: int) -> list[str]:
        """Lower-cased, trimmed, de-duplicated tags (order kept)."""
        tags = list(dict.fromkeys(tag.strip().lower() for tag in values))
        if any(_has_any(_NOT_TEXT, tag) for tag in tags):
            self.add(field, "must be text without control characters")
        if len(tags) > max_count:
            self.add(field, f"must have at most {max_count} tags")
        for index, tag in enumerate(tags):
            if not 1 <= len(tag) <= max_length:
                self.add((*field, str(index)), f"each tag must be 1 to {max_length} characters")
        return tags
