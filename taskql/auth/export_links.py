"""Download links of exports: `?token=<expiry>.<hex HMAC-SHA256(key, "<export id>.<expiry>")>`.

A link is a capability: whoever holds it may download that one file until it expires
(LINK_SECONDS), without signing in, as a browser follows a link. It is handed only to the
export's requester (Export.downloadUrl), freshly signed each time.
"""

from __future__ import annotations

import hashlib
import hmac

from bson import ObjectId

LINK_SECONDS = 600


def link_token(key: bytes, export_id: ObjectId, expires: int) -> str:
    mac = hmac.new(key, f"{export_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def link_is_valid(key: bytes, export_id: ObjectId, token: str, *, now: float) -> bool:
    expires, _, _ = token.partition(".")
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(link_token(key, export_id, int(expires)), token)
