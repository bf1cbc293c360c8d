"""Python hooks under their deadlines: an `async def` is cancelled when its
deadline passes, a plain `def` that blocks holds up no runtime worker, and a
connection keeps being served while its hooks run."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional

from subs import Engine, Principal

from test_asgi_hub import SCHEMA, FakeConnection, until


def closes(connection: FakeConnection) -> List[Dict[str, Any]]:
    return [m for m in connection.sent if m["type"] == "websocket.close"]


async def test_an_async_on_connect_is_cancelled_at_its_deadline() -> None:
    engine = Engine(schema=SCHEMA, connect_timeout=0.2, init_timeout=10)
    cancelled = asyncio.Event()

    @engine.on_connect
    async def on_connect(payload: Any, request: Any) -> Optional[Principal]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    engine.bind("things")
    engine.start()
    app = engine.asgi()
    conn = FakeConnection(["graphql-transport-ws"])
    task = asyncio.ensure_future(app(conn.scope, conn.receive, conn.send))
    conn.frame({"type": "connection_init"})
    await until(lambda: bool(closes(conn)))
    assert closes(conn)[0]["code"] == 4403
    assert closes(conn)[0]["reason"] == "Authentication timed out"
    await asyncio.wait_for(cancelled.wait(), 5)
    conn.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)


async def test_blocking_def_hooks_hold_up_no_worker_and_no_delivery() -> None:
    """Three connections whose `def on_connect` blocks for a second each (more
    than the runtime's two workers) while a subscribed connection keeps
    receiving every event."""
    engine = Engine(schema=SCHEMA)
    release = threading.Event()

    @engine.on_connect
    def on_connect(payload: Any, request: Any) -> Optional[Principal]:
        if payload and payload.get("slow"):
            release.wait(10)
        return None

    engine.bind("things")
    engine.start()
    app = engine.asgi()
    fast = FakeConnection(["graphql-transport-ws"])
    slow = [FakeConnection(["graphql-transport-ws"]) for _ in range(3)]
    tasks = [asyncio.ensure_future(app(c.scope, c.receive, c.send)) for c in [fast, *slow]]
    fast.frame({"type": "connection_init"})
    fast.frame({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    await until(lambda: engine.stats().subscriptions == 1)
    for c in slow:
        c.frame({"type": "connection_init", "payload": {"slow": True}})
    started = time.monotonic()
    for n in range(5):
        await engine.publish("things", {"id": "x", "n": n})
    await until(lambda: fast.nexts() == [0, 1, 2, 3, 4])
    assert not release.is_set() and time.monotonic() - started < 5
    release.set()
    for c in slow:
        await until(lambda c=c: any('"connection_ack"' in m.get("text", "") for m in c.sent))
    for c in [fast, *slow]:
        c.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_a_hanging_execute_hook_is_cancelled_and_answered_with_an_error() -> None:
    engine = Engine(schema=SCHEMA, execute_timeout=0.2)
    cancelled = asyncio.Event()

    @engine.execute
    async def execute(query: str, variables: Dict[str, Any], operation_name: Optional[str], principal: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"data": None}

    engine.bind("things")
    engine.start()
    app = engine.asgi()
    conn = FakeConnection(["graphql-transport-ws"])
    task = asyncio.ensure_future(app(conn.scope, conn.receive, conn.send))
    conn.frame({"type": "connection_init"})
    conn.frame({"id": "s", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    conn.frame({"id": "q", "type": "subscribe", "payload": {"query": "{ hello }"}})
    await until(lambda: engine.stats().subscriptions == 1)
    # While the query hangs, the subscription is served.
    await engine.publish("things", {"id": "x", "n": 1})
    await until(lambda: conn.nexts() == [1])
    await until(lambda: any('"error"' in m.get("text", "") for m in conn.sent))
    error = next(m["text"] for m in conn.sent if '"error"' in m.get("text", ""))
    assert "Execution failed: timed out after 200 ms" in error
    await asyncio.wait_for(cancelled.wait(), 5)
    conn.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)
