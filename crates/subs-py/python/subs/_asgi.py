"""The ASGI endpoint: GraphQL over WebSocket and over HTTP (queries and
mutations, graphql-sse, Apollo multipart) on one path."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import types
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Generator,
    List,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)

from ._health import HealthASGI, refuse_websocket
from ._metrics import MetricsASGI
from ._native import CLOSE_TIMEOUT, HttpStream, Hub, Reject, Session

_logger = logging.getLogger("subs")

if TYPE_CHECKING:
    from ._engine import Engine

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _peer(scope: Scope) -> Optional[str]:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _headers(scope: Scope) -> List[Tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]


async def serve_websocket(
    engine: "Engine", scope: Scope, receive: Receive, send: Send, hub: Optional["_Hub"] = None
) -> None:
    """Runs one WebSocket connection of an ASGI server through a subs session
    (through `hub`, if given, instead of a writer task of its own)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    native = engine._for_request()
    if native.draining:  # a rolling deploy: the client goes to another instance
        await refuse_websocket(scope, send)
        return
    try:
        session = native.session(list(scope.get("subprotocols") or ()), _headers(scope), _peer(scope))
    except Reject as refused:
        code = refused.args[1] if len(refused.args) > 1 else 4403
        await send({"type": "websocket.close", "code": code, "reason": str(refused.args[0]) if refused.args else ""})
        return
    accept: Dict[str, Any] = {"type": "websocket.accept"}
    if session.subprotocol is not None:
        accept["subprotocol"] = session.subprotocol
    await send(accept)
    if hub is None:
        await pump(session, receive, send)
    else:
        await hub.pump(session, receive, send)


async def _read(session: Session, receive: Receive) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await session.receive(text)
            else:
                await session.receive_bytes(message.get("bytes") or b"")
        elif kind == "websocket.disconnect":
            return


def _direct_protocol(send: Send) -> Any:
    """uvicorn's websockets-sansio protocol (its default) behind `send`, when
    `send` is the server's own rather than a framework's wrapper: a batch of
    messages for the connection then leaves in one transport write instead of
    one system call per message, which is most of the cost of an ASGI
    delivery. Anything else gets the standard `send`, one message at a time;
    so does a uvicorn whose protocol lacks what the fast path uses (said once
    in the log, logger "subs")."""
    protocol = getattr(send, "__self__", None)
    kind = type(protocol)
    if kind.__name__ != "WebSocketsSansIOProtocol" or not kind.__module__.startswith("uvicorn."):
        _path_chosen("standard", f"the server's send is not uvicorn's websockets-sansio protocol ({kind.__module__}.{kind.__qualname__})")
        return None
    missing = _fast_path_missing(protocol)
    if missing:
        _path_chosen("standard", f"uvicorn's {kind.__qualname__} lacks {', '.join(missing)}: standard ASGI send")
        return None
    _path_chosen("fast", "uvicorn websockets-sansio: one transport write per batch")
    return protocol


# What the fast path uses of uvicorn's protocol: (attribute, its methods).
_FAST_PATH_NEEDS = (
    ("conn", ("send_text", "data_to_send")),
    ("transport", ("write", "is_closing")),
    ("writable", ("is_set", "wait")),
    ("close_sent", ()),
)
_paths_logged: "set[str]" = set()


def _fast_path_missing(protocol: Any) -> List[str]:
    missing = []
    for name, methods in _FAST_PATH_NEEDS:
        value = getattr(protocol, name, _MISSING)
        if value is _MISSING:
            missing.append(name)
        else:
            missing.extend(f"{name}.{method}" for method in methods if not callable(getattr(value, method, None)))
    return missing


_MISSING = object()


def _path_chosen(path: str, why: str) -> None:
    """Logs, once per process and path, which way connections are written."""
    if path not in _paths_logged:
        _paths_logged.add(path)
        _logger.log(logging.WARNING if "lacks" in why else logging.INFO, "subs ASGI %s path: %s", path, why)


def _plain_frames(protocol: Any) -> bool:
    """No extension (permessage-deflate) rewrites the connection's frames, so
    subs can frame the messages itself, in Rust."""
    return not getattr(protocol.conn, "extensions", None)


def _closing(protocol: Any) -> bool:
    return bool(protocol.close_sent) or protocol.transport.is_closing()


def _writable_now(protocol: Any) -> bool:
    return bool(protocol.writable.is_set()) and not _closing(protocol)


