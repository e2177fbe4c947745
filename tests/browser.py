"""Headless Chromium (Debian's, driven by Playwright) and a static server for pages on other origins."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from taskql.embedded.child import free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it): Playwright downloads no browser


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[int]:
    """Serves `root` on every loopback address (127.0.0.2 is another origin than 127.0.0.1); yields the port."""
    port = free_port()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
