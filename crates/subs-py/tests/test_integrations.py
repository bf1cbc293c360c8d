"""`subs.ariadne` and `subs.strawberry`: the SDL from the library's schema,
queries and mutations on its executor, its subscription resolvers and
generators reused; and the service-desk variants served end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import strawberry
from ariadne import QueryType, SubscriptionType, make_executable_schema

import subs.ariadne
import subs.strawberry
from subs import Principal
from support import Client, Server
from test_resolver_deadlines import connect, nexts, subscribed

TYPE_DEFS = """
type Query { hello(name: String!): String! }
type Item { id: ID! label: String! }
type Subscription {
  itemChanged(itemId: ID): Item!
  countdown(from: Int!): Int!
  raw: Item!
}
"""


async def run(session: Any, id: str, document: str) -> None:
    await session.receive(json.dumps({"id": id, "type": "subscribe", "payload": {"query": document}}))


async def http_query(engine: Any, query: str) -> "tuple[int, Any]":
    """`query` posted to the engine's GraphQL over HTTP at its path."""
    status, _, body = await engine.http(
        "POST", "/graphql", [(b"content-type", b"application/json")], json.dumps({"query": query}).encode()
    )
    assert isinstance(body, bytes)
    return status, json.loads(body)


async def test_ariadne_schema_resolvers_sources_and_executor() -> None:
    query = QueryType()
    subscription = SubscriptionType()

    @query.field("hello")
    def hello(_: Any, info: Any, name: str) -> str:
        return f"hello {name} from {info.context['principal'].id or 'anonymous'}"

    @subscription.field("itemChanged")
    async def item_changed(item: Dict[str, Any], info: Any, itemId: Optional[str] = None) -> Dict[str, Any]:
        return {"id": item["id"], "label": f"{item['label']}!"}

    @subscription.source("countdown")
    async def countdown_source(_: Any, info: Any, **arguments: Any) -> AsyncIterator[int]:
        for n in range(arguments["from"], -1, -1):
            yield n

    @subscription.field("countdown")
    def countdown(value: int, info: Any, **arguments: Any) -> int:
        return value * 10

    schema = make_executable_schema(TYPE_DEFS, query, subscription)
    engine = subs.ariadne.engine(schema, topics={"itemChanged": "items"})
    engine.bind("itemChanged", filters={"itemId": "id"})

    @engine.on_connect
    def auth(payload: Any, request: Any) -> Principal:
        return Principal("ann")

    session = await connect(engine)
    await run(session, "q", '{ hello(name: "x") }')
    assert await nexts(session, 1) == [("q", {"data": {"hello": "hello x from ann"}})]
    # Over HTTP too, on Ariadne's executor.
    assert await http_query(engine, '{ hello(name: "h") }') == (200, {"data": {"hello": "hello h from ann"}})
    await run(session, "s", 'subscription { itemChanged(itemId: "i1") { id label } }')
    await run(session, "raw", "subscription { raw { id } }")
    await subscribed(engine, 2)
    await engine.publish("items", {"id": "i2", "label": "other"})
    await engine.publish("items", {"id": "i1", "label": "one"})
    await engine.publish("raw", {"id": "r"})
    got = await nexts(session, 2)
    assert ("s", {"data": {"itemChanged": {"id": "i1", "label": "one!"}}}) in got
    assert ("raw", {"data": {"raw": {"id": "r"}}}) in got
    await run(session, "c", "subscription { countdown(from: 2) }")
    assert [p["data"]["countdown"] for _, p in await nexts(session, 3)] == [20, 10, 0]
    session.close()


@strawberry.type
class Item:
    id: strawberry.ID
    label_text: str


@strawberry.type
class StrawberryQuery:
    @strawberry.field
    def hello(self, info: strawberry.Info, name: str) -> str:
        return f"hello {name} from {info.context['principal'].id}"


@strawberry.type
class StrawberrySubscription:
    @strawberry.subscription
    async def item_changed(self, item_id: Optional[strawberry.ID] = None) -> AsyncIterator[Item]:
        yield Item(id=strawberry.ID("never"), label_text="bound to a topic on subs")

    @strawberry.subscription
    async def countdown(self, info: strawberry.Info, start_at: int) -> AsyncIterator[Item]:
        for n in range(start_at, -1, -1):
            yield Item(id=strawberry.ID(str(n)), label_text=f"{info.principal.id}:{n}")


async def test_strawberry_schema_topics_generators_and_executor() -> None:
    schema = strawberry.Schema(query=StrawberryQuery, subscription=StrawberrySubscription)
    engine = subs.strawberry.engine(schema, topics={"itemChanged": "items"})
    engine.bind("itemChanged", filters={"itemId": "id"})

    @engine.on_connect
    def auth(payload: Any, request: Any) -> Principal:
        return Principal("bo")

    session = await connect(engine)
    await run(session, "q", '{ hello(name: "y") }')
    assert await nexts(session, 1) == [("q", {"data": {"hello": "hello y from bo"}})]
    # Over HTTP too, on Strawberry's executor.
    assert await http_query(engine, '{ hello(name: "h") }') == (200, {"data": {"hello": "hello h from bo"}})
    await run(session, "bad", "{ nope }")  # subs validates first: a GraphQL error, the socket stays
    await run(session, "s", 'subscription { itemChanged(itemId: "i1") { id labelText } }')
    await subscribed(engine, 1)
    await engine.publish("items", {"id": "i1", "labelText": "one"})
    assert await nexts(session, 1) == [("s", {"data": {"itemChanged": {"id": "i1", "labelText": "one"}}})]
    await run(session, "c", "subscription { countdown(startAt: 1) { id labelText } }")
    got: List[Any] = [p["data"]["countdown"] for _, p in await nexts(session, 2)]
    assert got == [{"id": "1", "labelText": "bo:1"}, {"id": "0", "labelText": "bo:0"}]
    session.close()


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "service_desk"


async def test_the_strawberry_service_desk_serves_queries_mutations_and_subscriptions() -> None:
    server = Server("strawberry_app:app", EXAMPLES)
    try:
        client = await Client.open(server.ws)
        await client.subscribe("1", 'subscription { serviceUpdated(serviceId: "s2") { id status updatedAt } }')
        await client.subscribe("2", "subscription { countdown(start: 1) }")
        assert [(await client.next_data("2"))["data"]["countdown"] for _ in range(2)] == [1, 0]
        assert await client.receive(5) == {"type": "complete", "id": "2"}  # the generator ended
        # Over HTTP, on Strawberry's own router; the subscriber on subs gets the change.
        assert server.graphql('mutation { updateService(id: "s2", status: DOWN) { id status } }') == {
            "updateService": {"id": "s2", "status": "DOWN"}
        }
        updated = (await client.next_data("1"))["data"]["serviceUpdated"]
        assert updated["id"] == "s2" and updated["status"] == "DOWN"
        # Over the socket, on Strawberry's executor through subs.
        await client.subscribe("3", "{ services { id status } }")
        assert {"id": "s2", "status": "DOWN"} in (await client.next_data("3"))["data"]["services"]
        await client.close()
    finally:
        server.stop()
