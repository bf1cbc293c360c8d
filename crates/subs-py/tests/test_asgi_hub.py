"""In-process: the ASGI app's hub (one task sends every session's frames on a
loop) with fake ASGI connections: a slow client holds up no one, refusals
close, and everything is cleaned up on disconnect."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional

from subs import Engine

SCHEMA = """
type Query { hello: String! }
type Thing { id: ID! n: Int! }
type Subscription { things: Thing! }
"""


class FakeConnection:
    def __init__(self, subprotocols: List[str], gate: Optional[asyncio.Event] = None) -> None:
        self.inbox: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.sent: List[Dict[str, Any]] = []
        self.gate = gate
        self.scope = {"type": "websocket", "subprotocols": subprotocols, "headers": [], "client": ("127.0.0.1", 1)}
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> Dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: Dict[str, Any]) -> None:
        if self.gate is not None and '"next"' in message.get("text", ""):
            await self.gate.wait()
        self.sent.append(message)

    def frame(self, message: Dict[str, Any]) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(message)})

    def nexts(self) -> List[int]:
        texts = [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]
        return [t["payload"]["data"]["things"]["n"] for t in texts if t["type"] == "next"]


async def until(check: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_hub_slow_client_holds_up_no_one_and_cleans_up() -> None:
    engine = Engine(schema=SCHEMA)
    engine.bind("things")
    engine.start()
    app = engine.asgi()
    gate = asyncio.Event()
    fast, slow = FakeConnection(["graphql-transport-ws"]), FakeConnection(["graphql-transport-ws"], gate)
    tasks = [asyncio.ensure_future(app(c.scope, c.receive, c.send)) for c in (fast, slow)]
    for c in (fast, slow):
        c.frame({"type": "connection_init"})
        c.frame({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    await until(lambda: engine.stats().subscriptions == 2)
    for n in range(5):
        await engine.publish("things", {"id": "x", "n": n})
    await until(lambda: fast.nexts() == [0, 1, 2, 3, 4])
    assert slow.nexts() == []
    gate.set()
    await until(lambda: slow.nexts() == [0, 1, 2, 3, 4])
    assert fast.sent[0] == {"type": "websocket.accept", "subprotocol": "graphql-transport-ws"}

    refused = FakeConnection(["not-graphql"])
    await asyncio.wait_for(app(refused.scope, refused.receive, refused.send), 5)
    assert refused.sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": 4406, "reason": "Subprotocol not acceptable"},
    ]

    for c in (fast, slow):
        c.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await until(lambda: engine.stats().connections == 0)
    stats = engine.stats()
    assert (stats.connections, stats.subscriptions, stats.groups) == (0, 0, 0)
    hub = app._hubs[asyncio.get_running_loop()]
    await until(lambda: hub.task is None and not hub.connections and len(hub.native) == 0)


async def test_hub_client_gone_while_sending() -> None:
    engine = Engine(schema=SCHEMA)
    engine.bind("things")
    engine.start()
    app = engine.asgi()
    conn = FakeConnection(["graphql-transport-ws"])

    async def failing_send(message: Dict[str, Any]) -> None:
        if '"next"' in message.get("text", ""):
            await asyncio.sleep(0)
            raise OSError("client gone")
        conn.sent.append(message)

    task = asyncio.ensure_future(app(conn.scope, conn.receive, failing_send))
    conn.frame({"type": "connection_init"})
    conn.frame({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    await until(lambda: engine.stats().subscriptions == 1)
    await engine.publish("things", {"id": "x", "n": 1})
    # The failed send ends the connection (as the writer task did): no disconnect needed.
    await asyncio.wait_for(task, 5)
    await until(lambda: engine.stats().connections == 0)
    assert engine.stats().subscriptions == 0


async def test_publish_with_room_completes_without_a_loop_round_trip() -> None:
    engine = Engine(schema=SCHEMA)
    engine.bind("things")
    engine.start()
    app = engine.asgi()
    client = FakeConnection(["graphql-transport-ws"])
    task = asyncio.ensure_future(app(client.scope, client.receive, client.send))
    client.frame({"type": "connection_init"})
    client.frame({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    await until(lambda: engine.stats().subscriptions == 1)

    # The engine's queue has room: the event is queued by the call itself and
    # the awaitable is already complete (its first step finishes).
    steps = engine.publish("things", {"id": "x", "n": 0}).__await__()
    try:
        next(steps)
    except StopIteration:
        pass
    else:
        raise AssertionError("publish suspended although the queue had room")
    await asyncio.gather(engine.publish("things", {"id": "x", "n": 1}), engine.publish("things", {"id": "x", "n": 2}))
    await asyncio.wait_for(engine.publish("things", {"id": "x", "n": 3}), 5)
    await until(lambda: client.nexts() == [0, 1, 2, 3])
    assert engine.stats().events_published == 4

    client.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)


async def test_hub_parked_connection_that_overflows_is_closed_with_1013() -> None:
    """A client whose send never completes keeps its session parked; its
    bounded queue still overflows (1 MiB by default) and closes it with 1013,
    releasing its subscription at once, while another client gets every event."""
    engine = Engine(schema=SCHEMA)
    engine.bind("things")
    engine.start()
    app = engine.asgi()
    gate = asyncio.Event()
    fast, slow = FakeConnection(["graphql-transport-ws"]), FakeConnection(["graphql-transport-ws"], gate)
    tasks = [asyncio.ensure_future(app(c.scope, c.receive, c.send)) for c in (fast, slow)]
    for c in (fast, slow):
        c.frame({"type": "connection_init"})
        c.frame({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { id n } }"}})
    await until(lambda: engine.stats().subscriptions == 2)
    filler = "x" * (64 * 1024)
    for n in range(100):
        await engine.publish("things", {"id": filler, "n": n})
        # The fast client reads each event before the next is published.
        await until(lambda: len(fast.nexts()) == n + 1)
    assert fast.nexts() == list(range(100))
    # Still parked (the gate is shut), yet closed and unsubscribed.
    await until(lambda: engine.stats().slow_consumer_closes == 1)
    await until(lambda: engine.stats().subscriptions == 1)
    assert not gate.is_set()
    gate.set()
    await until(lambda: any(m["type"] == "websocket.close" for m in slow.sent))
    close = next(m for m in slow.sent if m["type"] == "websocket.close")
    assert close["code"] == 1013
    assert len(slow.nexts()) < 100
    fast.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    slow.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await until(lambda: engine.stats().connections == 0)
