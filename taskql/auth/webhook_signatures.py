"""Webhook secrets and signatures: `TaskQL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

A webhook's secret is not stored: it is derived from WEBHOOK_SECRET_KEY and a random nonce kept with
the webhook (a new nonce rotates it), so the database alone does not give anyone the power to sign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from bson import ObjectId

SECRET_PREFIX = "whsec_"


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def webhook_secret(key: bytes, webhook_id: ObjectId, nonce: str) -> str:
    digest = hmac.new(key, f"{webhook_id}:{nonce}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
