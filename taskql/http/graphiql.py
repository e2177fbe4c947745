"""GraphiQL served whole by TaskQL: its page and its assets, with no other site involved.

Strawberry's GraphiQL page loads React, GraphiQL, its explorer plugin and js-cookie from unpkg.com:
without internet it stays a blank "Loading…" page, and its Content-Security-Policy has to trust
unpkg.com. TaskQL ships those files, byte for byte (taskql/static/graphiql/ASSETS.md: versions,
hashes, licences), serves them at /graphiql/<file>, and serves Strawberry's page with its unpkg URLs
pointing there; the page's Subresource Integrity hashes still check every file. The policy then
names only the server itself, and the page's inline scripts by their SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cached_property
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from strawberry.http.ides import get_graphql_ide_html

ASSETS_PATH = "/graphiql"
ASSET_DIR = Path(__file__).resolve().parent.parent / "static" / "graphiql"
# Each unpkg.com URL of Strawberry's page, and the file of taskql/static/graphiql that replaces it.
ASSETS = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react-18.2.0.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom-18.2.0.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js-cookie-3.0.5.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql-3.8.3.min.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "graphiql-plugin-explorer-1.0.2.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql-3.8.3.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "graphiql-plugin-explorer-1.0.2.umd.js",
}
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


class GraphiQLPage:
    """Strawberry's GraphiQL page pointed at TaskQL's copies of its assets, and the policy it needs."""

    @cached_property
    def html(self) -> str:
        html = get_graphql_ide_html("graphiql")
        for url, name in ASSETS.items():
            html = html.replace(url, f"{ASSETS_PATH}/{name}")
        if "unpkg.com" in html:
            raise RuntimeError(
                "Strawberry's GraphiQL page loads files TaskQL does not ship: update taskql/static/graphiql "
                "(ASSETS.md) and ASSETS in taskql/http/graphiql.py"
            )
        return html

    @cached_property
    def content_security_policy(self) -> str:
        scripts = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in _INLINE_SCRIPT.findall(self.html)
        )
        # Styles may be inline: the page has a <style> block, and GraphiQL's editors set styles as they go.
        return (
            f"default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'"
        )


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS.values():
        return Response(status_code=404)
    # The names carry their versions: a browser may keep them for good.
    headers = {"cache-control": "public, max-age=31536000, immutable"}
    return FileResponse(ASSET_DIR / name, media_type=_MEDIA_TYPES[Path(name).suffix], headers=headers)


ASSET_ROUTE = Route(f"{ASSETS_PATH}/{{name}}", _asset)
