"""GraphQL over HTTP from Python: queries and mutations, graphql-sse (both
modes) and Apollo multipart, on the bench server's `/graphql` in each mode:
SubsMiddleware, a Starlette route, and native mode (the Rust server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import httpx
import pytest

from support import bench_server

MODES = {
    "middleware": ["--mode", "asgi"],
    "route": ["--mode", "asgi", "--asgi", "route"],
    "native": ["--mode", "native"],
}

SSE = {"accept": "text/event-stream"}
MULTIPART = {"accept": 'multipart/mixed;subscriptionSpec="1.0", application/json'}
TOKEN = "x-graphql-event-stream-token"


@pytest.fixture(params=list(MODES), scope="module")
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bench server in one mode: its base URL."""
    with bench_server(MODES[request.param]) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client
    # Every test leaves the server as it found it.
    await wait_subscriptions(base, 0)


async def wait_subscriptions(base: str, count: int, *, at_least: bool = False) -> None:
    """Waits until the server's stats count `count` subscriptions (or at least
    that many): the engine's own counter, not a guess about timing."""
    async with httpx.AsyncClient(base_url=base, timeout=5) as stats_client:
        for _ in range(500):
            subscriptions = (await stats_client.get("/stats")).json()["subscriptions"]
            if subscriptions == count or (at_least and subscriptions >= count):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"the server never counted {count} subscriptions (last: {subscriptions})")


async def publish(client: httpx.AsyncClient, topic: str, count: int) -> None:
    """Publishes `count` ticks through the `Mutation.publish` mutation over HTTP."""
    response = await client.post(
        "/graphql",
        json={"query": "mutation($t: String!, $n: Int!) { publish(topic: $t, count: $n) }", "variables": {"t": topic, "n": count}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"publish": True}}


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[Dict[str, str]]:
    """The events of a text/event-stream: `{"event": ..., "data": ...}`."""
    event: Dict[str, str] = {}
    async for line in lines:
        if not line:
            if event:
                yield event
                event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = event[name] + "\n" + value if name in event else value


async def multipart_parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[Optional[Dict[str, Any]]]:
    """The JSON parts of an Apollo multipart response (`{}` is a heartbeat);
    `None` at its closing delimiter. A part's body is one JSON object: it is
    whole once it parses."""
    delimiter, end = b"\r\n--graphql", b"\r\n--graphql--"
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while buffer.startswith(delimiter):
            if buffer.startswith(end):
                yield None
                return
            head, separator, rest = buffer[len(delimiter) :].partition(b"\r\n\r\n")
            if not separator:
                break
            following = rest.find(delimiter)
            body = rest if following < 0 else rest[:following]
            try:
                part = json.loads(body)
            except ValueError:
                break  # the rest of the part is on its way
            yield part
            buffer = rest[len(body) :]


async def test_post_query(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ hello }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"hello": "world"}}
    got = await client.get("/graphql", params={"query": "{ hello }"}, headers={"accept": "application/json"})
    assert got.status_code == 200 and got.json() == {"data": {"hello": "world"}}


async def test_validation_error_is_400_under_graphql_response_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ nope }"},
        headers={"accept": "application/graphql-response+json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/graphql-response+json")
    assert response.json()["errors"]


async def test_principal_from_headers(client: httpx.AsyncClient) -> None:
    admin = await client.post("/graphql", json={"query": "{ secret }"}, headers={"x-user": "ann", "x-roles": "ops, admin"})
    assert admin.json() == {"data": {"secret": "s3cret"}}
    other = await client.post("/graphql", json={"query": "{ secret }"}, headers={"x-user": "bob", "x-roles": "ops"})
    assert "s3cret" not in other.text and other.json()["errors"]


async def test_x_reject_is_403(client: httpx.AsyncClient) -> None:
    refused = await client.post("/graphql", json={"query": "{ hello }"}, headers={"x-reject": "true"})
    assert refused.status_code == 403
    stream = await client.post(
        "/graphql",
        json={"query": 'subscription { ticks(topic: "refused") { seq } }'},
        headers={**SSE, "x-reject": "true"},
    )
    assert stream.status_code == 403


