"""Edge cases on uvicorn: raising resolver, per-group resolver calls, worker
threads, stream cleanup, authorization, tenant isolation."""

from __future__ import annotations

import asyncio

from support import Client, Server, wait_until

ITEMS = "subscription { items { id n ok label } }"


async def test_raising_resolver_gives_errors_and_continues(edge: Server) -> None:
    client = await Client.open(edge.ws)
    await client.subscribe("f", "subscription { fragile { id n } }")
    await edge.until_subscriptions(1)
    await asyncio.to_thread(
        edge.post,
        "/publish/fragile",
        [{"id": "1", "n": 1, "ok": True, "explode": True}, {"id": "0", "n": 0, "ok": True, "refuse": True}, {"id": "2", "n": 2, "ok": True}],
    )
    failed = await client.next_data("f")
    assert failed["data"] is None
    # An exception not meant for clients: a generic message, no internals.
    assert failed["errors"][0]["message"] == "Internal error while resolving the event"
    assert failed["errors"][0]["path"] == ["fragile"]
    refused = await client.next_data("f")
    assert refused["errors"][0]["message"] == "item is gone", refused
    assert await client.next_data("f") == {"data": {"fragile": {"id": "2", "n": 2}}}
    await client.close()


async def test_resolver_called_once_per_group_per_event(edge: Server) -> None:
    clients = [await Client.open(edge.ws) for _ in range(20)]
    for client in clients:
        await client.subscribe("i", ITEMS)
    await edge.until_subscriptions(20)
    before = edge.get("/state")["calls"]
    stats_before = edge.get("/stats")["resolver_calls"]
    await asyncio.to_thread(edge.post, "/publish/items", [{"id": str(n), "n": n, "ok": n % 2 == 0} for n in range(5)])
    for client in clients:
        for n in range(5):
            data = (await client.next_data("i"))["data"]["items"]
            assert data == {"id": str(n), "n": n, "ok": n % 2 == 0, "label": "items:anon"}
    # 20 identical subscriptions form one group: 5 events -> 5 calls, not 100.
    assert edge.get("/state")["calls"] - before == 5
    assert edge.get("/stats")["resolver_calls"] - stats_before == 5
    for client in clients:
        await client.close()


async def test_publish_from_a_worker_thread(edge: Server) -> None:
    client = await Client.open(edge.ws)
    await client.subscribe("t", "subscription { threaded { n } }")
    await edge.until_subscriptions(1)
    answer = await asyncio.to_thread(edge.post, "/publish-thread/threaded", [{"n": n, "id": "x", "ok": True} for n in range(50)])
    assert answer["thread"] != "MainThread"
    got = [(await client.next_data("t"))["data"]["threaded"]["n"] for _ in range(50)]
    assert got == list(range(50))
    await client.close()


async def test_stream_cleanup_when_client_leaves(edge: Server) -> None:
    client = await Client.open(edge.ws)
    await client.subscribe("c", "subscription { counter(from: 1000) }")
    assert await client.next_data("c") == {"data": {"counter": 1000}}
    assert await client.next_data("c") == {"data": {"counter": 1001}}
    await client.close()
    cleaned = await asyncio.to_thread(wait_until, lambda: 1000 in edge.get("/state")["cleaned"])
    assert cleaned


async def test_stream_cleanup_on_complete(edge: Server) -> None:
    client = await Client.open(edge.ws)
    await client.subscribe("c", "subscription { counter(from: 2000) }")
    assert await client.next_data("c") == {"data": {"counter": 2000}}
    await client.send({"id": "c", "type": "complete"})
    cleaned = await asyncio.to_thread(wait_until, lambda: 2000 in edge.get("/state")["cleaned"])
    assert cleaned
    await client.close()


async def test_authorize_refuses_with_graphql_error(edge: Server) -> None:
    client = await Client.open(edge.ws, {"user": "u1"})
    await client.subscribe("s", "subscription { secret { id } }")
    message = await client.receive()
    assert message["type"] == "error" and message["id"] == "s"
    admin = await Client.open(edge.ws, {"user": "boss", "roles": ["admin"]})
    await admin.subscribe("s", "subscription { secret { id } }")
    await edge.until_subscriptions(1)
    await asyncio.to_thread(edge.post, "/publish/secret", {"id": "k", "n": 1, "ok": True})
    assert await admin.next_data("s") == {"data": {"secret": {"id": "k"}}}
    await client.close()
    await admin.close()


async def test_reject_in_on_connect_closes_4403(edge: Server) -> None:
    from websockets.exceptions import ConnectionClosed

    client = await Client.open(edge.ws, init=False)
    await client.send({"type": "connection_init", "payload": {"reject": True}})
    try:
        await client.receive()
        raise AssertionError("not closed")
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4403
        assert closed.rcvd.reason == "go away"


async def test_tenant_isolation(edge: Server) -> None:
    a = await Client.open(edge.ws, {"user": "a", "tenant": "acme"})
    b = await Client.open(edge.ws, {"user": "b", "tenant": "globex"})
    for client in (a, b):
        await client.subscribe("t", "subscription { tenantItems { id tenantId } }")
    await edge.until_subscriptions(2)
    await asyncio.to_thread(
        edge.post,
        "/publish/tenant_items",
        [{"id": "1", "n": 1, "ok": True, "tenantId": "acme"}, {"id": "2", "n": 2, "ok": True, "tenantId": "globex"}],
    )
    assert await a.next_data("t") == {"data": {"tenantItems": {"id": "1", "tenantId": "acme"}}}
    assert await b.next_data("t") == {"data": {"tenantItems": {"id": "2", "tenantId": "globex"}}}
    # A marker for acme that `a` must get: nothing of globex came before it.
    await asyncio.to_thread(edge.post, "/publish/tenant_items", [{"id": "3", "n": 3, "ok": True, "tenantId": "acme"}])
    assert await a.next_data("t") == {"data": {"tenantItems": {"id": "3", "tenantId": "acme"}}}
    await a.close()
    await b.close()


async def test_execute_hook_answers_queries_and_reports_failures(edge: Server) -> None:
    client = await Client.open(edge.ws, {"user": "u1"})
    await client.subscribe("q", "query Hi($skip: Boolean!) { hello @skip(if: $skip) }", {"skip": False})
    assert await client.next_data("q") == {"data": {"hello": "hi u1 skip=False"}}
    assert await client.receive() == {"id": "q", "type": "complete"}
    await client.send({"id": "b", "type": "subscribe", "payload": {"query": "query Boom { hello }", "operationName": "Boom"}})
    failed = await client.receive()
    assert failed["type"] == "error" and failed["id"] == "b"
    assert failed["payload"] == [{"message": "Execution failed: Internal error while executing the operation"}], failed
    await client.send({"id": "r", "type": "subscribe", "payload": {"query": "query Refused { hello }", "operationName": "Refused"}})
    refused = await client.receive()
    assert refused["payload"] == [{"message": "Execution failed: not today"}], refused
    await client.send({"id": "o", "type": "subscribe", "payload": {"query": "query Odd { hello }", "operationName": "Odd"}})
    odd = await client.receive()
    assert odd["type"] == "error" and "response object" in odd["payload"][0]["message"], odd
    # The connection is still fine.
    await client.subscribe("q2", "{ hello }")
    assert await client.next_data("q2") == {"data": {"hello": "hi u1"}}
    await client.close()
