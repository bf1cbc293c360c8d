"""The benchmark server of docs/bench-contract.md on Ariadne.

A peer of subs' Python bench server (crates/subs-py/examples/bench_server.py,
ASGI mode): the same uvicorn, routes and bus, with Ariadne (graphql-core)
executing every event once per subscriber, as Ariadne does.

    PORT=4000 python bench/peers/ariadne_server.py

Environment: PORT (default 4000), INIT_TIMEOUT_MS (default 3000), BROKER
(`memory` or unset). Prints `READY <port>` once it accepts connections.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ariadne import QueryType, SubscriptionType, make_executable_schema
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLTransportWSHandler
from ariadne.asgi.handlers.graphql_transport_ws import ClientContext
from graphql import GraphQLResolveInfo
from starlette.websockets import WebSocket

import common

TYPE_DEFS = """
type Query { hello: String! }

type Subscription {
  ticks(topic: String!): Tick!
  countdown(from: Int!): Int!
}

type Tick {
  topic: String!
  seq: Int!
  sentAtNs: String!
  payload: String!
}
"""

Tick = dict[str, Any]  # resolved by graphql-core's default resolver, key by key


def make_tick(topic: str, seq: int, sent_at_ns: str, payload: str) -> Tick:
    return {"topic": topic, "seq": seq, "sentAtNs": sent_at_ns, "payload": payload}


bus: common.Bus[Tick] = common.Bus()
query = QueryType()
subscription = SubscriptionType()


@query.field("hello")
def resolve_hello(*_: Any) -> str:
    return "hello"


@subscription.source("ticks")
async def ticks_source(_: Any, info: GraphQLResolveInfo[Any], topic: str) -> AsyncGenerator[Tick, None]:
    with bus.subscribe(topic) as queue:
        while True:
            yield await queue.get()


@subscription.field("ticks")
def resolve_tick(tick: Tick, info: GraphQLResolveInfo[Any], topic: str) -> Tick:
    return tick


@subscription.source("countdown")
async def countdown_source(_: Any, info: GraphQLResolveInfo[Any], **args: int) -> AsyncGenerator[int, None]:
    with bus.counted():
        for n in range(args["from"], -1, -1):
            yield n


@subscription.field("countdown")
def resolve_countdown(n: int, info: GraphQLResolveInfo[Any], **args: int) -> int:
    return n


schema = make_executable_schema(TYPE_DEFS, query, subscription)


def rejected(payload: Any) -> bool:
    """The contract's authentication rule."""
    return isinstance(payload, dict) and payload.get("reject") is True


class BenchTransportWSHandler(GraphQLTransportWSHandler):
    """Ariadne's graphql-transport-ws handler, refusing with 4403.

    Stock Ariadne closes a connection its `on_connect` hook refused with code
    1000 (mirumee/ariadne#1122); graphql-ws and the contract say 4403, so
    the refusal is made here, before the stock handling of `connection_init`.
    """

    async def handle_websocket_connection_init_message(
        self, websocket: WebSocket, message: dict[str, Any], client_context: ClientContext
    ) -> None:
        if not client_context.connection_init_received and rejected(message.get("payload")):
            client_context.connection_init_received = True
            await websocket.close(code=4403, reason="Forbidden")
            return
        await super().handle_websocket_connection_init_message(websocket, message, client_context)


def main() -> None:
    common.check_broker()
    graphql = GraphQL(
        schema,
        debug=False,
        websocket_handler=BenchTransportWSHandler(connection_init_wait_timeout=common.init_timeout()),
    )
    app, _ = common.make_app(graphql, bus, make_tick)
    common.serve(app)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
