"""Native mode's health endpoints and the drain of a rolling deploy, driven
from Python: `/readyz` turns 503, WebSocket clients are closed with 1001, SSE
streams end, new clients are refused with 503, and `/healthz` and
`/metrics` keep answering."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from subs import Engine
from support import Client
from test_http import SSE, sse_events


async def wait_for(check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_native_drain_sends_clients_elsewhere() -> None:
    engine = Engine("type Query { a: Int } type Subscription { ticks: Int }")
    engine.bind("ticks", topic="ticks")
    server = engine.start_server("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.text) == (200, "ready\n")
            ws = await Client.open(f"ws://127.0.0.1:{server.port}/graphql")
            await ws.subscribe("1", "subscription { ticks }")
            query = {"query": "subscription { ticks }"}
            async with client.stream("POST", "/graphql", json=query, headers=SSE) as sse:
                assert sse.status_code == 200
                await wait_for(lambda: engine.stats().subscriptions == 2, "two subscribers")
                assert not server.draining
                assert await asyncio.to_thread(server.drain, 10.0)
                assert server.draining
                events = [event async for event in sse_events(sse.aiter_lines())]
                assert [e["event"] for e in events] == ["complete"]
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # the subscription completes, then the close
                    assert (await ws.receive())["type"] == "complete"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            not_ready = await client.get("/readyz")
            assert (not_ready.status_code, not_ready.text) == (503, "not ready: draining\n")
            assert (await client.get("/healthz")).status_code == 200
            assert "subs_connections" in (await client.get("/metrics")).text
            refused = await client.post("/graphql", json=query, headers=SSE)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            with pytest.raises(InvalidStatus) as upgrade:
                await connect(f"ws://127.0.0.1:{server.port}/graphql", subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
            assert upgrade.value.response.status_code == 503
            assert engine.stats().connections == 0
    finally:
        assert await asyncio.to_thread(server.shutdown, 5.0)
