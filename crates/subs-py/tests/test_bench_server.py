"""examples/bench_server.py keeps the bench contract in both modes."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Dict, Iterator, Optional

import pytest
from websockets.exceptions import ConnectionClosed

from support import Client, bench_server, wait_until


# asgi: SubsMiddleware on uvicorn (frames written in batches on the server's
# transport); asgi-route: behind Starlette's routing (one ASGI send per
# message); python-resolver: ticks through a Python resolver; native: the Rust server.
MODES = {
    "asgi": ["--mode", "asgi"],
    "asgi-route": ["--mode", "asgi", "--asgi", "route"],
    "python-resolver": ["--mode", "asgi", "--resolver", "python"],
    "native": ["--mode", "native"],
}


# The mode each running bench server was started in, by port.
MODE_OF: Dict[int, str] = {}


@pytest.fixture(params=list(MODES), scope="module")
def bench(request: pytest.FixtureRequest) -> Iterator[int]:
    with bench_server(MODES[request.param], INIT_TIMEOUT_MS="1500") as port:
        MODE_OF[port] = request.param
        yield port


def http(port: int, method: str, path: str, body: object = None) -> tuple:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


async def wait_subscriptions(port: int, count: int, *, at_most: bool = False) -> None:
    """Waits until the server counts at least (or at most) `count` subscriptions."""
    for _ in range(250):
        _, stats = await asyncio.to_thread(http, port, "GET", "/stats")
        if (stats["subscriptions"] <= count) if at_most else (stats["subscriptions"] >= count):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server never counted {'at most' if at_most else 'at least'} {count} subscriptions")


async def no_subscription_left(port: int) -> None:
    """The earlier tests' clients are gone (the server shares a module)."""
    await wait_subscriptions(port, 0, at_most=True)


async def test_ticks_in_order_with_selection(bench: int) -> None:
    url = f"ws://127.0.0.1:{bench}/graphql"
    await no_subscription_left(bench)
    a = await Client.open(url)
    b = await Client.open(url)
    await a.subscribe("1", 'subscription { ticks(topic: "a") { seq sentAtNs payload } }')
    await b.subscribe("1", 'subscription { ticks(topic: "b") { seq } }')
    await wait_subscriptions(bench, 2)
    status, stats = await asyncio.to_thread(http, bench, "GET", "/stats")
    assert status == 200 and stats["connections"] >= 2 and stats["subscriptions"] >= 2
    status, _ = await asyncio.to_thread(http, bench, "POST", "/publish", {"topic": "a", "count": 200, "payloadBytes": 16, "intervalUs": 0})
    assert status == 202
    await asyncio.to_thread(http, bench, "POST", "/publish", {"topic": "b", "count": 3, "payloadBytes": 0, "intervalUs": 1000})
    for seq in range(200):
        tick = (await a.next_data("1"))["data"]["ticks"]
        assert tick["seq"] == seq and tick["payload"] == "x" * 16 and int(tick["sentAtNs"]) > 0
    assert [(await b.next_data("1"))["data"]["ticks"] for _ in range(3)] == [{"seq": 0}, {"seq": 1}, {"seq": 2}]
    await a.close()
    await b.close()


async def test_countdown_completes(bench: int) -> None:
    client = await Client.open(f"ws://127.0.0.1:{bench}/graphql")
    await client.subscribe("c", "subscription { countdown(from: 2) }")
    assert [(await client.next_data("c"))["data"]["countdown"] for _ in range(3)] == [2, 1, 0]
    assert await client.receive() == {"id": "c", "type": "complete"}
    await client.close()


