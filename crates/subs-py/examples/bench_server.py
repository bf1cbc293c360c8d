"""The benchmark server of docs/bench-contract.md, on subs from Python.

    python bench_server.py --mode asgi     # Starlette on uvicorn, frames pass through Python
    python bench_server.py --mode native   # subs' Rust server on its own threads
    python bench_server.py --mode asgi --asgi route      # behind Starlette's routing: one ASGI send per message
    python bench_server.py --mode asgi --resolver python # ticks go through a Python resolver

Dependencies: `--mode native` needs only subs; `--mode asgi` needs Starlette
and uvicorn: `pip install -r requirements-bench.txt` (next to this file).

Environment: PORT (default 4000), INIT_TIMEOUT_MS (default 3000), BROKER
(`memory` or unset), RESOLVER_TIMEOUT_MS (the engine's resolver deadline;
default: the engine's own). Prints `READY <port>` once it accepts connections.

`/graphql` also answers GraphQL over HTTP in every mode (queries, mutations,
graphql-sse, Apollo multipart); a request's principal comes from its `X-User`
and `X-Roles` headers, and `X-Reject: true` refuses it (403).

Every engine queue and limit is left at its default: what is measured is what
a user gets. Queries and mutations are executed by subs itself, from the
root-field resolvers (`@engine.query`, `@engine.mutation`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any, Dict, Optional, Tuple

from subs import ConnectionInfo, Engine, Info, Principal, Reject, RootContext, SubsMiddleware

SCHEMA = """
type Query {
  hello: String!
  secret: String!
}

type Mutation {
  publish(topic: String!, count: Int! = 1, payloadBytes: Int! = 64): Boolean!
}

type Subscription {
  ticks(topic: String!): Tick!
  countdown(from: Int!): Int!
  viewer(topic: String!): Viewer!
  stalled(topic: String!): Tick!
}

type Viewer {
  seq: Int!
  user: String!
}