def _write(protocol: Any, frames: Union[List[str], bytes]) -> None:
    """A whole batch in one transport write."""
    if isinstance(frames, bytes):  # framed by subs
        protocol.transport.write(frames)
    else:  # an extension (permessage-deflate) applies: websockets frames each message
        conn = protocol.conn
        for frame in frames:
            conn.send_text(frame.encode())
        protocol.transport.write(b"".join(conn.data_to_send()))


class _Connection:
    """A session attached to a hub: where its frames go, and whether it is over."""

    __slots__ = ("send", "protocol", "done", "finished", "task")

    def __init__(self, send: Send, done: "asyncio.Future[None]", protocol: Any = None) -> None:
        self.send = send
        self.protocol = protocol
        self.done = done
        self.finished = False
        self.task: Optional["asyncio.Task[None]"] = None

    def finish(self) -> None:
        self.finished = True
        if not self.done.done():
            self.done.set_result(None)


async def _send_batch(
    connection: _Connection, frames: Union[List[str], bytes], close: Optional[Tuple[int, str]]
) -> None:
    send = connection.send
    try:
        protocol = connection.protocol
        if protocol is not None:
            if frames:
                if not protocol.writable.is_set():
                    await protocol.writable.wait()  # a slow reader: the server's flow control
                if _closing(protocol):
                    connection.finish()
                    return
                _write(protocol, frames)
        else:
            for frame in frames:
                await send({"type": "websocket.send", "text": frame})
        if close is not None:
            await send({"type": "websocket.close", "code": close[0], "reason": close[1]})
            connection.finish()
    except Exception:  # the client is gone: not an error of the server
        connection.finish()


@types.coroutine
def _resume(coroutine: Any, pending: Any) -> Generator[Any, Any, None]:
    """Continues, in a task, a coroutine that was stepped once and waits on `pending`."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # cancellation, thrown in by the task
            try:
                pending = coroutine.throw(error)
            except StopIteration:
                return
            continue
        try:
            pending = coroutine.send(sent)
        except StopIteration:
            return


class _Hub:
    """The sessions one ASGI app serves on one event loop: a single task waits
    for all of them (one wake-up per batch of ready sessions, not one per
    session) and calls each connection's `send`. A send that does not complete
    at once continues in a task of its own and the session is parked meanwhile
    (its frames wait in its bounded queues), so a slow client holds up no one."""

    def __init__(self) -> None:
        self.native = Hub()
        self.connections: Dict[int, _Connection] = {}
        self.task: Optional["asyncio.Task[None]"] = None

    async def pump(self, session: Session, receive: Receive, send: Send) -> None:
        """Like `pump`, with the hub sending the session's frames."""
        loop = asyncio.get_running_loop()
        protocol = _direct_protocol(send)
        key = self.native.attach(session, framed=protocol is not None and _plain_frames(protocol))
        connection = _Connection(send, loop.create_future(), protocol)
        self.connections[key] = connection
        if self.task is None:
            self.task = loop.create_task(self._run())
        reader = asyncio.ensure_future(_read(session, receive))
        try:
            await asyncio.wait((reader, connection.done), return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.close()
            connection.finish()
            reader.cancel()
            pending = [reader]
            if connection.task is not None:
                connection.task.cancel()
                pending.append(connection.task)
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        native, connections = self.native, self.connections
        try:
            while connections:
                ready = native.take()
                if not ready:
                    await native.ready()
                    continue
                for key, frames, close in ready:
                    connection = connections.get(key)
                    if connection is None:
                        continue
                    if frames is None:  # the session has ended
                        del connections[key]
                        if connection.task is None:
                            connection.finish()
                        else:
                            # Its last batch (with the close) is still on its
                            # way to a peer that is slow to read: the connection
                            # ends once it is written, or after the close
                            # handshake's time, as on subs' own server.
                            connection.task.add_done_callback(lambda _, done=connection: done.finish())  # type: ignore[misc]
                            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, connection.finish)
                    elif connection.finished:
                        continue
                    elif close is None and connection.protocol is not None and _writable_now(connection.protocol):
                        try:  # the common case, inline: no coroutine
                            _write(connection.protocol, frames)
                        except Exception:  # the client is gone: not an error of the server
                            connection.finish()
                    else:
                        self._deliver(key, connection, frames, close)
                # Let the loop read sockets and run other tasks between rounds,
                # even while events keep coming.
                await asyncio.sleep(0)
        finally:
            self.task = None

    def _deliver(
        self, key: int, connection: _Connection, frames: Union[List[str], bytes], close: Optional[Tuple[int, str]]
    ) -> None:
        coroutine = _send_batch(connection, frames, close)
        try:
            pending = coroutine.send(None)
        except StopIteration:  # sent at once: the common case costs no task
            return
        self.native.park(key)
        task = asyncio.get_running_loop().create_task(_resume(coroutine, pending))
        connection.task = task
        task.add_done_callback(functools.partial(self._resumed, key, connection))

    def _resumed(self, key: int, connection: _Connection, task: "asyncio.Task[None]") -> None:
        connection.task = None
        if not task.cancelled():
            task.exception()
        self.native.resume(key)