async def test_reject_and_init_timeout(bench: int) -> None:
    url = f"ws://127.0.0.1:{bench}/graphql"
    client = await Client.open(url, init=False)
    await client.send({"type": "connection_init", "payload": {"reject": True}})
    with pytest.raises(ConnectionClosed) as closed:
        await client.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    silent = await Client.open(url, init=False)
    with pytest.raises(ConnectionClosed) as timed_out:
        await silent.receive(timeout=5)
    assert timed_out.value.rcvd is not None and timed_out.value.rcvd.code == 4408


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_a_slow_reader_holds_up_no_one_and_is_closed_with_1013(bench: int, compression: Optional[str]) -> None:
    """A reader that stops reading while 19 MB are published to it, with the
    engine's default queue limits (1 MiB per connection): the other subscriber
    gets every event in order (the burst is paced by it), and the slow one
    gets a prefix of them in order, then the 1013 close (its subscription ends
    at once). Under permessage-deflate the filler compresses so well that it
    all fits in the socket buffers: then the slow reader gets everything. (On
    uvicorn, subs frames the messages itself only without compression.)"""
    url = f"ws://127.0.0.1:{bench}/graphql"
    await no_subscription_left(bench)
    slow = await Client.open(url, max_queue=1, compression=compression)
    fast = await Client.open(url, compression=compression)
    for client in (slow, fast):
        await client.subscribe("1", 'subscription { ticks(topic: "big") { seq payload } }')

    def subscribed() -> bool:
        status, stats = http(bench, "GET", "/stats")
        return status == 200 and stats["subscriptions"] == 2

    assert await asyncio.to_thread(wait_until, subscribed)
    count, size = 300, 64_000  # about 19 MB: more than the kernel and the transport buffers hold
    _, before = await asyncio.to_thread(http, bench, "GET", "/stats")

    async def read_fast() -> None:
        for seq in range(count):
            tick = (await fast.next_data("1", timeout=20))["data"]["ticks"]
            assert tick["seq"] == seq and len(tick["payload"]) == size

    # The fast reader reads throughout; the slow one not at all until the
    # server has given up on it.
    reading = asyncio.ensure_future(read_fast())
    await asyncio.to_thread(
        http, bench, "POST", "/publish", {"topic": "big", "count": count, "payloadBytes": size, "intervalUs": 0}
    )
    extensions = slow.socket.response.headers.get("Sec-WebSocket-Extensions") if slow.socket.response else None
    if "permessage-deflate" in (extensions or ""):
        # Negotiated (uvicorn; the native server offers no compression): the
        # filler compresses about 500-fold, all of it fits in the socket
        # buffers, so nothing waits in the server and nothing overflows.
        await reading
        for seq in range(count):
            assert (await slow.next_data("1", timeout=20))["data"]["ticks"]["seq"] == seq
        status, stats = await asyncio.to_thread(http, bench, "GET", "/stats")
        assert status == 200 and stats["subscriptions"] == 2
        await slow.close()
    else:
        # Once the server gave up on it, the slow reader reads at once: a
        # peer gets the close handshake's time (1 s) to take the close.
        def gave_up() -> bool:
            _, stats = http(bench, "GET", "/stats")
            return bool(stats["slowConsumerCloses"] > before["slowConsumerCloses"])

        assert await asyncio.to_thread(wait_until, gave_up, 20)
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append((await slow.next_data("1", timeout=20))["data"]["ticks"]["seq"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await reading
        assert received == list(range(len(received))) and len(received) < count
        status, stats = await asyncio.to_thread(http, bench, "GET", "/stats")
        assert status == 200 and stats["subscriptions"] == 1
    await fast.close()


async def test_python_resolver_runs_once_per_group_and_event(bench: int) -> None:
    url = f"ws://127.0.0.1:{bench}/graphql"
    await no_subscription_left(bench)
    clients = [await Client.open(url) for _ in range(5)]
    for client in clients:
        await client.subscribe("1", 'subscription { ticks(topic: "once") { seq } }')
    await wait_subscriptions(bench, 5)
    _, before = await asyncio.to_thread(http, bench, "GET", "/stats")
    await asyncio.to_thread(http, bench, "POST", "/publish", {"topic": "once", "count": 10, "payloadBytes": 0, "intervalUs": 0})
    for client in clients:
        assert [(await client.next_data("1"))["data"]["ticks"]["seq"] for _ in range(10)] == list(range(10))
    _, after = await asyncio.to_thread(http, bench, "GET", "/stats")
    calls = after["resolverCalls"] - before["resolverCalls"]
    # One query group (five subscribers, same document and variables).
    assert calls == (10 if MODE_OF[bench] == "python-resolver" else 0)
    for client in clients:
        await client.close()


# -- the second part of the contract: principals, queries, mutations ----------

ADMIN = {"user": "alice", "roles": ["admin"]}
BOB = {"user": "bob"}


async def operation(client: Client, id: str, query: str, variables: Optional[Dict[str, object]] = None) -> list:
    """Every message for `id` up to its `complete` or `error`."""
    await client.subscribe(id, query, variables)
    messages = []
    while True:
        message = await client.receive()
        assert message.get("id") == id, message
        messages.append(message)
        if message["type"] in ("complete", "error"):
            return messages


async def test_hello_for_everyone_secret_for_admins_only(bench: int) -> None:
    url = f"ws://127.0.0.1:{bench}/graphql"
    for who, payload in (("anonymous", None), ("bob", BOB)):
        client = await Client.open(url, payload)
        assert await operation(client, "h", "{ hello }") == [
            {"id": "h", "type": "next", "payload": {"data": {"hello": "world"}}},
            {"id": "h", "type": "complete"},
        ], who
        refused = await operation(client, "s", "{ secret }")
        assert [m["type"] for m in refused] == ["error"], (who, refused)
        assert "s3cret" not in json.dumps(refused), who
        await client.close()
    admin = await Client.open(url, ADMIN)
    assert (await operation(admin, "s", "query A { hello } query B { s: secret __typename }"))[0]["type"] == "error"
    await admin.send(
        {"id": "b", "type": "subscribe", "payload": {"query": "query A { hello } query B { s: secret __typename }", "operationName": "B"}}
    )
    assert await admin.next_data("b") == {"data": {"s": "s3cret", "__typename": "Query"}}
    assert await admin.receive() == {"id": "b", "type": "complete"}
    await admin.close()


async def test_secret_beside_other_fields_is_refused_to_non_admins(bench: int) -> None:
    """Needs whole-operation authorization (every root field the operation
    selects goes through `authorize`, fragments and aliases included)."""
    url = f"ws://127.0.0.1:{bench}/graphql"
    documents = [
        "{ hello secret }",
        "{ a: hello b: secret }",
        "{ ...F } fragment F on Query { secret }",
    ]
    for payload in (None, BOB):
        client = await Client.open(url, payload)
        for n, document in enumerate(documents):
            messages = await operation(client, str(n), document)
            text = json.dumps(messages)
            assert "s3cret" not in text, (payload, document, text)
            assert any(m["type"] == "error" or "errors" in m.get("payload", {}) for m in messages), (document, text)
        await client.close()
    admin = await Client.open(url, ADMIN)
    for n, document in enumerate(documents):
        messages = await operation(admin, str(n), document)
        assert "s3cret" in json.dumps(messages) and messages[0]["type"] == "next", messages
    await admin.close()


async def test_publish_mutation_reaches_a_ticks_subscriber(bench: int) -> None:
    url = f"ws://127.0.0.1:{bench}/graphql"
    await no_subscription_left(bench)
    subscriber = await Client.open(url)
    await subscriber.subscribe("t", 'subscription { ticks(topic: "mutated") { topic seq payload } }')
    await wait_subscriptions(bench, 1)
    publisher = await Client.open(url, BOB)
    assert await operation(
        publisher,
        "p",
        "mutation($t: String!) { publish(topic: $t, count: 3, payloadBytes: 4) }",
        {"t": "mutated"},
    ) == [{"id": "p", "type": "next", "payload": {"data": {"publish": True}}}, {"id": "p", "type": "complete"}]
    for seq in range(3):
        assert await subscriber.next_data("t") == {"data": {"ticks": {"topic": "mutated", "seq": seq, "payload": "xxxx"}}}
    await publisher.close()
    await subscriber.close()


async def test_viewer_answers_each_subscriber_with_its_own_principal(bench: int) -> None:
    """Needs resolvers run per subscriber context (identical documents of
    two principals do not share one resolver call)."""
    url = f"ws://127.0.0.1:{bench}/graphql"
    await no_subscription_left(bench)
    clients = [await Client.open(url, payload) for payload in (ADMIN, BOB, None)]
    for client in clients:
        await client.subscribe("v", 'subscription { viewer(topic: "whoami") { seq user } }')
    await wait_subscriptions(bench, 3)
    await asyncio.to_thread(http, bench, "POST", "/publish", {"topic": "whoami", "count": 2, "payloadBytes": 0, "intervalUs": 0})
    for client, user in zip(clients, ("alice", "bob", "anonymous")):
        for seq in range(2):
            assert await client.next_data("v") == {"data": {"viewer": {"seq": seq, "user": user}}}
        await client.close()


@pytest.fixture(params=["asgi", "native"], scope="module")
def stalled_bench(request: pytest.FixtureRequest) -> Iterator[int]:
    """A bench server with a short resolver deadline."""
    with bench_server(MODES[request.param], RESOLVER_TIMEOUT_MS="1000") as port:
        yield port


async def test_stalled_resolver_answers_an_error_at_its_deadline(stalled_bench: int) -> None:
    """Needs the resolver deadline (and a Python coroutine cancelled at it)."""
    url = f"ws://127.0.0.1:{stalled_bench}/graphql"
    stalled = await Client.open(url)
    healthy = await Client.open(url)
    await stalled.subscribe("s", 'subscription { stalled(topic: "s") { seq } }')
    await healthy.subscribe("t", 'subscription { ticks(topic: "a") { seq } }')
    await wait_subscriptions(stalled_bench, 2)
    await asyncio.to_thread(http, stalled_bench, "POST", "/publish", {"topic": "s", "count": 1, "payloadBytes": 0, "intervalUs": 0})
    errored = asyncio.ensure_future(stalled.next_data("s", timeout=10))
    await asyncio.to_thread(http, stalled_bench, "POST", "/publish", {"topic": "a", "count": 3, "payloadBytes": 0, "intervalUs": 0})
    for seq in range(3):
        assert await healthy.next_data("t") == {"data": {"ticks": {"seq": seq}}}
    # The healthy subscriber was served while the stalled resolver still ran.
    assert not errored.done()
    payload = await errored
    assert payload["data"] is None and payload["errors"][0]["message"], payload
    await stalled.close()
    await healthy.close()
