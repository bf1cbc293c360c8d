"""The peers' own schemas served by subs: the Ariadne (or Strawberry) peer's
executable schema handed to `subs.ariadne.engine` (`subs.strawberry.engine`),
as an application with such a schema adopts subs, in front of the same
uvicorn and routes as the peers (bench/peers/common.py).

    PORT=4000 python bench/peers/subs_schema_server.py ariadne
    PORT=4000 python bench/peers/subs_schema_server.py strawberry

`ticks` listens on subs' topic "ticks" (its `topic` argument filters on the
event's `topic`); on Ariadne its `@subscription.field` resolver runs once per
group and event, on Strawberry the event is the value. `countdown` keeps the
library's own generator as a per-subscription stream. Environment as the
peers: PORT, INIT_TIMEOUT_MS, BROKER (memory only). Prints `READY <port>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import common
import subs
from subs import Engine, Principal, Reject, SubsMiddleware

TICKS = "ticks"


def make_engine(library: str) -> Engine:
    options: dict[str, Any] = {"init_timeout": int(os.environ.get("INIT_TIMEOUT_MS", "3000")) / 1000}
    if library == "ariadne":
        import ariadne_server
        import subs.ariadne

        engine = subs.ariadne.engine(ariadne_server.schema, topics={"ticks": TICKS}, **options)
    elif library == "strawberry":
        import strawberry_server
        import subs.strawberry

        engine = subs.strawberry.engine(strawberry_server.schema, topics={"ticks": TICKS}, **options)
    else:
        sys.exit(f"unknown library {library!r}: ariadne or strawberry")

    @engine.on_connect
    def authenticate(payload: Any, request: Any) -> Principal:
        if isinstance(payload, dict) and payload.get("reject") is True:
            raise Reject("Forbidden")  # 4403
        return Principal()

    return engine


def make_app(engine: Engine) -> Starlette:
    publishers: set[asyncio.Future[None]] = set()

    async def publish(request: Request) -> Response:
        try:
            body: dict[str, Any] = json.loads(await request.body())
            topic, count = str(body["topic"]), int(body.get("count", 1))
            filler, interval = "x" * int(body.get("payloadBytes", 0)), int(body.get("intervalUs", 0)) / 1e6
        except (ValueError, KeyError, TypeError) as error:
            return Response(f"bad publish request: {error}\n", status_code=400, media_type="text/plain")

        async def run() -> None:  # as subs' bench server publishes in ASGI mode
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            for seq in range(count):
                if interval:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                await engine.publish(TICKS, {"topic": topic, "seq": seq, "sentAtNs": str(time.time_ns()), "payload": filler})

        task = asyncio.ensure_future(run())
        publishers.add(task)
        task.add_done_callback(publishers.discard)
        return JSONResponse({"accepted": True}, status_code=202)

    async def stats(request: Request) -> Response:
        counters = engine.stats()
        return JSONResponse({"connections": counters.connections, "subscriptions": counters.subscriptions})

    app = Starlette(
        routes=[Route("/publish", publish, methods=["POST"]), Route("/stats", stats, methods=["GET"])],
        lifespan=subs.lifespan(engine),
    )
    app.add_middleware(SubsMiddleware, engine=engine, path="/graphql")
    return app


def main() -> None:
    common.check_broker()
    library = sys.argv[1] if len(sys.argv) > 1 else "ariadne"
    common.serve(make_app(make_engine(library)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
