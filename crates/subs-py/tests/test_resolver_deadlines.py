"""Python resolvers under the resolver deadline, off the engine's worker
threads, and with the subscriber's own context unless declared shared."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import subs
from subs import Engine, Principal

SCHEMA = """
type Query { hello: String! }
type Thing { id: ID! who: String }
type Subscription {
  stuck: Thing!
  slow: Thing!
  fast: Thing!
  whoami: Thing!
  whoshared: Thing!
}
"""


async def connect(engine: Engine, payload: Optional[Dict[str, Any]] = None) -> Any:
    session = engine.session(["graphql-transport-ws"])
    await session.receive(json.dumps({"type": "connection_init", "payload": payload or {}}))
    frames, close = await session.outgoing()  # type: ignore[misc]
    assert close is None and [json.loads(f)["type"] for f in frames] == ["connection_ack"]
    return session


async def subscribe(session: Any, id: str, field: str) -> None:
    query = f"subscription {{ {field} {{ id who }} }}"
    await session.receive(json.dumps({"id": id, "type": "subscribe", "payload": {"query": query}}))


async def subscribed(engine: Engine, count: int) -> None:
    """Waits until the engine holds `count` subscriptions (a session registers
    a subscription on its own driver, after `receive` returns)."""
    deadline = time.monotonic() + 5
    while engine.stats().subscriptions != count:
        assert time.monotonic() < deadline, engine.stats()
        await asyncio.sleep(0.005)


async def nexts(session: Any, count: int, timeout: float = 5.0) -> List[Tuple[str, Any]]:
    """The next `count` `next` frames as (id, payload), waiting up to `timeout`."""
    got: List[Tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {got} arrived"
        outgoing = await asyncio.wait_for(session.outgoing(), remaining)
        assert outgoing is not None, "the session closed"
        frames, close = outgoing
        assert close is None
        for frame in frames:
            message = json.loads(frame)
            if message["type"] == "next":
                got.append((message["id"], message["payload"]))
    return got


async def test_an_async_resolver_is_cancelled_at_its_deadline() -> None:
    engine = Engine(schema=SCHEMA, resolver_timeout=0.2)
    cancelled = asyncio.Event()
    forever = asyncio.Event()

    @engine.subscription("stuck")
    async def stuck(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        try:
            await forever.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"id": "never"}

    session = await connect(engine)
    await subscribe(session, "s", "stuck")
    await subscribed(engine, 1)
    await engine.publish("stuck", {"n": 1})
    [(id, payload)] = await nexts(session, 1)
    assert id == "s"
    assert payload["data"] is None
    assert payload["errors"][0]["message"] == "Resolver timed out after 200 ms"
    assert payload["errors"][0]["path"] == ["stuck"]
    await asyncio.wait_for(cancelled.wait(), 5)
    stats = engine.stats()
    assert (stats.resolver_timeouts, stats.resolver_errors) == (1, 1)
    session.close()


async def test_a_sync_resolver_that_sleeps_does_not_stop_other_topics() -> None:
    engine = Engine(schema=SCHEMA)

    # Two groups sleeping at once: on the engine's two worker threads they
    # would stop everything else until they return.
    @engine.subscription("slow")
    def slow(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        time.sleep(0.5)
        return {"id": str(event["n"])}

    @engine.subscription("fast")
    async def fast(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        return {"id": str(event["n"])}

    session = await connect(engine)
    await session.receive(json.dumps({"id": "slow-a", "type": "subscribe", "payload": {"query": "subscription { slow { id } }"}}))
    await session.receive(json.dumps({"id": "slow-b", "type": "subscribe", "payload": {"query": "subscription { slow { id who } }"}}))
    await subscribe(session, "fast", "fast")
    await subscribed(engine, 3)
    assert engine.stats().groups == 3
    for n in range(3):
        await engine.publish("slow", {"n": n})
    for n in range(20):
        await engine.publish("fast", {"n": n})
    got = await nexts(session, 20 + 6)
    fast_ids = [payload["data"]["fast"]["id"] for id, payload in got if id == "fast"]
    assert fast_ids == [str(n) for n in range(20)]
    order = [id for id, _ in got]
    assert order[:20] == ["fast"] * 20, "every fast event before the first slow answer"
    for group in ("slow-a", "slow-b"):
        ids = [payload["data"]["slow"]["id"] for id, payload in got if id == group]
        assert ids == ["0", "1", "2"]
    session.close()


async def test_a_resolver_sees_only_its_own_subscribers_principal() -> None:
    engine = Engine(schema=SCHEMA)
    calls: Dict[str, int] = {"whoami": 0, "whoshared": 0}

    @engine.on_connect
    def auth(payload: Any, request: subs.ConnectionInfo) -> Any:
        return Principal(payload["user"])

    @engine.subscription("whoami")
    async def whoami(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        calls["whoami"] += 1
        return {"id": str(event["n"]), "who": f"{info.principal.id}/{(info.init_payload or {}).get('user')}"}

    @engine.subscription("whoshared", shared=True)
    async def whoshared(event: Dict[str, Any], info: subs.Info) -> Dict[str, Any]:
        calls["whoshared"] += 1
        return {"id": str(event["n"]), "who": f"{info.principal.id or 'anonymous'}/{info.context['init_payload']}"}

    alice = await connect(engine, {"user": "alice"})
    bob = await connect(engine, {"user": "bob"})
    for session in (alice, bob):
        await subscribe(session, "mine", "whoami")
        await subscribe(session, "shared", "whoshared")
    await subscribed(engine, 4)
    assert engine.stats().groups == 3, "two personal groups, one shared"
    await engine.publish("whoami", {"n": 1})
    await engine.publish("whoshared", {"n": 1})
    for session, user in ((alice, "alice"), (bob, "bob")):
        got = dict(await nexts(session, 2))
        assert got["mine"]["data"]["whoami"]["who"] == f"{user}/{user}"
        assert got["shared"]["data"]["whoshared"]["who"] == "anonymous/None"
    assert calls == {"whoami": 2, "whoshared": 1}
    alice.close()
    bob.close()
