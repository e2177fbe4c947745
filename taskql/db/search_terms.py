"""Normalised search terms, stored on each task and matched with an index.

Why not `$text` or regex: SecantusDB has no text indexes, and an unanchored regex scans every
task. Instead each task stores the distinct normalised words of its title and description in a
multikey-indexed array (`search_terms`), plus the title's words (`title_terms`) for ranking. A
query matches tasks containing all its words (`$all`, served by the index on every MongoDB-compatible
server); title matches rank above description-only matches. Words are case- and accent-folded,
so "Café" finds "cafe".
"""

from __future__ import annotations

import re
import unicodedata

MAX_TERM_LENGTH = 40
MAX_QUERY_TERMS = 10
_WORD = re.compile(r"\w+")


def terms_of(text: str) -> list[str]:
    """Distinct folded words of `text`, in first-seen order."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in folded if not unicodedata.combining(ch))
    seen: dict[str, None] = {}
    for word in _WORD.findall(stripped):
        seen.setdefault(word[:MAX_TERM_LENGTH], None)
    return list(seen)