type Tick {
  topic: String!
  seq: Int!
  sentAtNs: String!
  payload: String!
}
"""

# Every tick goes to one engine topic and is routed by its `topic` field through
# the registry's index (as in the Rust bench server).
TICKS = "ticks"


def make_engine(python_resolver: bool = False) -> Engine:
    broker = os.environ.get("BROKER", "memory") or "memory"
    options: Dict[str, Any] = {}
    if os.environ.get("RESOLVER_TIMEOUT_MS"):
        options["resolver_timeout"] = int(os.environ["RESOLVER_TIMEOUT_MS"]) / 1000
    engine = Engine(
        schema=SCHEMA,
        broker=broker,
        init_timeout=int(os.environ.get("INIT_TIMEOUT_MS", "3000")) / 1000,
        **options,
    )
    if python_resolver:
        # The same routing, with a Python resolver on top: it runs once per
        # query group and event (stats' `resolverCalls`), never per subscriber.
        @engine.subscription("ticks", topic=TICKS, filters={"topic": "topic"})
        def ticks(event: Dict[str, Any], info: Info) -> Dict[str, Any]:
            return event

    else:
        engine.bind("ticks", topic=TICKS, filters={"topic": "topic"})
    # HISTORY=N: each `ticks` topic (a value of the events' `topic` field)
    # keeps its last N events, numbered, for clients that resume.
    history = int(os.environ.get("HISTORY", "0"))
    if history > 0:
        engine.bind("ticks", history=history, history_per="topic")

    @engine.stream("countdown")
    async def countdown(info: Info, **arguments: Any) -> Any:
        for n in range(int(arguments["from"]), -1, -1):
            yield n

    @engine.subscription("viewer", topic=TICKS, filters={"topic": "topic"})
    def viewer(event: Dict[str, Any], info: Info) -> Dict[str, Any]:
        return {"seq": event["seq"], "user": info.principal.id or "anonymous"}

    @engine.subscription("stalled", topic=TICKS, filters={"topic": "topic"})
    async def stalled(event: Dict[str, Any], info: Info) -> Any:
        # Never answers: the engine's resolver deadline ends it.
        return await asyncio.get_running_loop().create_future()

    @engine.query("hello")
    def hello(arguments: Dict[str, Any], context: RootContext) -> str:
        return "world"

    @engine.query("secret")
    def secret(arguments: Dict[str, Any], context: RootContext) -> str:
        return "s3cret"

    @engine.mutation("publish")
    async def publish(arguments: Dict[str, Any], context: RootContext) -> bool:
        # Like POST /publish with intervalUs 0, from a task on the engine's loop.
        start_loop_publisher(
            engine,
            {"topic": arguments["topic"], "count": arguments["count"], "payloadBytes": arguments["payloadBytes"]},
        )
        return True

    @engine.authorize
    def authorize(principal: Principal, field: str, arguments: Dict[str, Any]) -> bool:
        return field != "secret" or principal.has_role("admin")

    @engine.on_connect
    def authenticate(payload: Optional[Dict[str, Any]], request: ConnectionInfo) -> Optional[Principal]:
        if payload is None:
            # GraphQL over HTTP (no init payload): the principal comes from
            # the request's headers.
            if (request.header("x-reject") or "").lower() == "true":
                raise Reject("Forbidden")
            user = request.header("x-user")
            if not user:
                return None
            roles = [role.strip() for role in (request.header("x-roles") or "").split(",") if role.strip()]
            return Principal(user, roles=roles)
        if payload.get("reject") is True:
            raise Reject("rejected by the bench contract")
        user = payload.get("user")
        if not isinstance(user, str):
            return None
        roles = [role for role in payload.get("roles") or [] if isinstance(role, str)]
        return Principal(user, roles=roles)

    return engine


def publish_request(body: Dict[str, Any]) -> Tuple[str, int, str, float]:
    return (
        str(body["topic"]),
        int(body.get("count", 1)),
        "x" * int(body.get("payloadBytes", 0)),
        int(body.get("intervalUs", 0)) / 1e6,
    )


def start_publisher(engine: Engine, body: Dict[str, Any]) -> None:
    """Publishes `count` ticks on a thread of its own, paced by `intervalUs`;
    `sentAtNs` is stamped as each event is handed to the engine. (Native
    mode: no Python runs on the delivery path, so the thread has the GIL.)"""
    topic, count, filler, interval = publish_request(body)

    def run() -> None:
        next_at = time.perf_counter()
        for seq in range(count):
            if interval:
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            engine.publish_sync(TICKS, {"topic": topic, "seq": seq, "sentAtNs": str(time.time_ns()), "payload": filler})

    threading.Thread(target=run, name="bench-publisher", daemon=True).start()


def start_loop_publisher(engine: Engine, body: Dict[str, Any]) -> None:
    """ASGI mode (and the `publish` mutation in both modes): publishes from a
    task on the running event loop, as an application's mutation would. A thread would wait for the GIL behind the
    loop (one switch interval, 5 ms, per event) and starve the burst.
    `await engine.publish` suspends only while the engine's queue is full, so
    at `intervalUs` 0 the events go as fast as the bus takes them."""
    topic, count, filler, interval = publish_request(body)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for seq in range(count):
            if interval:
                next_at += interval
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await engine.publish(TICKS, {"topic": topic, "seq": seq, "sentAtNs": str(time.time_ns()), "payload": filler})

    task = asyncio.ensure_future(run())
    PUBLISHERS.add(task)
    task.add_done_callback(PUBLISHERS.discard)


# Running publisher tasks (the loop keeps only weak references to tasks).
PUBLISHERS: "set[asyncio.Future[None]]" = set()


def stats_body(engine: Engine) -> bytes:
    stats = engine.stats()
    return json.dumps(
        {
            "connections": stats.connections,
            "subscriptions": stats.subscriptions,
            "groups": stats.groups,
            "resolverCalls": stats.resolver_calls,
            "eventsPublished": stats.events_published,
            "framesQueued": stats.frames_queued,
            "slowConsumerCloses": stats.slow_consumer_closes,
            "eventsReplayed": stats.events_replayed,
            "historyGaps": stats.history_gaps,
        }
    ).encode()


def handle_http(
    engine: Engine, method: str, path: str, body: bytes, on_loop: bool = False
) -> Tuple[int, str, bytes]:
    if method == "POST" and path == "/publish":
        try:
            (start_loop_publisher if on_loop else start_publisher)(engine, json.loads(body))
        except (ValueError, KeyError, TypeError) as error:
            return 400, "text/plain", f"bad publish request: {error}\n".encode()
        return 202, "application/json", b'{"accepted":true}'
    if method == "GET" and path == "/stats":
        return 200, "application/json", stats_body(engine)
    return 404, "text/plain", b"not found\n"


def run_native(engine: Engine, port: int) -> None:
    server = engine.start_server(
        "127.0.0.1", port, path="/graphql", http_handler=lambda m, p, b: handle_http(engine, m, p, b)
    )
    print(f"READY {server.port}", flush=True)
    try:
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        server.shutdown(2.0)


def run_asgi(engine: Engine, port: int, behind_routing: bool = False) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute

    async def http(request: Request) -> Response:
        status, content_type, body = handle_http(
            engine, request.method, request.url.path, await request.body(), on_loop=True
        )
        return Response(body, status_code=status, media_type=content_type)

    routes = [Route("/publish", http, methods=["POST"]), Route("/stats", http, methods=["GET"])]
    if behind_routing:
        graphql = engine.asgi()
        routes += [WebSocketRoute("/graphql", graphql), Route("/graphql", graphql)]
        routes.append(Route("/metrics", engine.metrics_asgi()))  # the middleware serves it itself
    app = Starlette(routes=routes)
    if not behind_routing:
        app.add_middleware(SubsMiddleware, engine=engine, path="/graphql")
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_ping_interval=None,  # graphql-transport-ws has its own keepalive
        ws_max_size=64 * 1024,
        backlog=4096,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        engine.start()  # on this loop
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        bound = port
        for listener in server.servers:
            for sock in listener.sockets:
                bound = sock.getsockname()[1]
        print(f"READY {bound}", flush=True)
        await task

    # The loop uvicorn itself would pick (uvloop with uvicorn[standard]), as
    # `uvicorn app:app` runs in production.
    loop_factory = config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["asgi", "native"], default="asgi")
    parser.add_argument(
        "--asgi",
        choices=["middleware", "route"],
        default="middleware",
        help="ASGI mode: SubsMiddleware in front of the app (default) or a Starlette WebSocketRoute",
    )
    parser.add_argument("--resolver", choices=["binding", "python"], default="binding")
    args = parser.parse_args()
    port = int(os.environ.get("PORT", "4000"))
    engine = make_engine(python_resolver=args.resolver == "python")
    if args.mode == "native":
        run_native(engine, port)
    else:
        run_asgi(engine, port, behind_routing=args.asgi == "route")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