async def pump(session: Session, receive: Receive, send: Send) -> None:
    """Moves frames between ASGI `receive`/`send` and `session` until either
    side closes; always ends the session (its subscriptions are removed)."""

    async def writer() -> None:
        while True:
            batch = await session.outgoing()
            if batch is None:
                return
            frames, close = batch
            for frame in frames:
                await send({"type": "websocket.send", "text": frame})
            if close is not None:
                await send({"type": "websocket.close", "code": close[0], "reason": close[1]})
                return

    tasks = (asyncio.ensure_future(_read(session, receive)), asyncio.ensure_future(writer()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.close()
        for task in tasks:
            task.cancel()
        # The client may be gone: a failed send is not an error of the server.
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve_http(
    engine: "Engine", scope: Scope, receive: Receive, send: Send, *, graphiql: bool = True
) -> None:
    """Answers one ASGI HTTP request with subs' GraphQL over HTTP endpoint:
    queries and mutations (JSON), and streams for clients that ask for one
    (`Accept: text/event-stream`: graphql-sse, both modes;
    `multipart/mixed;subscriptionSpec=1.0`: Apollo multipart). A stream's
    chunks are sent as they come; a client that disconnects ends it (and its
    subscriptions) at once. `graphiql`: a browser's `GET` gets GraphiQL."""
    native = engine._for_request()
    limit = native.http_body_limit
    body = bytearray()
    more = True
    while more:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            return
        if kind == "http.request":
            body += message.get("body") or b""
            more = bool(message.get("more_body"))
            if len(body) > limit:  # the endpoint answers 413; read no more
                del body[limit + 1 :]
                break
    target = scope.get("raw_path") or scope.get("path", "/").encode()
    query = scope.get("query_string")
    if query:
        target = target + b"?" + query
    headers = [(name, value) for name, value in scope.get("headers", ())]
    status, response_headers, answer = await native.http(
        scope.get("method", "GET"), target.decode("latin-1"), headers, bytes(body), _peer(scope), graphiql
    )
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    if isinstance(answer, HttpStream):
        await _stream(answer, receive, send)
    else:
        await send({"type": "http.response.body", "body": answer})


async def _stream(stream: HttpStream, receive: Receive, send: Send) -> None:
    """Sends `stream`'s chunks until it ends or the client disconnects;
    always closes it (the session and its subscriptions end)."""

    async def writer() -> None:
        while True:
            chunk = await stream.next()
            if chunk is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def watcher() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    tasks = (asyncio.ensure_future(writer()), asyncio.ensure_future(watcher()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stream.close()
        for task in tasks:
            task.cancel()
        # The client may be gone: a failed send is not an error of the server.
        await asyncio.gather(*tasks, return_exceptions=True)


def _websocket_signature() -> Optional[inspect.Signature]:
    try:
        from starlette.websockets import WebSocket
    except ImportError:  # no Starlette/FastAPI: a plain ASGI app
        return None
    return inspect.Signature(
        [inspect.Parameter("websocket", inspect.Parameter.KEYWORD_ONLY, annotation=WebSocket)]
    )


class SubsASGI:
    """An ASGI app serving subs at whatever path it is mounted: GraphQL over
    WebSocket, and GraphQL over HTTP on the same path (queries and mutations,
    graphql-sse in both modes, Apollo multipart subscriptions).

    - any ASGI server or Starlette: `WebSocketRoute("/graphql", engine.asgi())`
      and `Route("/graphql", engine.asgi())` (it is called as
      `app(scope, receive, send)`);
    - FastAPI: `app.add_api_websocket_route("/graphql", engine.asgi())`
      (FastAPI reads `__signature__` and calls it with `websocket=`) and
      `app.add_route("/graphql", engine.asgi())`.

    `http=False`: plain HTTP requests get 426 Upgrade Required instead.
    `graphiql=False`: a browser's `GET` gets no GraphiQL (production).
    """

    def __init__(self, engine: "Engine", *, http: bool = True, graphiql: bool = True) -> None:
        self.engine = engine
        self.http = http
        self.graphiql = graphiql
        self._hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub]" = weakref.WeakKeyDictionary()
        signature = _websocket_signature()
        if signature is not None:
            self.__signature__ = signature

    async def __call__(
        self,
        scope: Optional[Scope] = None,
        receive: Optional[Receive] = None,
        send: Optional[Send] = None,
        *,
        websocket: Any = None,
    ) -> None:
        if websocket is not None:
            scope, receive, send = websocket.scope, websocket.receive, websocket.send
        if scope is None or receive is None or send is None:
            raise TypeError("call as an ASGI app: app(scope, receive, send)")
        kind = scope["type"]
        if kind == "websocket":
            loop = asyncio.get_running_loop()
            hub = self._hubs.get(loop)
            if hub is None:
                hub = self._hubs[loop] = _Hub()
            await serve_websocket(self.engine, scope, receive, send, hub)
        elif kind == "http" and self.http:
            await serve_http(self.engine, scope, receive, send, graphiql=self.graphiql)
        elif kind == "http":
            body = b"this endpoint speaks GraphQL over WebSocket (graphql-transport-ws)\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 426,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"upgrade", b"websocket")],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self.engine.astart()
                    except Exception as error:  # noqa: BLE001 - the server reports it and stops
                        await send({"type": "lifespan.startup.failed", "message": str(error)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.engine.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


class SubsMiddleware:
    """Serves subs at `path` in front of any ASGI app; everything else goes to the app.

        app.add_middleware(SubsMiddleware, engine=engine, path="/graphql/ws")   # FastAPI, Starlette

    `GET /metrics` answers the engine's Prometheus metrics (`metrics_path`
    moves it, `None` leaves that path to the app). `GET /healthz` and
    `GET /readyz` answer liveness and readiness (`health=False` leaves them
    to the app; `ready_when_broker_down=True` keeps `/readyz` at 200,
    "degraded", while the broker is down); `await engine.drain(deadline)`
    turns readiness 503 and sends clients elsewhere (docs/operations.md).

    `path` takes WebSocket connections and GraphQL over HTTP (queries and
    mutations, graphql-sse, Apollo multipart). `http=False` leaves plain HTTP
    at `path` to the app (say, another GraphQL server answering queries
    there), and only WebSocket connections to subs. `graphiql=False`: a
    browser's `GET` at `path` gets no GraphiQL.

    Same protocol as `engine.asgi()`, but ahead of the framework's routing it
    gets the server's own `send`: on uvicorn (websockets-sansio, its default)
    a batch of messages for a connection leaves in one write instead of one
    system call per message, several times cheaper under fan-out.
    """

    def __init__(
        self,
        app: Any,
        engine: "Engine",
        path: str = "/graphql/ws",
        *,
        http: bool = True,
        graphiql: bool = True,
        metrics_path: Optional[str] = "/metrics",
        health: bool = True,
        ready_when_broker_down: bool = False,
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = SubsASGI(engine, graphiql=graphiql)
        self._types = ("websocket", "http") if http else ("websocket",)
        # `GET metrics_path` answers the engine's Prometheus metrics (None:
        # left to the app, e.g. when it registers `engine.prometheus_collector()`).
        self.metrics_path = metrics_path
        self.metrics = MetricsASGI(engine)
        self.health = HealthASGI(engine, ready_when_broker_down=ready_when_broker_down) if health else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.health is not None
            and scope["type"] == "http"
            and scope.get("path") in ("/healthz", "/readyz")
            and scope.get("method") in ("GET", "HEAD")
        ):
            await self.health(scope, receive, send)
        elif (
            scope["type"] == "http"
            and self.metrics_path is not None
            and scope.get("path") == self.metrics_path
            and scope.get("method") in ("GET", "HEAD")
        ):
            await self.metrics(scope, receive, send)
        elif scope["type"] in self._types and self._matches(scope):
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _matches(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        return bool(path == self.path or (root and path == root + self.path))


__all__: Tuple[str, ...] = ("SubsASGI", "SubsMiddleware", "serve_http", "serve_websocket", "pump")
