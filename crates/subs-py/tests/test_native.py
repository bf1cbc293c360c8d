"""In-process: native mode (the Rust server on the extension's threads), the
adapter protocol for custom servers, logging, configuration errors."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from typing import Any, Dict, List

import pytest

import subs
from subs import Engine, Principal, Reject, SubsError
from support import Client, eventually

SCHEMA = """
type Query { hello: String! }
type Thing { id: ID! ok: Boolean! n: Int big: String when: String }
type Subscription {
  things(id: ID): Thing!
  resolved: Thing!
  countdown(from: Int!): Int!
}
"""


def make_engine() -> Engine:
    engine = Engine(schema=SCHEMA)

    @engine.subscription("resolved", topic="r")
    async def resolved(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": info.principal.id or "anon", "ok": event["ok"], "n": event["n"] * 2}

    @engine.stream("countdown")
    async def countdown(info: subs.Info, **arguments: Any) -> Any:
        for n in range(arguments["from"], -1, -1):
            yield n

    @engine.on_connect
    async def auth(payload: Any, request: subs.ConnectionInfo) -> Any:
        if (payload or {}).get("reject"):
            raise Reject("nope")
        return Principal("p1") if payload else None

    return engine


async def test_native_server_with_a_client() -> None:
    engine = make_engine()
    server = engine.start_server("127.0.0.1", 0, path="/graphql")
    try:
        url = f"ws://127.0.0.1:{server.port}/graphql"
        client = await Client.open(url, {"user": "x"})
        await client.subscribe("1", 'subscription { things(id: "a") { id ok n } }')
        await client.subscribe("2", "subscription { resolved { id ok n } }")
        await client.subscribe("3", "subscription { countdown(from: 3) }")
        got = [(await client.next_data("3"))["data"]["countdown"] for _ in range(4)]
        assert got == [3, 2, 1, 0]
        assert (await client.receive()) == {"id": "3", "type": "complete"}
        await eventually(lambda: engine.stats().subscriptions == 2, "things and resolved are registered")
        await engine.publish("things", {"id": "b", "ok": False, "n": 1})
        await engine.publish("things", {"id": "a", "ok": True, "n": 2})
        await engine.publish("r", {"ok": True, "n": 21})
        assert await client.next_data("1") == {"data": {"things": {"id": "a", "ok": True, "n": 2}}}
        assert await client.next_data("2") == {"data": {"resolved": {"id": "p1", "ok": True, "n": 42}}}
        assert engine.stats().connections == 1
        await client.close()
        for _ in range(100):
            if engine.stats().connections == 0:
                break
            await asyncio.sleep(0.02)
        stats = engine.stats()
        assert (stats.connections, stats.subscriptions, stats.groups) == (0, 0, 0)
        assert stats.resolver_calls == 1
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown, 5.0)


async def test_native_http_handler() -> None:
    engine = make_engine()
    calls: List[Any] = []

    def handler(method: str, path: str, body: bytes) -> Any:
        calls.append((method, path, body))
        return 202, "application/json", json.dumps({"ok": True})

    server = engine.start_server("127.0.0.1", 0, http_handler=handler)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/publish", data=b"{}", method="POST")
        response = await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
        assert response.status == 202 and json.loads(response.read()) == {"ok": True}
        response.close()
        assert calls == [("POST", "/publish", b"{}")]
    finally:
        server.stop()


async def test_adapter_protocol_for_custom_servers() -> None:
    engine = make_engine()
    session = engine.session(["graphql-transport-ws"], [("origin", "http://x")], "127.0.0.1:5000")
    assert session.subprotocol == "graphql-transport-ws"
    await session.receive(json.dumps({"type": "connection_init"}))
    assert await session.outgoing() == (['{"type":"connection_ack"}'], None)
    await session.receive(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "subscription { things { ok } }"}}))
    await eventually(lambda: engine.stats().subscriptions == 1, "the subscription is registered")
    await engine.publish("things", {"id": "z", "ok": True})
    frames, close = await session.outgoing()  # type: ignore[misc]
    assert [json.loads(f) for f in frames] == [{"id": "1", "type": "next", "payload": {"data": {"things": {"ok": True}}}}]
    assert close is None
    assert engine.stats().subscriptions == 1
    session.close()
    assert await session.outgoing() is None
    assert engine.stats().subscriptions == 0


async def test_adapter_protocol_rejection_and_unknown_subprotocol() -> None:
    engine = make_engine()
    refused = engine.session(["not-graphql"])
    assert refused.subprotocol is None
    assert await refused.outgoing() == ([], (4406, "Subprotocol not acceptable"))
    session = engine.session(["graphql-transport-ws"])
    await session.receive(json.dumps({"type": "connection_init", "payload": {"reject": True}}))
    assert await session.outgoing() == ([], (4403, "nope"))
    assert await session.outgoing() is None


def test_publish_sync_from_threads_without_a_loop() -> None:
    engine = make_engine()
    errors: List[BaseException] = []

    def work() -> None:
        try:
            for n in range(100):
                engine.publish_sync("things", {"id": "t", "ok": True, "n": n})
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert engine.stats().events_published == 400


def test_logs_reach_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine()
    with caplog.at_level(logging.INFO, logger="subs"):
        session = engine.session(["graphql-transport-ws"])
        session.close()
        for _ in range(100):
            if any("connection opened" in r.getMessage() for r in caplog.records):
                break
            threading.Event().wait(0.02)
    messages = [r.getMessage() for r in caplog.records if r.name == "subs"]
    assert any("connection opened" in m for m in messages), messages


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(SubsError, match="invalid schema"):
        Engine(schema="type Query {")
    with pytest.raises(SubsError, match="cannot reach Redis at redis://127.0.0.1:1"):
        Engine(schema=SCHEMA, broker="redis://127.0.0.1:1").stats()
    with pytest.raises(ValueError, match="unknown broker"):
        Engine(schema=SCHEMA, broker="kafka")
    engine = Engine(schema=SCHEMA)
    with pytest.raises(SubsError, match="no field `nope`"):
        engine.bind("nope")
    with pytest.raises(SubsError, match="no argument `x`"):
        engine.bind("things", filters={"x": "y"})
    with pytest.raises(TypeError, match="plain function"):

        @engine.authorize
        async def bad(principal: Principal, field: str, arguments: Any) -> bool:
            return True

    engine.start()
    with pytest.raises(SubsError, match="has started"):
        engine.bind("things", topic="x")


def test_stats_object() -> None:
    engine = make_engine()
    stats = engine.stats()
    assert stats.connections == 0 and stats.resolver_calls == 0
    assert set(stats.as_dict()) >= {"connections", "subscriptions", "groups", "resolver_calls"}
    assert "connections=0" in repr(stats)


def test_principal() -> None:
    p = Principal("u", tenant="t", roles=["a"], claims={"k": [1]})
    assert (p.id, p.tenant, p.roles, p.claims) == ("u", "t", ("a",), {"k": [1]})
    assert p == Principal("u", tenant="t", roles=["a"], claims={"k": [1]})
    assert Principal().is_anonymous
    assert repr(p) == "Principal(id=\"u\", tenant=\"t\", roles=[\"a\"])"


def test_stub_matches_the_module() -> None:
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "subs._native"],
        capture_output=True,
        text=True,
        cwd=Path(subs.__file__).parent.parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:6379", "nats://127.0.0.1:4222"])
async def test_two_engines_share_events_through_a_broker(broker: str) -> None:
    """An event published on one instance reaches a subscriber of the other,
    exactly once, and the publisher's own subscriber exactly once too."""
    import uuid

    topic_id = uuid.uuid4().hex
    first, second = Engine(schema=SCHEMA, broker=broker), Engine(schema=SCHEMA, broker=broker)
    servers = [first.start_server("127.0.0.1", 0), second.start_server("127.0.0.1", 0)]
    try:
        clients = [await Client.open(f"ws://127.0.0.1:{s.port}/graphql") for s in servers]
        for client in clients:
            await client.subscribe("1", f'subscription {{ things(id: "{topic_id}") {{ id n }} }}')
        for engine in (first, second):
            await eventually(lambda: engine.stats().subscriptions == 1, "each instance registered its subscriber")
        # The second instance subscribes to the topic on the broker in the
        # background: probes (an id nobody subscribes to) until one crossed.
        received = second.stats().broker_received
        for _ in range(500):
            await first.publish("things", {"id": "probe", "ok": True, "n": -1})
            if second.stats().broker_received > received:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"no event crossed the broker: {second.stats()}")
        for n in range(3):
            await first.publish("things", {"id": topic_id, "ok": True, "n": n})
        # A marker each subscriber must get next: no event came twice.
        await first.publish("things", {"id": topic_id, "ok": True, "n": 3})
        for client in clients:
            got = [(await client.next_data("1"))["data"]["things"]["n"] for _ in range(4)]
            assert got == [0, 1, 2, 3]
            await client.close()
        assert first.stats().broker_published >= 3
    finally:
        for server in servers:
            await asyncio.get_running_loop().run_in_executor(None, server.shutdown, 5.0)
