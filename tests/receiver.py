"""A real HTTP server receiving webhooks (uvicorn on a free loopback port), answering as told."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from taskql.embedded.child import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Records every request; answers the next ones from `answers` (a status, or ("hang", seconds)), then 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/taskql"
        self.requests: list[Received] = []
        self.answers: list[int | tuple[str, float]] = []
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", interface="asgi3"
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body, time.time()))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, tuple):
            await asyncio.sleep(answer[1])
            answer = 200
        await send({"type": "http.response.start", "status": answer, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # a request still hanging is not waited for
        if self._task is not None:
            await self._task

    async def wait_for(self, count: int, *, timeout: float = 20) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                await asyncio.sleep(0.02)
        return self.requests
