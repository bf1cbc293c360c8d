"""Native mode's health endpoints and the drain of a rolling deploy, driven
from Python: `/readyz` turns 503, WebSocket clients are closed with 1001, SSE
streams end, new clients are refused with 503, and `/healthz` and
`/metrics` keep answering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from subs import Engine
from support import Client, eventually
from test_http import SSE, sse_events


async def _drain_sends_clients_elsewhere(
    port: int, engine: Engine, drain: Callable[[], Awaitable[bool]], draining: Callable[[], bool]
) -> None:
    """The rolling-deploy drain as a client sees it on the server at `port`:
    `/healthz` and `/readyz` answer, then `drain()` (which answers whether
    every client left before its deadline) closes the WebSocket with 1001,
    ends the SSE stream, refuses new clients with 503 and `Retry-After`, and
    keeps answering health and metrics."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert (await client.get("/healthz")).text == "ok\n"
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        ws = await Client.open(f"ws://127.0.0.1:{port}/graphql")
        await ws.subscribe("1", "subscription { ticks }")
        query = {"query": "subscription { ticks }"}
        async with client.stream("POST", "/graphql", json=query, headers=SSE) as sse:
            assert sse.status_code == 200
            await eventually(lambda: engine.stats().subscriptions == 2, "two subscribers")
            assert not draining()
            drained = asyncio.ensure_future(drain())
            events = [event async for event in sse_events(sse.aiter_lines())]
            assert [e["event"] for e in events] == ["complete"]
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # the subscription completes, then the close
                assert (await ws.receive())["type"] == "complete"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await drained, "every client left before the deadline"
        assert draining() and engine.stats().connections == 0
        not_ready = await client.get("/readyz")
        assert (not_ready.status_code, not_ready.text) == (503, "not ready: draining\n")
        assert (await client.get("/healthz")).status_code == 200
        assert "subs_connections" in (await client.get("/metrics")).text
        refused = await client.post("/graphql", json=query, headers=SSE)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        with pytest.raises(InvalidStatus) as upgrade:
            await connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        assert upgrade.value.response.status_code == 503
        assert upgrade.value.response.headers["retry-after"] == "1"
        assert engine.stats().connections == 0


async def test_native_drain_sends_clients_elsewhere() -> None:
    engine = Engine("type Query { a: Int } type Subscription { ticks: Int }")
    engine.bind("ticks", topic="ticks")
    server = engine.start_server("127.0.0.1", 0)
    try:
        await _drain_sends_clients_elsewhere(
            server.port, engine, lambda: asyncio.to_thread(server.drain, 10.0), lambda: server.draining
        )
    finally:
        assert await asyncio.to_thread(server.shutdown, 5.0)


async def _uvicorn(app: object) -> "tuple[object, asyncio.Task[None], int]":
    """uvicorn serving `app` in this process (so the test drives the engine
    directly), once it listens."""
    import uvicorn

    from support import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve())
    await eventually(lambda: server.started, "uvicorn listening")
    return server, task, port


async def _not_found(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_asgi_drain_sends_clients_elsewhere_under_uvicorn() -> None:
    """SubsMiddleware on uvicorn: `/healthz`, `/readyz`, and `engine.drain`
    closes the WebSocket with 1001, ends the SSE stream, refuses new clients
    with 503 and keeps answering health and metrics."""
    from subs import SubsMiddleware

    engine = Engine("type Query { a: Int } type Subscription { ticks: Int }")
    engine.bind("ticks", topic="ticks")
    server, task, port = await _uvicorn(SubsMiddleware(_not_found, engine=engine, path="/graphql"))
    try:
        await _drain_sends_clients_elsewhere(port, engine, lambda: engine.drain(10.0), lambda: engine.draining)
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        await task
        await engine.aclose()


async def test_health_asgi_follows_start_and_drain() -> None:
    """`engine.health_asgi()` on Starlette routes: with a networked broker,
    not ready before the engine started (connected), ready once it runs,
    503 once a drain started; `/healthz` answers throughout."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    engine = Engine("type Query { a: Int } type Subscription { ticks: Int }", broker="redis://127.0.0.1:6379")
    health = engine.health_asgi()
    app = Starlette(routes=[Route("/healthz", health), Route("/readyz", health)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).status_code == 200
        before = await client.get("/readyz")
        assert (before.status_code, before.text) == (503, "not ready: engine not started\n")
        await engine.astart()
        # The broker's subscriber connection comes up just after the start.
        for _ in range(500):
            ready = await client.get("/readyz")
            if ready.status_code == 200:
                break
            assert ready.text == "not ready: broker disconnected\n"
            await asyncio.sleep(0.01)
        assert (ready.status_code, ready.text) == (200, "ready\n")
        engine.start_drain()
        after = await client.get("/readyz")
        assert (after.status_code, after.text) == (503, "not ready: draining\n")
        assert (await client.get("/healthz")).text == "ok\n"
        assert await engine.drain(1.0)  # nobody connected: at once
    await engine.aclose()
