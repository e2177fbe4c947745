"""Live task events over real WebSockets, against real server processes sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import REMOVE_MEMBER, TEST_SECRET, RedisServer
from tests.live import LiveServer, Subscriber, User

CREATE_PROJECT = 'mutation { createProject(input: {name: "Live"}) { project { id } } }'
CREATE_TASK = "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { task { id } } }"
UPDATE_TASK = "mutation($i: ID!, $t: String!) { updateTask(input: {id: $i, title: $t}) { task { version } } }"
TASK_KINDS = "subscription($p: ID!) { taskEvents(projectId: $p) { kind } }"
TASK_KINDS_AFTER = "subscription($p: ID!, $a: String) { taskEvents(projectId: $p, after: $a) { kind } }"
DELETE_TASK = "mutation($i: ID!) { deleteTask(input: {id: $i}) { deletedTaskId } }"
ADD_MEMBER = """
mutation($p: ID!, $e: String!) {
  addProjectMember(input: {projectId: $p, email: $e, role: VIEWER}) { userErrors { code } }
}
"""


@pytest.fixture
def start_server(mongodb_uri: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Starts server processes on one fresh database (and Redis database): several form a fleet behind a balancer."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    servers: list[LiveServer] = []

    def start(**settings: Any) -> LiveServer:
        settings = {"redis_url": redis_url, **settings}
        server = LiveServer(mongodb_uri=mongodb_uri, database=database, data_dir=tmp_path, **settings)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


async def create_project(owner: User) -> str:
    return (await owner.execute(CREATE_PROJECT))["createProject"]["project"]["id"]


async def create_task(owner: User, project_id: str, title: str) -> str:
    return (await owner.execute(CREATE_TASK, {"p": project_id, "t": title}))["createTask"]["task"]["id"]


async def until_live(owner: User, project_id: str, subscriber: Subscriber) -> int:
    """Writes probe tasks until one reaches a subscriber without a cursor (it is then live); returns
    how many events it has, all from probes. Later events all arrive, in order."""
    for n in range(50):
        title = f"probe {n}"
        await create_task(owner, project_id, title)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                while not any(e["task"]["title"] == title for e in subscriber.events):
                    # wait_for returns at once after a failure: without this, a spin the timeout never interrupts
                    assert subscriber.error is None, f"the subscription failed: {subscriber.error!r}"
                    await subscriber.wait_for(len(subscriber.events) + 1)
                return len(subscriber.events)
    raise AssertionError("the subscription never became live")


def close_code(error: BaseException | None) -> int | None:
    """The WebSocket close code behind a client error (gql wraps the websockets exception)."""
    while error is not None:
        if isinstance(error, ConnectionClosed) and error.rcvd is not None:
            return error.rcvd.code
        error = error.__cause__ or error.__context__
    return None


def _cursor_key(cursor: str) -> tuple[int, int]:
    ms, seq = cursor.split("-")
    return int(ms), int(seq)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_every_write_arrives_once_in_order_over_both_protocols(server: LiveServer, protocol: str) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    async with Subscriber(server, owner.token, project_id, after="0-0", protocol=protocol) as subscriber:
        task_id = await create_task(owner, project_id, "first")
        await owner.execute(UPDATE_TASK, {"i": task_id, "t": "second"})
        await owner.execute(DELETE_TASK, {"i": task_id})
        events = await subscriber.wait_for(3)

    assert [e["kind"] for e in events] == ["TASK_CREATED", "TASK_UPDATED", "TASK_DELETED"]
    assert [e["taskId"] for e in events] == [task_id] * 3
    assert [e["task"] and (e["task"]["title"], e["task"]["version"]) for e in events] == [
        ("first", 1),
        ("second", 2),
        None,
    ]
    assert events[1]["changedFields"] == ["title"]
    assert {e["actor"]["name"] for e in events} == {"Owner"}
    cursors = [_cursor_key(e["cursor"]) for e in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3


async def test_a_mutation_on_one_instance_reaches_subscribers_on_another_complete_and_in_order(
    start_server: Callable[..., LiveServer],
) -> None:
    a = start_server()
    b = start_server()
    owner = await User.register(a, "Owner")
    project_id = await create_project(owner)

    async with Subscriber(b, owner.token, project_id) as subscriber:  # live, no cursor
        seen_before = await until_live(owner, project_id, subscriber)
        titles = [f"burst {n}" for n in range(100)]
        for title in titles:
            await create_task(owner, project_id, title)
        events = (await subscriber.wait_for(seen_before + 100, timeout=60))[seen_before:]

    assert [e["task"]["title"] for e in events] == titles
    assert len({e["cursor"] for e in events}) == 100


async def test_reconnecting_with_after_replays_exactly_what_was_missed_then_continues_live(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    async with Subscriber(server, owner.token, project_id, after="0-0") as first:
        await create_task(owner, project_id, "seen")
        [seen] = await first.wait_for(1)

    missed = [f"missed {n}" for n in range(50)]
    for title in missed:
        await create_task(owner, project_id, title)
    async with Subscriber(server, owner.token, project_id, after=seen["cursor"]) as second:
        replayed = list(await second.wait_for(50))
        await create_task(owner, project_id, "live")
        events = await second.wait_for(51)

    assert [e["task"]["title"] for e in replayed] == missed
    assert [e["task"]["title"] for e in events] == [*missed, "live"]


async def test_a_cursor_older_than_the_retained_window_asks_for_a_refetch(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(events_max_length=100)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    async with Subscriber(server, owner.token, project_id, after="0-0") as first:
        await create_task(owner, project_id, "seen")
        [seen] = await first.wait_for(1)
    for n in range(300):  # approximate trimming keeps at least 100, but drops the oldest
        await create_task(owner, project_id, f"t{n}")

    async with Subscriber(server, owner.token, project_id, after=seen["cursor"]) as late:
        error = await late.ended(timeout=10)

    assert isinstance(error, TransportQueryError)
    assert error.errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"


async def test_a_bad_or_missing_token_closes_the_socket_with_4403(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    for token in ("not-a-jwt", ""):
        async with Subscriber(server, token, project_id) as subscriber:
            error = await subscriber.ended(timeout=10)
        assert close_code(error) == 4403, repr(error)


async def test_a_socket_is_signed_in_by_the_token_in_any_shape_clients_send_it_and_refusals_say_why(
    server: LiveServer,
) -> None:
    owner = await User.register(server, "Owner")
    bearer = f"Bearer {owner.token}"

    async def answer(payload: dict[str, Any]) -> tuple[str, int | None, str]:
        """The reply to connection_init: ("connection_ack", None, "") or ("closed", code, reason)."""
        async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": payload}))
            try:
                return json.loads(await asyncio.wait_for(socket.recv(), 10))["type"], None, ""
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return "closed", closed.rcvd.code, closed.rcvd.reason

    accepted = [
        await answer({"authorization": bearer}),
        await answer({"Authorization": bearer}),  # as many apps write it
        await answer({"headers": {"Authorization": bearer}}),  # GraphiQL's headers editor
    ]
    no_token = await answer({"token": owner.token})
    bad_token = await answer({"authorization": "Bearer not-a-jwt"})

    assert accepted == [("connection_ack", None, "")] * 3
    # 4400: graphql-ws does not retry a client that sent no token; 4403: it retries, with a fresh one.
    assert no_token == ("closed", 4400, 'Send {"authorization": "Bearer <access token>"} in connection_init.')
    assert bad_token[:2] == ("closed", 4403)
    assert bad_token[2] not in ("", "Forbidden")  # a reason a developer can act on


async def test_a_non_member_is_told_the_project_does_not_exist(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    stranger = await User.register(server, "Stranger")
    project_id = await create_project(owner)

    async with Subscriber(server, stranger.token, project_id) as subscriber:
        error = await subscriber.ended(timeout=10)

    assert isinstance(error, TransportQueryError)
    assert error.errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_removing_a_member_ends_their_subscription_within_a_second(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    member = await User.register(server, "Member")
    project_id = await create_project(owner)
    await owner.execute(ADD_MEMBER, {"p": project_id, "e": member.user["email"]})

    async with Subscriber(server, member.token, project_id, after="0-0") as subscriber:
        await create_task(owner, project_id, "visible")
        await subscriber.wait_for(1)
        await owner.execute(REMOVE_MEMBER, {"p": project_id, "u": member.user["id"]})
        removed_at = time.monotonic()  # acknowledged
        error = await subscriber.ended(timeout=5)
        ended_after = time.monotonic() - removed_at

    assert isinstance(error, TransportQueryError)
    assert error.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert ended_after < 1.0


async def test_ending_the_login_ends_its_subscriptions_within_a_second_on_every_instance(
    start_server: Callable[..., LiveServer],
) -> None:
    first, second = start_server(), start_server()
    owner = await User.register(first, "Owner")
    project_id = await create_project(owner)
    other_login = await User.register(first, "Other")  # a subscription of another user goes on
    await owner.execute(ADD_MEMBER, {"p": project_id, "e": other_login.user["email"]})

    async with (
        Subscriber(first, owner.token, project_id, after="0-0") as here,
        Subscriber(second, owner.token, project_id, after="0-0") as there,
        Subscriber(first, other_login.token, project_id, after="0-0") as unaffected,
    ):
        await create_task(owner, project_id, "seen by all")
        for subscriber in (here, there, unaffected):
            await subscriber.wait_for(1)
        await owner.execute("mutation { logoutAll { success } }")
        ended_at = time.monotonic()
        errors = [await here.ended(timeout=5), await there.ended(timeout=5)]
        ended_after = time.monotonic() - ended_at
        assert unaffected.error is None

    for error in errors:
        assert isinstance(error, TransportQueryError)
        assert error.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert error.errors[0]["message"] == "The session has ended; sign in again."
    assert ended_after < 1.0


async def test_an_access_token_that_expires_ends_the_subscription_then_closes_the_socket(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    claims = jwt.decode(owner.token, options={"verify_signature": False})
    short_lived = jwt.encode({**claims, "exp": int(time.time()) + 2}, TEST_SECRET, algorithm="HS256")
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {short_lived}"}}
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": TASK_KINDS, "variables": {"p": project_id}}}

    received = []
    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(json.dumps(subscribe))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))

    # The subscription says why it ended; then the socket closes with 4403, which graphql-ws clients
    # answer by reconnecting with a fresh token (every operation on the old socket would be refused).
    assert [message["type"] for message in received] == ["next", "complete"]
    assert received[0]["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    assert "expired" in closed.value.rcvd.reason


async def test_subscriptions_survive_a_redis_restart(
    start_server: Callable[..., LiveServer], private_redis: RedisServer
) -> None:
    server = start_server(redis_url=private_redis.url)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    async with Subscriber(server, owner.token, project_id, after="0-0") as subscriber:
        await create_task(owner, project_id, "before")
        await subscriber.wait_for(1)
        private_redis.stop()
        private_redis.start()
        await asyncio.sleep(1)
        await create_task(owner, project_id, "after")
        events = await subscriber.wait_for(2, timeout=20)

    assert [e["task"]["title"] for e in events] == ["before", "after"]


async def test_connections_per_user_are_limited(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(ws_max_connections_per_user=2)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    async with Subscriber(server, owner.token, project_id, after="0-0") as first:
        async with Subscriber(server, owner.token, project_id, after="0-0") as second:
            await create_task(owner, project_id, "both connected")
            await second.wait_for(1)
            async with Subscriber(server, owner.token, project_id) as third:
                refused = await third.ended(timeout=10)
        # The second connection closed: its place is free again.
        async with Subscriber(server, owner.token, project_id, after="0-0") as fourth:
            events = await fourth.wait_for(1)
        await first.wait_for(1)

    assert close_code(refused) == 4403
    assert events[0]["task"]["title"] == "both connected"


async def test_a_refused_connection_does_not_free_a_place(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(ws_max_connections_per_user=1)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    header = {"authorization": f"Bearer {owner.token}"}

    async with Subscriber(server, owner.token, project_id, after="0-0") as first:
        await create_task(owner, project_id, "connected")
        await first.wait_for(1)
        # Signed in by its upgrade header, but not by connection_init: refused, and must not count.
        async with Subscriber(server, owner.token, project_id, init_payload={}, headers=header) as refused:
            await refused.ended(timeout=10)
        async with Subscriber(server, owner.token, project_id) as over_the_limit:
            error = await over_the_limit.ended(timeout=10)

    assert close_code(error) == 4403


NODE_CLIENT = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """Node's graphql-ws client, installed from the lock file on first use."""
    npm = shutil.which("npm")
    assert npm, "Node.js and npm must be installed (.ci/run installs them)"
    if not (NODE_CLIENT / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, timeout=300)
    return NODE_CLIENT / "subscribe.mjs"