async def test_sse_distinct_in_order(base: str, client: httpx.AsyncClient) -> None:
    query = {"query": 'subscription { viewer(topic: "sse") { seq user } }'}
    async with client.stream("POST", "/graphql", json=query, headers={**SSE, "x-user": "carol"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await wait_subscriptions(base, 1)
        await publish(client, "sse", 3)
        events = sse_events(response.aiter_lines())
        seen = []
        for _ in range(3):
            event = await asyncio.wait_for(events.__anext__(), 5)
            assert event["event"] == "next", event
            seen.append(json.loads(event["data"]))
        assert seen == [{"data": {"viewer": {"seq": n, "user": "carol"}}} for n in range(3)]
    await wait_subscriptions(base, 0)


async def test_sse_stream_ends_with_complete(client: httpx.AsyncClient) -> None:
    query = {"query": "subscription { countdown(from: 2) }"}
    async with client.stream("POST", "/graphql", json=query, headers=SSE) as response:
        events = [event async for event in sse_events(response.aiter_lines())]
    assert [e["event"] for e in events] == ["next", "next", "next", "complete"]
    assert [json.loads(e["data"]) for e in events[:3]] == [{"data": {"countdown": n}} for n in (2, 1, 0)]


async def test_sse_single_connection(base: str, client: httpx.AsyncClient) -> None:
    reserved = await client.put("/graphql", headers={"x-user": "dave"})
    assert reserved.status_code == 201
    token = reserved.text
    async with client.stream("GET", "/graphql", headers={**SSE, TOKEN: token}) as stream:
        assert stream.status_code == 200
        events = sse_events(stream.aiter_lines())
        operation = {
            "query": 'subscription { viewer(topic: "single") { seq user } }',
            "extensions": {"operationId": "op1"},
        }
        accepted = await client.post("/graphql", json=operation, headers={TOKEN: token})
        assert accepted.status_code == 202, accepted.text
        await wait_subscriptions(base, 1)
        await publish(client, "single", 2)
        for n in range(2):
            event = await asyncio.wait_for(events.__anext__(), 5)
            assert event["event"] == "next"
            assert json.loads(event["data"]) == {"id": "op1", "payload": {"data": {"viewer": {"seq": n, "user": "dave"}}}}
        stopped = await client.delete("/graphql", params={"operationId": "op1"}, headers={TOKEN: token})
        assert stopped.status_code == 200
        # The operation is gone (the client asked: no `complete` for it); the
        # stream stays open for more.
        await wait_subscriptions(base, 0)
    # The stream is gone with its reservation, once the server has seen the
    # client leave (it notices the closed connection on its own time).
    for _ in range(250):
        gone = await client.post("/graphql", json=operation, headers={TOKEN: token})
        if gone.status_code == 404:
            break
        assert gone.status_code == 202, gone.text
        await asyncio.sleep(0.02)
    assert gone.status_code == 404


async def test_multipart_parts(base: str, client: httpx.AsyncClient) -> None:
    query = {"query": 'subscription { ticks(topic: "parts") { seq } }'}
    async with client.stream("POST", "/graphql", json=query, headers=MULTIPART) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/mixed")
        await wait_subscriptions(base, 1)
        await publish(client, "parts", 3)
        payloads = []
        parts = multipart_parts(response.aiter_bytes())
        while len(payloads) < 3:
            part = await asyncio.wait_for(parts.__anext__(), 5)
            assert part is not None
            if part:  # `{}` is a heartbeat
                payloads.append(part["payload"])
        assert payloads == [{"data": {"ticks": {"seq": n}}} for n in range(3)]
    await wait_subscriptions(base, 0)


async def test_multipart_ends_with_closing_delimiter(client: httpx.AsyncClient) -> None:
    query = {"query": "subscription { countdown(from: 1) }"}
    async with client.stream("POST", "/graphql", json=query, headers=MULTIPART) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body.endswith(b"\r\n--graphql--\r\n")
    assert body.count(b'{"payload":') == 2


@pytest.mark.parametrize("accept", [SSE, MULTIPART], ids=["sse", "multipart"])
async def test_disconnect_mid_stream_ends_the_subscription(base: str, client: httpx.AsyncClient, accept: Dict[str, str]) -> None:
    query = {"query": 'subscription { ticks(topic: "left") { seq } }'}
    async with httpx.AsyncClient(base_url=base, timeout=10) as leaving:
        async with leaving.stream("POST", "/graphql", json=query, headers=accept) as response:
            assert response.status_code == 200
            await wait_subscriptions(base, 1)
        # The client closed its connection mid-stream (nothing was published).
    await wait_subscriptions(base, 0)


async def test_gql_multipart_subscription(base: str, client: httpx.AsyncClient) -> None:
    """gql's aiohttp transport speaks Apollo's multipart subscription protocol."""
    from gql import Client, gql
    from gql.transport.aiohttp import AIOHTTPTransport

    transport = AIOHTTPTransport(url=f"{base}/graphql", headers={"x-user": "erin"})
    received: List[Any] = []
    async with Client(transport=transport) as session:
        subscription = gql('subscription { viewer(topic: "gql") { seq user } }')

        async def consume() -> None:
            async for result in session.subscribe(subscription):
                received.append(result)
                if len(received) == 3:
                    return

        task = asyncio.ensure_future(consume())
        await wait_subscriptions(base, 1)
        # aiohttp's multipart reader hands a part over only once more bytes
        # follow it (the next part or heartbeat): keep events coming, one per
        # round, until gql has three.
        for _ in range(100):
            await publish(client, "gql", 1)
            done, _ = await asyncio.wait({task}, timeout=0.05)
            if done:
                break
        await asyncio.wait_for(task, 5)
        assert (await session.execute(gql("{ hello }"))) == {"hello": "world"}
    assert received == [{"viewer": {"seq": 0, "user": "erin"}}] * 3
    await wait_subscriptions(base, 0)
