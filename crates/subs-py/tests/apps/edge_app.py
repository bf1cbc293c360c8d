"""A FastAPI app exercising what the service desk does not: a raising
resolver, the per-group resolver counter, publishing from a worker thread,
a Python stream with cleanup, authorization and tenant isolation."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, List

from fastapi import FastAPI, Request

from subs import ClientError, Engine, Info, Principal, Reject

SCHEMA = """
type Query { hello: String! }
type Item { id: ID! n: Int! ok: Boolean! tenantId: String label: String }
type Subscription {
  items(minN: Int): Item!
  fragile: Item!
  threaded: Item!
  counter(from: Int!): Int!
  secret: Item!
  tenantItems: Item!
}
"""

engine = Engine(schema=SCHEMA)
STATE: Dict[str, Any] = {"calls": 0, "cleaned": [], "started": []}


@engine.subscription("items", topic="items", filters={})
async def items(event: Dict[str, Any], info: Info) -> Dict[str, Any]:
    STATE["calls"] += 1
    await asyncio.sleep(0)
    return {**event, "label": f"{info.topic}:{info.principal.id or 'anon'}"}


@engine.subscription("fragile", topic="fragile")
def fragile(event: Dict[str, Any]) -> Dict[str, Any]:
    if event.get("explode"):
        raise ValueError("resolver exploded: internal detail")
    if event.get("refuse"):
        raise ClientError("item is gone")
    return event


engine.bind("threaded", topic="threaded")
engine.bind("secret", topic="secret")
engine.bind("tenantItems", topic="tenant_items")


@engine.stream("counter")
async def counter(info: Info, **arguments: Any) -> Any:
    start = arguments.get("from", 0)
    STATE["started"].append(start)
    try:
        n = start
        while True:
            yield n
            n += 1
            await asyncio.sleep(0.05)
    finally:
        STATE["cleaned"].append(start)


@engine.on_connect
def authenticate(payload: Any, request: Any) -> Any:
    payload = payload or {}
    if payload.get("reject"):
        raise Reject("go away")
    if "user" in payload:
        return Principal(payload["user"], tenant=payload.get("tenant"), roles=payload.get("roles", []))
    return None


@engine.authorize
def authorize(principal: Principal, field: str, arguments: Dict[str, Any]) -> bool:
    if field == "secret":
        return principal.has_role("admin")
    return True


engine.tenant_rule(field="tenantId")

@engine.execute
def execute(query: str, variables: Dict[str, Any], operation_name: Any, principal: Principal) -> Any:
    """A plain `def` executor: queries over the socket answered here."""
    if operation_name == "Boom":
        raise RuntimeError("executor exploded: internal detail")
    if operation_name == "Refused":
        raise ClientError("not today")
    if operation_name == "Odd":
        return {"unexpected": True}
    given = "".join(f" {name}={value}" for name, value in sorted(variables.items()))
    return {"data": {"hello": f"hi {principal.id or 'anon'}{given}"}}


app = FastAPI()
app.add_api_websocket_route("/graphql/ws", engine.asgi())


@app.post("/publish/{topic}")
async def publish(topic: str, request: Request) -> Dict[str, str]:
    body = await request.json()
    events: List[Any] = body if isinstance(body, list) else [body]
    for event in events:
        await engine.publish(topic, event)
    return {"ok": "yes"}


@app.post("/publish-thread/{topic}")
async def publish_thread(topic: str, request: Request) -> Dict[str, Any]:
    events = await request.json()

    def work() -> None:
        for event in events:
            engine.publish_sync(topic, event)

    thread = threading.Thread(target=work)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    return {"thread": thread.name}


@app.get("/stats")
def stats() -> Dict[str, int]:
    return engine.stats().as_dict()


@app.get("/state")
def state() -> Dict[str, Any]:
    return {"calls": STATE["calls"], "cleaned": STATE["cleaned"], "started": STATE["started"]}
