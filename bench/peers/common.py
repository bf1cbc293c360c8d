"""What both peer servers share, so they differ only in the GraphQL engine.

The bus, the publisher, `/publish`, `/stats`, the connection count and the
uvicorn setup are the same code for Strawberry and Ariadne (and mirror
crates/subs-py/examples/bench_server.py in its ASGI mode), so a difference
in the figures is the engine's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Generic, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

E = TypeVar("E")

# Builds the engine's event object from (topic, seq, sentAtNs, payload): once
# per publish, shared by every subscriber of the topic.
MakeEvent = Callable[[str, int, str, str], E]


def check_broker() -> None:
    """The peers only have the in-memory bus: refuse a shared broker loudly
    rather than measure something else than asked."""
    broker = os.environ.get("BROKER", "")
    if broker not in ("", "memory"):
        print(
            f"BROKER={broker!r} is not supported by this peer server: only the in-memory bus (unset or 'memory')",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


def init_timeout() -> timedelta:
    """The contract's `connection_init` wait, for the engine's own timeout."""
    return timedelta(milliseconds=int(os.environ.get("INIT_TIMEOUT_MS", "3000")))


class Bus(Generic[E]):
    """The in-memory bus in the idiomatic shape for these engines: every
    subscription's generator owns a queue, registered under its topic; a
    publish puts the event in each queue, and the engine then executes the
    subscription document for that event, once per subscriber."""

    def __init__(self) -> None:
        self.topics: dict[str, set[asyncio.Queue[E]]] = {}
        self.subscriptions = 0

    @contextmanager
    def counted(self) -> Iterator[None]:
        """Counts a running subscription generator for `GET /stats`."""
        self.subscriptions += 1
        try:
            yield
        finally:
            self.subscriptions -= 1

    @contextmanager
    def subscribe(self, topic: str) -> Iterator[asyncio.Queue[E]]:
        """A queue registered on `topic` for as long as the generator runs."""
        queue: asyncio.Queue[E] = asyncio.Queue()
        queues = self.topics.setdefault(topic, set())
        queues.add(queue)
        try:
            with self.counted():
                yield queue
        finally:
            queues.discard(queue)
            if not queues and self.topics.get(topic) is queues:
                del self.topics[topic]

    def publish(self, topic: str, event: E) -> None:
        for queue in self.topics.get(topic, ()):
            queue.put_nowait(event)


async def publish_ticks(
    bus: Bus[E], make: MakeEvent[E], topic: str, count: int, payload_bytes: int, interval_us: int
) -> None:
    """Publishes `count` ticks on `topic`, stamping `sentAtNs` as each one is
    handed to the bus. Paced: on an absolute schedule (as the subs bench
    server does). Burst: yields to the loop after every event, so subscribers
    deliver while the burst goes on instead of after it has all been queued."""
    filler = "x" * payload_bytes
    interval = interval_us / 1e6
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for seq in range(count):
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        bus.publish(topic, make(topic, seq, str(time.time_ns()), filler))
        if not interval:
            await asyncio.sleep(0)


class ConnectionCounter:
    """Counts open WebSocket connections around the engine's ASGI app (the
    engines have no symmetric connect/disconnect hooks). Nothing is wrapped
    per frame, so the count costs nothing per delivery."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1


def make_app(graphql: ASGIApp, bus: Bus[E], make: MakeEvent[E]) -> tuple[Starlette, ConnectionCounter]:
    """The contract's routes: the engine's WebSocket at /graphql, /publish, /stats."""
    connections = ConnectionCounter(graphql)
    publishers: set[asyncio.Task[None]] = set()  # strong references until done

    async def publish(request: Request) -> Response:
        try:
            body: dict[str, Any] = json.loads(await request.body())
            args = (
                str(body["topic"]),
                int(body.get("count", 1)),
                int(body.get("payloadBytes", 0)),
                int(body.get("intervalUs", 0)),
            )
        except (ValueError, KeyError, TypeError) as error:
            return Response(f"bad publish request: {error}\n", status_code=400, media_type="text/plain")
        task = asyncio.ensure_future(publish_ticks(bus, make, *args))
        publishers.add(task)
        task.add_done_callback(publishers.discard)
        return JSONResponse({"accepted": True}, status_code=202)

    async def stats(request: Request) -> Response:
        return JSONResponse({"connections": connections.open, "subscriptions": bus.subscriptions})

    app = Starlette(
        routes=[
            WebSocketRoute("/graphql", connections),
            Route("/publish", publish, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )
    return app, connections


def serve(app: ASGIApp) -> None:
    """Runs `app` on uvicorn with the subs bench server's settings and prints
    `READY <port>` once it accepts connections."""
    port = int(os.environ.get("PORT", "4000"))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_ping_interval=None,  # graphql-transport-ws has its own keepalive
        ws_max_size=64 * 1024,
        backlog=4096,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        bound = port
        for listener in server.servers:
            for sock in listener.sockets:
                bound = sock.getsockname()[1]
        print(f"READY {bound}", flush=True)
        await task

    # The loop uvicorn itself would pick (uvloop with uvicorn[standard]), as
    # `uvicorn app:app` runs in production and as subs' bench server does.
    loop_factory = config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
