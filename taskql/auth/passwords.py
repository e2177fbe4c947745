"""argon2id hashing (argon2-cffi's RFC 9106 low-memory profile), verified off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@dataclass(frozen=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the stored hash used outdated parameters


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Verified when an email is unknown, so the response takes as long as for a real account.
        self._dummy_hash = self._hasher.hash("taskql-dummy-password")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored_hash: str, password: str) -> Verification:
        try:
            self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, new_hash=self._hasher.hash(password))
        return Verification(ok=True)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check `password`; with no stored hash, burn the same time and fail."""
        if stored_hash is None:
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return Verification(ok=False)
        return await asyncio.to_thread(self._verify, stored_hash, password)
