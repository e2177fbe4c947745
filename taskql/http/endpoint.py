"""Sends the GraphQL path straight to its app, innermost in the middleware: nearly every request is
for /graphql, and Starlette's exception layer and router (which the other routes keep) cost a
small query ~3 % of its time. The app itself answers every method (http/protocol.py)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class Endpoint:
    def __init__(self, app: ASGIApp, *, path: str, endpoint: ASGIApp) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and scope["path"] == self.path:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)
