"""Short-lived access JWTs and opaque refresh tokens (stored only as hashes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import jwt
from bson import ObjectId
from bson.errors import InvalidId

from taskql.errors import Unauthenticated

ALGORITHM = "HS256"  # pinned: decoding never trusts the token's own `alg` header
ACCESS_TOKEN_TYPE = "access"
REQUIRED_CLAIMS = ["sub", "iat", "exp", "iss", "aud", "jti", "typ", "sid"]
EXPIRED = "The access token has expired; refresh it."


@dataclass(frozen=True)
class AccessClaims:
    user_id: ObjectId
    session_family_id: ObjectId
    expires_at: datetime


VERIFIED_TOKENS = 10_000  # access tokens whose signature this process has checked, kept to skip the check


class TokenIssuer:
    def __init__(self, *, secret: str, issuer: str, audience: str, access_ttl: timedelta) -> None:
        if not secret:
            raise ValueError("TokenIssuer needs a non-empty secret")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        # A client sends the same token with every request until it refreshes it: its signature and
        # claims are checked once, its expiry every time. A refused token raises, which lru_cache
        # never keeps, so it costs the whole check each time it is sent.
        self._verified = lru_cache(maxsize=VERIFIED_TOKENS)(self._verify)

    def successor_refresh_token(self, refresh_token: str) -> str:
        """The refresh token that rotation gives for `refresh_token`, always the same one: a client that
        presents a just-rotated token again (another tab) gets the same successor, with nothing stored
        in the clear. Only who holds both the token and the server's secret can compute it."""
        digest = hmac.new(self._secret.encode(), b"refresh-successor:" + refresh_token.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    def issue_access_token(self, *, user_id: ObjectId, session_family_id: ObjectId, now: datetime) -> str:
        claims = {
            "sub": str(user_id),
            "sid": str(session_family_id),
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_ttl).timestamp()),
            "iss": self._issuer,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
            "typ": ACCESS_TOKEN_TYPE,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode_access_token(self, token: str) -> AccessClaims:
        claims = self._verified(token)
        if claims.expires_at <= datetime.now(UTC):  # as PyJWT judges `exp`, with no leeway
            raise Unauthenticated(EXPIRED)
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated(EXPIRED) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The access token is invalid.") from exc
        if claims["typ"] != ACCESS_TOKEN_TYPE:
            raise Unauthenticated("The access token is invalid.")
        try:
            return AccessClaims(
                user_id=ObjectId(claims["sub"]),
                session_family_id=ObjectId(claims["sid"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (InvalidId, TypeError) as exc:
            raise Unauthenticated("The access token is invalid.") from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """A fast hash is right here: the token has 256 random bits, nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()
