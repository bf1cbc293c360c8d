"""Resolvers and streams written as Ariadne and Strawberry users write them:
`(event, info, **arguments)` and `(info, **arguments)`; the old positional
forms are refused at decoration with a message saying what to write."""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List

import pytest

import subs
from subs import Engine, Info, Principal
from test_resolver_deadlines import connect, nexts, subscribed

SCHEMA = """
type Query { ok: Boolean }
type Item { id: ID! note: String }
type Subscription {
  byInfo(itemId: ID, tag: String = "t"): Item!
  byKeyword(itemId: ID, tag: String = "t"): Item!
  byKwargs(itemId: ID, tag: String = "t"): Item!
  bare(itemId: ID): Item!
  counter(from: Int!): Int!
  guarded: Item!
}
"""


async def subscribe(session: Any, id: str, document: str, variables: Dict[str, Any]) -> None:
    payload = {"query": document, "variables": variables}
    await session.receive(json.dumps({"id": id, "type": "subscribe", "payload": payload}))


async def test_info_and_keyword_arguments_reach_the_resolver() -> None:
    engine = Engine(schema=SCHEMA)
    seen: List[Any] = []

    @engine.subscription("byInfo", topic="items", filters={"itemId": "id"})
    async def by_info(event: Dict[str, Any], info: Info) -> Dict[str, Any]:
        seen.append(("info", info.arguments, info.variables, info.principal.id, info.context["principal"].id, info.topic))
        return {"id": event["id"], "note": f"{info.arguments['tag']}/{(info.context['init_payload'] or {}).get('user')}"}

    @engine.subscription("byKeyword", topic="items", filters={"itemId": "id"})
    def by_keyword(event: Dict[str, Any], info: Info, itemId: Any = None, tag: str = "") -> Dict[str, Any]:
        seen.append(("keyword", itemId, tag))
        return {"id": event["id"], "note": f"{itemId}:{tag}"}

    @engine.subscription("byKwargs", topic="items", filters={"itemId": "id"})
    async def by_kwargs(event: Dict[str, Any], info: Info, **arguments: Any) -> Dict[str, Any]:
        seen.append(("kwargs", arguments))
        return {"id": event["id"], "note": ",".join(f"{k}={v}" for k, v in sorted(arguments.items()))}

    @engine.subscription("bare", topic="items", filters={"itemId": "id"})
    def bare(event: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": event["id"], "note": "bare"}

    @engine.stream("counter")
    async def counter(info: Info, **arguments: Any) -> Any:
        for n in range(arguments["from"], -1, -1):
            yield n

    @engine.on_connect
    def auth(payload: Any, request: subs.ConnectionInfo) -> Principal:
        return Principal(payload["user"])

    session = await connect(engine, {"user": "ann"})
    # A literal and a variable read the same: the field's arguments, not the variables.
    await subscribe(session, "1", 'subscription($tag: String) { byInfo(itemId: "i1", tag: $tag) { id note } }', {"tag": "t"})
    await subscribe(session, "2", 'subscription { byKeyword(itemId: "i1") { id note } }', {})
    await subscribe(session, "3", 'subscription($id: ID) { byKwargs(itemId: $id) { id note } }', {"id": "i1"})
    await subscribe(session, "4", "subscription { bare { id note } }", {})
    await subscribed(engine, 4)
    await engine.publish("items", {"id": "i1", "tag": "t"})
    got = dict(await nexts(session, 4))
    assert got["1"] == {"data": {"byInfo": {"id": "i1", "note": "t/ann"}}}
    assert got["2"] == {"data": {"byKeyword": {"id": "i1", "note": "i1:t"}}}
    assert got["3"] == {"data": {"byKwargs": {"id": "i1", "note": "itemId=i1,tag=t"}}}
    assert got["4"] == {"data": {"bare": {"id": "i1", "note": "bare"}}}
    assert ("info", {"itemId": "i1", "tag": "t"}, {"tag": "t"}, "ann", "ann", "items") in seen

    await subscribe(session, "5", "subscription { counter(from: 2) }", {})
    counted = [payload["data"]["counter"] for _, payload in await nexts(session, 3)]
    assert counted == [2, 1, 0]
    session.close()


@pytest.mark.parametrize(
    "define, message",
    [
        ("def old(event, variables): ...", "parameter `variables` is not an info"),
        ("def old(event, variables, context): ...", "parameter `variables` is not an info"),
        ("def old(event, info, context): ...", "parameter `context` is not an argument of the field"),
        ("def old(*args): ...", "must take (event, info, **arguments)"),
        ("def old(): ...", "must take (event, info, **arguments)"),
    ],
)
def test_old_resolver_signatures_are_refused_with_what_to_write(define: str, message: str) -> None:
    engine = Engine(schema=SCHEMA)
    scope: Dict[str, Any] = {}
    exec(define, scope)
    with pytest.raises(TypeError, match="no longer \\(event, variables\\[, context\\]\\)") as refused:
        engine.subscription("byInfo")(scope["old"])
    assert message in str(refused.value)


def test_old_stream_signature_is_refused() -> None:
    engine = Engine(schema=SCHEMA)

    async def old(variables: Dict[str, Any], context: Any) -> Any:
        yield 1

    with pytest.raises(TypeError, match="parameter `variables` is not an info"):
        engine.stream("counter")(old)


async def test_plain_def_hooks_do_not_hold_an_engine_worker() -> None:
    """A blocking `authorize` (a plain def) runs off the runtime's workers:
    while two of them block, a third connection is still served (the runtime
    has two workers)."""
    engine = Engine(schema=SCHEMA)
    engine.bind("guarded", topic="guarded")
    release = threading.Event()
    entered = threading.Semaphore(0)

    @engine.authorize
    def allow(principal: Principal, field: str, arguments: Dict[str, Any]) -> bool:
        if principal.id == "blocker":
            entered.release()
            release.wait(10)
        return True

    @engine.on_connect
    def auth(payload: Any, request: subs.ConnectionInfo) -> Principal:
        return Principal(payload["user"])

    blockers = [await connect(engine, {"user": "blocker"}) for _ in range(2)]
    try:
        for n, blocker in enumerate(blockers):
            await subscribe(blocker, str(n), "subscription { guarded { id } }", {})
        import asyncio

        loop = asyncio.get_running_loop()
        for _ in blockers:
            assert await loop.run_in_executor(None, entered.acquire, True, 5.0)
        other = await connect(engine, {"user": "other"})
        await subscribe(other, "x", "subscription { guarded { id } }", {})
        await subscribed(engine, 1)
        await engine.publish("guarded", {"id": "g"})
        assert await nexts(other, 1) == [("x", {"data": {"guarded": {"id": "g"}}})]
        other.close()
    finally:
        release.set()
        for blocker in blockers:
            blocker.close()
