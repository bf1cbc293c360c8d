"""The benchmark server of docs/bench-contract.md on Strawberry GraphQL.

A peer of subs' Python bench server (crates/subs-py/examples/bench_server.py,
ASGI mode): the same uvicorn, routes and bus, with Strawberry executing every
event once per subscriber, as Strawberry does.

    PORT=4000 python bench/peers/strawberry_server.py

Environment: PORT (default 4000), INIT_TIMEOUT_MS (default 3000), BROKER
(`memory` or unset). Prints `READY <port>` once it accepts connections.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

import common


@strawberry.type
class Tick:
    topic: str
    seq: int
    sent_at_ns: str  # sentAtNs in the schema (Strawberry camel-cases names)
    payload: str


def make_tick(topic: str, seq: int, sent_at_ns: str, payload: str) -> Tick:
    return Tick(topic=topic, seq=seq, sent_at_ns=sent_at_ns, payload=payload)


bus: common.Bus[Tick] = common.Bus()


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hello"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, topic: str) -> AsyncGenerator[Tick, None]:
        with bus.subscribe(topic) as queue:
            while True:
                yield await queue.get()

    @strawberry.subscription
    async def countdown(self, from_: Annotated[int, strawberry.argument(name="from")]) -> AsyncGenerator[int, None]:
        with bus.counted():
            for n in range(from_, -1, -1):
                yield n


schema = strawberry.Schema(query=Query, subscription=Subscription)


class BenchGraphQL(GraphQL):
    """Strawberry's ASGI view with the contract's authentication hook."""

    async def on_ws_connect(self, context: Any) -> UnsetType | dict[str, object] | None:
        params = context.get("connection_params")
        if isinstance(params, dict) and params.get("reject") is True:
            raise ConnectionRejectionError()  # Strawberry closes with 4403 Forbidden
        return await super().on_ws_connect(context)


def main() -> None:
    common.check_broker()
    graphql = BenchGraphQL(
        schema,
        graphql_ide=None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=common.init_timeout(),
    )
    app, _ = common.make_app(graphql, bus, make_tick)
    common.serve(app)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
