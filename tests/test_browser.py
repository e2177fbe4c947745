"""A page in a real browser (headless Chromium) on another origin: what a frontend's dev server sees."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from playwright.async_api import Browser, Page, Route
from playwright.async_api import TimeoutError as PlaywrightTimeout

from taskql.embedded.child import free_port
from tests.browser import chromium, static_site
from tests.live import LiveServer, User

CREATE_PROJECT = 'mutation { createProject(input: {name: "Web"}) { project { id } } }'
CREATE_TASK = "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { task { id } } }"
# The page queries over HTTP (fetch) and subscribes over a WebSocket (graphql-transport-ws by hand),
# as a frontend would, and leaves what happened in window.outcome.
PAGE = """<!doctype html>
<meta charset="utf-8">
<script>
const params = new URLSearchParams(location.search);
const api = params.get("api"), token = params.get("token"), project = params.get("project");
window.outcome = {query: null, events: [], closed: null, acknowledged: false};
fetch(api + "/graphql", {
  method: "POST",
  headers: {"content-type": "application/json", "authorization": "Bearer " + token},
  body: JSON.stringify({query: "{ viewer { name } }"}),
}).then(async r => { window.outcome.query = {status: r.status, body: await r.json()}; },
        e => { window.outcome.query = {error: String(e)}; });
const socket = new WebSocket(api.replace("http", "ws") + "/graphql", "graphql-transport-ws");
socket.onopen = () => socket.send(JSON.stringify(
  {type: "connection_init", payload: {authorization: "Bearer " + token}}));
socket.onmessage = message => {
  const data = JSON.parse(message.data);
  if (data.type === "connection_ack") {
    window.outcome.acknowledged = true;
    socket.send(JSON.stringify({id: "1", type: "subscribe", payload: {
      query: "subscription($p: ID!) { taskEvents(projectId: $p, after: \\"0-0\\") { kind task { title } } }",
      variables: {p: project}}}));
  } else if (data.type === "next") {
    window.outcome.events.push(data.payload.data.taskEvents);
  }
};
socket.onclose = event => { window.outcome.closed = event.code; };
</script>
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "app.html").write_text(PAGE)
    with static_site(tmp_path) as port:
        yield port


def start(mongodb_uri: str, redis_url: str, tmp_path: Path, **settings: Any) -> LiveServer:
    server = LiveServer(
        mongodb_uri=mongodb_uri,
        redis_url=redis_url,
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path / "server",
        **settings,
    )
    server.start()
    return server


async def outcome_of(browser: Browser, url: str, done: str, timeout: float = 15) -> dict[str, Any]:
    """Opens the page and waits until `done` (a JS expression over `outcome`) holds; its outcome."""
    page: Page = await browser.new_page()
    try:
        await page.goto(url)
        await page.wait_for_function(f"(outcome => {done})(window.outcome)", timeout=timeout * 1000)
        return await page.evaluate("window.outcome")
    finally:
        await page.close()


async def test_a_page_on_an_allowed_origin_queries_and_subscribes_and_others_are_refused(
    mongodb_uri: str, redis_url: str, tmp_path: Path, site: int
) -> None:
    allowed, other = f"http://127.0.0.2:{site}", f"http://127.0.0.3:{site}"
    server = start(mongodb_uri, redis_url, tmp_path, cors_allow_origins=json.dumps([allowed]))
    try:
        owner = await User.register(server, "Owner")
        project_id = (await owner.execute(CREATE_PROJECT))["createProject"]["project"]["id"]
        await owner.execute(CREATE_TASK, {"p": project_id, "t": "before the page"})
        query = f"?api={server.base_url}&token={owner.token}&project={project_id}"
        async with chromium() as browser:
            listed = await outcome_of(browser, f"{allowed}/app.html{query}", "outcome.events.length >= 1")
            refused = await outcome_of(
                browser, f"{other}/app.html{query}", "outcome.query !== null && outcome.closed !== null"
            )
            # In development any port of localhost is allowed too: a dev server needs no setting.
            local = await outcome_of(browser, f"http://localhost:{site}/app.html{query}", "outcome.events.length >= 1")
    finally:
        server.stop()

    assert listed["query"] == {"status": 200, "body": {"data": {"viewer": {"name": "Owner"}}}}
    assert listed["events"][0] == {"kind": "TASK_CREATED", "task": {"title": "before the page"}}
    assert listed["closed"] is None
    assert "error" in refused["query"]  # the browser withholds an answer that does not allow its origin
    assert refused["acknowledged"] is False and refused["closed"] == 1006  # the handshake was refused
    assert local["query"]["status"] == 200 and local["events"]


async def test_localhost_is_not_allowed_in_production(
    mongodb_uri: str, redis_url: str, tmp_path: Path, site: int
) -> None:
    production = {"taskql_env": "production", "jwt_secret": "s" * 40, "metrics_port": free_port()}
    server = start(mongodb_uri, redis_url, tmp_path, **production)
    try:
        owner = await User.register(server, "Owner")
        project_id = (await owner.execute(CREATE_PROJECT))["createProject"]["project"]["id"]
        query = f"?api={server.base_url}&token={owner.token}&project={project_id}"
        async with chromium() as browser:
            refused = await outcome_of(
                browser, f"http://localhost:{site}/app.html{query}", "outcome.query !== null && outcome.closed !== null"
            )
    finally:
        server.stop()

    assert "error" in refused["query"] and refused["closed"] == 1006


async def test_graphiql_works_offline_runs_a_query_with_the_headers_editors_token_and_a_subscription(
    mongodb_uri: str, redis_url: str, tmp_path: Path
) -> None:
    server = start(mongodb_uri, redis_url, tmp_path)
    elsewhere: list[str] = []  # every request GraphiQL tried to send to another site (refused)
    problems: list[str] = []  # console errors, Content-Security-Policy violations
    try:
        owner = await User.register(server, "Owner")
        project_id = (await owner.execute(CREATE_PROJECT))["createProject"]["project"]["id"]
        headers = json.dumps({"Authorization": f"Bearer {owner.token}"})  # as typed in the headers editor
        subscription = f'subscription {{ taskEvents(projectId: "{project_id}") {{ kind task {{ title }} }} }}'
        async with chromium() as browser:
            page = await browser.new_page()

            async def only_the_server(route: Route) -> None:
                if route.request.url.startswith(server.base_url):
                    await route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_the_server)
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))

            async def run(document: str) -> None:
                # %20, not +: the page decodes its parameters with decodeURIComponent.
                parameters = urlencode({"q": document, "headers": headers}, quote_via=quote)
                await page.goto(f"{server.base_url}/graphql?{parameters}")
                await page.click(".graphiql-execute-button", timeout=15_000)  # rendered: GraphiQL loaded

            # Locators, not wait_for_function: the page's policy (rightly) refuses Playwright's eval.
            await run("{ viewer { name } }")
            await page.locator(".graphiql-response", has_text="Owner").wait_for(timeout=15_000)
            await run(subscription)
            for n in range(20):  # until the subscription is live: then its event shows
                await owner.execute(CREATE_TASK, {"p": project_id, "t": f"seen in GraphiQL {n}"})
                with contextlib.suppress(PlaywrightTimeout):
                    await page.locator(".graphiql-response", has_text="seen in GraphiQL").wait_for(timeout=1_000)
                    break
            shown = await page.inner_text(".graphiql-response")
    finally:
        server.stop()

    assert "TASK_CREATED" in shown and "seen in GraphiQL" in shown
    assert elsewhere == []  # nothing from unpkg.com or anywhere else: it works offline
    assert problems == []  # no script blocked by the policy, nothing failed to load