async def test_nodes_graphql_ws_client_receives_events(server: LiveServer, node_client: Path) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    node = await asyncio.create_subprocess_exec(
        "node",
        str(node_client),
        server.ws_url,
        owner.token,
        project_id,
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    await create_task(owner, project_id, "from python")
    await create_task(owner, project_id, "to node")
    stdout, stderr = await asyncio.wait_for(node.communicate(), 40)

    assert node.returncode == 0, stderr.decode()
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [(e["kind"], e["task"]["title"], e["actor"]["name"]) for e in events] == [
        ("TASK_CREATED", "from python", "Owner"),
        ("TASK_CREATED", "to node", "Owner"),
    ]


@contextlib.asynccontextmanager
async def socket_session(server: LiveServer, token: str, protocol: str = "graphql-transport-ws") -> Any:
    """A WebSocket connection of one user, for queries and mutations."""
    transport = WebsocketsTransport(
        url=server.ws_url, init_payload={"authorization": f"Bearer {token}"}, subprotocols=[protocol]
    )
    client = Client(transport=transport)
    session = await client.connect_async()
    try:
        yield session
    finally:
        await client.close_async()


async def socket_error(session: Any, query: str, variables: dict[str, Any] | None = None) -> str | None:
    try:
        await session.execute(GraphQLRequest(query, variable_values=variables))
    except TransportQueryError as error:
        return error.errors[0]["extensions"]["code"]  # type: ignore[index]
    return None


async def test_an_open_socket_is_refused_every_operation_once_its_login_ends(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    async with socket_session(server, owner.token) as session:
        before = await socket_error(session, "{ viewer { id } }")
        await owner.execute("mutation { logoutAll { success } }")
        after = [
            await socket_error(session, "{ viewer { id } }"),
            await socket_error(session, 'mutation { createProject(input: {name: "P"}) { project { id } } }'),
            await socket_error(session, 'mutation { updateProfile(input: {name: "Mallory"}) { user { id } } }'),
        ]

    assert before is None
    assert after == ["UNAUTHENTICATED"] * 3


async def test_a_query_over_the_legacy_protocol_is_refused_with_a_code(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    async with socket_session(server, owner.token, "graphql-ws") as session:
        code = await socket_error(session, "{ viewer { id } }")

    assert code == "OPERATION_NOT_ALLOWED"  # not a masked INTERNAL_SERVER_ERROR


async def test_an_open_socket_answers_with_the_permissions_of_now(server: LiveServer) -> None:
    owner, editor = await User.register(server, "Owner"), await User.register(server, "Editor")
    project_id = await create_project(owner)
    task_id = await create_task(owner, project_id, "t")
    add = """
    mutation($p: ID!, $e: String!) {
      addProjectMember(input: {projectId: $p, email: $e, role: EDITOR}) { project { id } }
    }
    """
    await owner.execute(add, {"p": project_id, "e": editor.user["email"]})
    demote = """
    mutation($p: ID!, $u: ID!) {
      updateProjectMember(input: {projectId: $p, userId: $u, role: VIEWER}) { project { id } }
    }
    """
    rename = """
    mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t}) { task { title } userErrors { code } } }
    """
    role = "query($id: ID!) { project(id: $id) { viewerRole } }"

    async with socket_session(server, editor.token) as session:
        as_editor = await session.execute(GraphQLRequest(rename, variable_values={"id": task_id, "t": "by the editor"}))
        await owner.execute(demote, {"p": project_id, "u": editor.user["id"]})
        as_viewer = await session.execute(GraphQLRequest(rename, variable_values={"id": task_id, "t": "by a viewer"}))
        viewer_role = await session.execute(GraphQLRequest(role, variable_values={"id": project_id}))
        await owner.execute(REMOVE_MEMBER, {"p": project_id, "u": editor.user["id"]})
        removed = await socket_error(session, role, {"id": project_id})

    assert as_editor["updateTask"] == {"task": {"title": "by the editor"}, "userErrors": []}
    assert as_viewer["updateTask"]["userErrors"] == [{"code": "FORBIDDEN"}]
    assert viewer_role == {"project": {"viewerRole": "VIEWER"}}
    assert removed == "NOT_FOUND"


async def test_a_legacy_socket_initialised_again_is_refused_and_counts_once(
    start_server: Callable[..., LiveServer],
) -> None:
    # graphql-ws acknowledged 19 connection_init on one socket, counting the user's connection each
    # time; once closed, the user could open 2 sockets of 20 until the server restarted.
    server = start_server(ws_max_connections_per_user=2)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    init = json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {owner.token}"}})

    async def answer(socket: Any) -> dict[str, Any]:
        while (message := json.loads(await socket.recv()))["type"] == "ka":  # keep-alives
            pass
        return message

    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-ws")]) as socket:
        await socket.send(init)
        first = await answer(socket)
        await socket.send(init)
        again = await answer(socket)
    async with Subscriber(server, owner.token, project_id, after="0-0") as one:
        async with Subscriber(server, owner.token, project_id, after="0-0") as two:
            await create_task(owner, project_id, "both connected")
            both = [len(await one.wait_for(1)), len(await two.wait_for(1))]

    assert first["type"] == "connection_ack"
    assert again["type"] == "connection_error"
    assert both == [1, 1]  # the first socket's place was given back once it closed


async def test_a_websocket_message_larger_than_an_http_body_closes_the_socket(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(max_body_bytes=10_000)
    owner = await User.register(server, "Owner")
    init = json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {owner.token}"}})
    padding = " " * 20_000  # inside the document: what the server must not read whole
    subscribe = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }" + padding}})

    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        await socket.send(init)
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(subscribe)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


async def test_operations_per_socket_are_limited(start_server: Callable[..., LiveServer]) -> None:
    server = start_server(ws_max_subscriptions_per_connection=2)
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {owner.token}"}}

    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        for operation_id in ("1", "2", "3"):
            payload = {"query": TASK_KINDS_AFTER, "variables": {"p": project_id, "a": "0-0"}}  # replayed: no race
            await socket.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
        refused = json.loads(await asyncio.wait_for(socket.recv(), 10))
        await create_task(owner, project_id, "to the two running")
        delivered = [json.loads(await asyncio.wait_for(socket.recv(), 10)) for _ in range(2)]

    assert (refused["id"], refused["type"]) == ("3", "error")
    assert refused["payload"][0]["message"] == "Subscription limit reached"
    assert sorted((message["id"], message["type"]) for message in delivered) == [("1", "next"), ("2", "next")]


@pytest.mark.parametrize("deflate", [False, True], ids=["default", "WS_PER_MESSAGE_DEFLATE"])
async def test_websocket_compression_is_off_unless_enabled(
    start_server: Callable[..., LiveServer], deflate: bool
) -> None:
    # permessage-deflate keeps ~44 KiB of zlib state per socket and compresses every message once per
    # socket: off by default, though every browser (and this client) offers it.
    server = start_server(ws_per_message_deflate=deflate)
    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        assert socket.request is not None and socket.response is not None
        offered = socket.request.headers.get("Sec-WebSocket-Extensions", "")
        accepted = socket.response.headers.get("Sec-WebSocket-Extensions", "")

    assert "permessage-deflate" in offered
    assert ("permessage-deflate" in accepted) is deflate
