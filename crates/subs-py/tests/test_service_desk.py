"""The service-desk example on uvicorn: FastAPI + Ariadne + subs."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import Client, Server, wait_until

SERVICE_UPDATED = "subscription($id: ID) { serviceUpdated(serviceId: $id) { id name status } }"
UPDATE = "mutation($id: ID!, $status: ServiceStatus) { updateService(id: $id, status: $status) { id status } }"


async def test_subscribe_mutate_receive(desk: Server) -> None:
    client = await Client.open(desk.ws)
    await client.subscribe("1", SERVICE_UPDATED, {"id": "s1"})
    await desk.until_subscriptions(1)
    await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s1", "status": "DEGRADED"})
    payload = await client.next_data("1")
    assert payload == {"data": {"serviceUpdated": {"id": "s1", "name": "Email", "status": "DEGRADED"}}}
    await client.close()


async def test_filtering_by_service_id(desk: Server) -> None:
    only_s2 = await Client.open(desk.ws)
    every = await Client.open(desk.ws)
    await only_s2.subscribe("a", SERVICE_UPDATED, {"id": "s2"})
    await every.subscribe("b", "subscription { serviceUpdated { id } }")
    await desk.until_subscriptions(2)
    await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s3", "status": "DOWN"})
    await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s2", "status": "DOWN"})
    assert (await every.next_data("b"))["data"]["serviceUpdated"]["id"] == "s3"
    assert (await every.next_data("b"))["data"]["serviceUpdated"]["id"] == "s2"
    # The s2 subscriber sees only s2, with exactly the fields it selected.
    assert await only_s2.next_data("a") == {"data": {"serviceUpdated": {"id": "s2", "name": "VPN", "status": "DOWN"}}}
    # A marker the s2 subscriber must get: nothing else (s3) came before it.
    await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s2", "status": "OPERATIONAL"})
    assert await only_s2.next_data("a") == {"data": {"serviceUpdated": {"id": "s2", "name": "VPN", "status": "OPERATIONAL"}}}
    await only_s2.close()
    await every.close()


async def test_status_change_and_new_request(desk: Server) -> None:
    client = await Client.open(desk.ws, {"token": "agent-token"})
    await client.subscribe("c", 'subscription { serviceStatusChanged(serviceId: "s1") { serviceId previous current } }')
    await client.subscribe("r", "subscription { newServiceRequest { serviceId title } }")
    await desk.until_subscriptions(2)
    await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s1", "status": "DOWN"})
    change = await client.next_data("c")
    assert change["data"]["serviceStatusChanged"]["current"] == "DOWN"
    await asyncio.to_thread(
        desk.graphql,
        'mutation { createServiceRequest(serviceId: "s1", title: "mail is down") { id } }',
    )
    request = await client.next_data("r")
    assert request == {"data": {"newServiceRequest": {"serviceId": "s1", "title": "mail is down"}}}
    await client.close()


async def test_many_concurrent_clients(desk: Server) -> None:
    clients = await asyncio.gather(*(Client.open(desk.ws) for _ in range(100)))
    for i, client in enumerate(clients):
        await client.subscribe(str(i), "subscription { newServiceRequest { title } }")
    await desk.until_subscriptions(100)
    for n in range(3):
        await asyncio.to_thread(
            desk.graphql,
            "mutation($t: String!) { createServiceRequest(serviceId: \"s2\", title: $t) { id } }",
            {"t": f"t{n}"},
        )
    for i, client in enumerate(clients):
        titles = [(await client.next_data(str(i)))["data"]["newServiceRequest"]["title"] for _ in range(3)]
        assert titles == ["t0", "t1", "t2"]
    await asyncio.gather(*(c.close() for c in clients))


async def test_auth_rejection_closes_4403(desk: Server) -> None:
    client = await Client.open(desk.ws, init=False)
    await client.send({"type": "connection_init", "payload": {"token": "stolen"}})
    with pytest.raises(ConnectionClosed) as closed:
        await client.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    assert closed.value.rcvd.reason == "invalid token"


async def test_no_subprotocol_closes_4406(desk: Server) -> None:
    async with connect(desk.ws) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406


async def test_disconnect_cleanup_through_stats(desk: Server) -> None:
    base = desk.get("/stats")
    clients = [await Client.open(desk.ws) for _ in range(5)]
    for i, client in enumerate(clients):
        await client.subscribe("x", SERVICE_UPDATED, {"id": f"s{i}"})
    grown = wait_until(lambda: desk.get("/stats")["subscriptions"] >= base["subscriptions"] + 5)
    assert grown
    for client in clients:
        await client.close()
    after = await asyncio.to_thread(
        wait_until,
        lambda: (s := desk.get("/stats"))["connections"] == base["connections"] and s,
    )
    assert after, desk.get("/stats")
    assert after["subscriptions"] == base["subscriptions"]
    assert after["groups"] == base["groups"]


async def test_gql_client(desk: Server) -> None:
    from gql import Client as GqlClient, gql
    from gql.transport.websockets import WebsocketsTransport

    transport = WebsocketsTransport(url=desk.ws, subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    async with GqlClient(transport=transport) as session:
        subscription = session.subscribe(gql('subscription { serviceUpdated(serviceId: "s3") { id status } }'))

        async def mutate() -> None:
            await desk.until_subscriptions(1)
            await asyncio.to_thread(desk.graphql, UPDATE, {"id": "s3", "status": "OPERATIONAL"})

        task = asyncio.ensure_future(mutate())
        async for result in subscription:
            assert result == {"serviceUpdated": {"id": "s3", "status": "OPERATIONAL"}}
            break
        await task


async def test_ariadne_queries_still_work(desk: Server) -> None:
    data = await asyncio.to_thread(desk.graphql, "{ services { id } }")
    assert {s["id"] for s in data["services"]} >= {"s1", "s2", "s3"}


async def test_starlette_variant(desk_starlette: Server) -> None:
    client = await Client.open(desk_starlette.ws)
    await client.subscribe("1", SERVICE_UPDATED, {"id": "s1"})
    await desk_starlette.until_subscriptions(1)
    await asyncio.to_thread(desk_starlette.graphql, UPDATE, {"id": "s1", "status": "DOWN"})
    assert (await client.next_data("1"))["data"]["serviceUpdated"]["status"] == "DOWN"
    await client.close()


def test_plain_http_on_the_websocket_path_is_graphql_over_http(desk: Server) -> None:
    import urllib.error
    import urllib.request

    url = desk.ws.replace("ws://", "http://")
    # SubsMiddleware serves GraphQL over HTTP on its path too: a GET without
    # a query is a bad request...
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url, timeout=5)
    assert error.value.code == 400
    error.value.close()
    # ... and a query runs through the engine's executor (Ariadne here).
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": '{ service(id: "no-such-service") { name } }'}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read()) == {"data": {"service": None}}


async def test_queries_and_mutations_over_the_socket_run_on_ariadne(desk: Server) -> None:
    watcher = await Client.open(desk.ws)
    await watcher.subscribe("w", 'subscription { serviceUpdated(serviceId: "s7") { id status } }')
    await desk.until_subscriptions(1)
    actor = await Client.open(desk.ws)
    await actor.subscribe("m", 'mutation Update($s: ServiceStatus) { updateService(id: "s7", status: $s) { id status } }', {"s": "DOWN"})
    assert await actor.next_data("m") == {"data": {"updateService": {"id": "s7", "status": "DOWN"}}}
    assert await actor.receive() == {"id": "m", "type": "complete"}
    assert await watcher.next_data("w") == {"data": {"serviceUpdated": {"id": "s7", "status": "DOWN"}}}
    await actor.subscribe("q", '{ service(id: "s7") { name status } }')
    assert await actor.next_data("q") == {"data": {"service": {"name": "s7", "status": "DOWN"}}}
    assert await actor.receive() == {"id": "q", "type": "complete"}
    # Validated by subs against its schema before the executor is called.
    await actor.subscribe("bad", "{ nope }")
    refused = await actor.receive()
    assert refused["type"] == "error" and "nope" in refused["payload"][0]["message"], refused
    await watcher.close()
    await actor.close()
