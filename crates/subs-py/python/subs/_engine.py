"""The `Engine`: schema, bindings and hooks, then sessions, publishing and serving."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from . import _logging, _native
from ._native import Principal, Stats, SubsError

if TYPE_CHECKING:
    from ._asgi import SubsASGI
    from ._health import HealthASGI
    from ._metrics import MetricsASGI, SubsCollector

F = TypeVar("F", bound=Callable[..., Any])

_logger = logging.getLogger("subs")

_NETWORK_BROKERS = ("redis://", "rediss://", "nats://", "tls://")


def _positional_count(function: Callable[..., Any]) -> Tuple[int, bool]:
    """How many positional parameters `function` takes, and whether it has *args."""
    signature = inspect.signature(function)
    count = 0
    variadic = False
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
        elif parameter.kind == parameter.VAR_POSITIONAL:
            variadic = True
    return count, variadic


_OLD_STYLE = (
    "resolvers take (event, info, **arguments) and streams (info, **arguments), "
    "no longer (event, variables[, context]) and (variables[, context]): the variables are info.variables, the field's arguments come by keyword (or info.arguments), "
    "the old context's attributes are on info"
)


def _resolver_call(
    function: Callable[..., Any], what: str, arguments: Sequence[str], *, leading: int
) -> Tuple[bool, Optional[List[str]]]:
    """How the engine calls `function`: whether it takes `info` after its
    `leading` positional parameters (the event), and which of the field's
    `arguments` it takes by keyword (None: all, through `**kwargs`).

    Raises TypeError, naming the parameter, for a signature the engine cannot
    call, such as the old `(event, variables, context)`."""
    parameters = list(inspect.signature(function).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in parameters) or len(positional) < leading:
        expected = "(event, info, **arguments)" if leading else "(info, **arguments)"
        raise TypeError(f"{what} must take {expected}: {_OLD_STYLE}")
    rest = positional[leading:]
    with_info = False
    if rest and rest[0].name not in arguments:
        if rest[0].name in ("variables", "vars", "variable_values"):
            raise TypeError(f"{what}: parameter `{rest[0].name}` is not an info; {_OLD_STYLE}")
        with_info = True
        rest = rest[1:]
    keyword_only = [p for p in parameters if p.kind == p.KEYWORD_ONLY]
    names: List[str] = []
    for parameter in rest + keyword_only:
        if parameter.name in arguments:
            names.append(parameter.name)
        elif parameter.default is parameter.empty:
            raise TypeError(
                f"{what}: parameter `{parameter.name}` is not an argument of the field "
                f"(arguments: {', '.join(arguments) or 'none'}); {_OLD_STYLE}"
            )
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return with_info, None
    return with_info, names


class _StreamRunner:
    """Pulls one async generator on the engine's loop, for a stream field.

    `next()` runs on the loop; `cancel()` may be called from any thread and
    stops the generator (its `finally` blocks run), whether it is suspended
    at a `yield` or running.
    """

    __slots__ = ("_generator", "_loop", "_task", "_done")

    def __init__(self, generator: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._generator = generator
        self._loop = loop
        self._task: Optional[asyncio.Task[Any]] = None
        self._done = False

    async def next(self) -> Tuple[bool, Any]:
        self._task = asyncio.current_task()
        try:
            return True, await self._generator.__anext__()
        except StopAsyncIteration:
            self._done = True
            return False, None
        finally:
            self._task = None

    def cancel(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:  # the loop is closed: nothing left to clean up
            pass

    def _cancel(self) -> None:
        if self._done:
            return
        self._done = True
        if self._task is not None:
            self._task.cancel()
        else:
            aclose = getattr(self._generator, "aclose", None)
            if aclose is not None:
                self._loop.create_task(aclose())


class _PrivateLoop:
    """An asyncio loop on a daemon thread, for engines started from sync code
    (`publish_sync` before any server, `serve()`): coroutine hooks run there."""

    _lock = threading.Lock()
    _loop: Optional[asyncio.AbstractEventLoop] = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="subs-asyncio", daemon=True)
                thread.start()
                cls._loop = loop
            return cls._loop


def _millis(seconds: Optional[float]) -> Optional[int]:
    """A deadline in seconds as the native engine's milliseconds (None: its default)."""
    return None if seconds is None else max(1, int(seconds * 1000))


class Engine:
    """A subs engine: the GraphQL schema, how each root field of `Subscription`
    gets its events, and the security hooks.

    Configure it with the decorators at import time; it starts on first use
    (a connection, `publish`, `serve`, `stats`), on the running asyncio loop
    if there is one (Python resolvers and hooks that are coroutines run on
    that loop), else on a private loop thread.
    """

    def __init__(
        self,
        schema: str,
        *,
        broker: str = "memory",
        init_timeout: float = 3.0,
        keepalive: Optional[float] = 12.0,
        max_frame_bytes: int = 64 * 1024,
        outbound_queue_capacity: Optional[int] = None,
        outbound_queue_bytes: Optional[int] = None,
        resolver_timeout: Optional[float] = None,
        connect_timeout: Optional[float] = None,
        execute_timeout: Optional[float] = None,
        expose_errors: bool = False,
        broker_timeout: float = 10.0,
    ) -> None:
        if broker not in ("memory", "", None) and not (isinstance(broker, str) and broker.startswith(_NETWORK_BROKERS)):
            raise ValueError(f"unknown broker {broker!r}: expected 'memory', 'redis://HOST:PORT' or 'nats://HOST:PORT'")
        self._schema = schema
        self._fields: Dict[str, List[str]] = {name: list(args) for name, args in _native.inspect_schema(schema)}
        query_fields, mutation_fields = _native.inspect_roots(schema)
        self._root_fields: Dict[str, List[str]] = {"Query": list(query_fields), "Mutation": list(mutation_fields)}
        self._queries: Dict[str, Callable[..., Any]] = {}
        self._mutations: Dict[str, Callable[..., Any]] = {}
        self._bindings: Dict[str, Dict[str, Any]] = {}
        self._on_connect: Optional[Callable[..., Any]] = None
        self._authorize: Optional[Callable[..., Any]] = None
        self._execute: Optional[Callable[..., Any]] = None
        self._event_filter: Optional[Callable[..., Any]] = None
        self._event_filter_scope: Optional[Callable[..., Any]] = None
        self._tenant_field: Optional[str] = None
        self._deliver_untagged = False
        self._options: Dict[str, Any] = {
            "broker": broker or "memory",
            "init_timeout_ms": int(init_timeout * 1000),
            "keepalive_ms": 0 if keepalive is None else int(keepalive * 1000),
            "max_frame_bytes": max_frame_bytes,
            # None keeps the engine's defaults (4,096 messages, 1 MiB).
            "outbound_queue_capacity": outbound_queue_capacity,
            "outbound_queue_bytes": outbound_queue_bytes,
            # None keeps the engine's default (subs-core's HookDeadlines, 5 s).
            "resolver_timeout_ms": _millis(resolver_timeout),
            # None keeps the engine's defaults: 10 s for on_connect, 30 s for
            # an execute hook or a query/mutation resolver call.
            "authenticate_timeout_ms": _millis(connect_timeout),
            "execute_timeout_ms": _millis(execute_timeout),
            # Off: an exception's text reaches clients only from
            # `subs.ClientError` (or graphql-core's GraphQLError); the rest
            # get a generic message and the details go to the log.
            "expose_errors": expose_errors,
            # A networked broker that does not answer fails the startup
            # after this long, with a message naming it.
            "broker_connect_timeout_ms": _millis(broker_timeout),
        }
        self._closed = False
        self._servers: List[_native.Server] = []
        self._native: Optional[_native.Engine] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._start_lock = threading.Lock()

    # -- configuration ---------------------------------------------------

    def _check_open(self) -> None:
        if self._native is not None:
            raise SubsError("the engine has started: configure it before the first connection or publish")

    def _binding(self, field: str) -> Dict[str, Any]:
        self._check_open()
        if field not in self._fields:
            known = ", ".join(sorted(self._fields)) or "none"
            raise SubsError(f"`Subscription` has no field `{field}` (fields: {known})")
        return self._bindings.setdefault(field, {"field": field})

    def bind(
        self,
        field: str,
        *,
        topic: Optional[str] = None,
        filters: Optional[Mapping[str, str]] = None,
        history: Optional[int] = None,
        history_per: Optional[str] = None,
        history_max_age: Optional[float] = None,
    ) -> None:
        """Binds root field `field` to `topic` (default: the field's name).

        `filters` maps an argument to the dotted path of the event field it
        filters on (default: the event field named like the argument); a
        subscriber that passes `null` or omits the argument gets every event.

        `history=N` keeps the topic's last `N` events, numbered, so that a
        client that reconnects resumes where it left off (docs/history.md):
        each result then carries `extensions.subs` `{epoch, offset}`, and a
        subscribe with `extensions.subs.resume` gets what it missed.
        `history_per` (a dotted event path) keeps one history per value of
        that event field; `history_max_age` (seconds) also forgets older
        events.
        """
        binding = self._binding(field)
        if history is not None:
            if history < 1:
                raise SubsError(f"`{field}`: history keeps at least one event, not {history}")
            binding["history"] = {"events": history, "per": history_per, "max_age": history_max_age}
        elif history_per is not None or history_max_age is not None:
            raise SubsError(f"`{field}`: history_per and history_max_age need history=N")
        if topic is not None:
            binding["topic"] = topic
        if filters is not None:
            unknown = [a for a in filters if a not in self._fields[field]]
            if unknown:
                raise SubsError(f"`Subscription.{field}` has no argument `{unknown[0]}`")
            binding["filters"] = dict(filters)

    def subscription(
        self,
        field: str,
        *,
        topic: Optional[str] = None,
        filters: Optional[Mapping[str, str]] = None,
        shared: bool = False,
    ) -> Callable[[F], F]:
        """Decorates the resolver of root field `field`:
        `(event, info, **arguments) -> value`, `def` or `async def`, as
        Ariadne's and Strawberry's resolvers are written. `info` (a
        `subs.Info`) has `arguments`, `variables`, `principal`, `context` (a
        dict with `principal` and `init_payload`), `init_payload` and
        `topic`; the field's arguments (variables substituted) come as
        keyword arguments to the parameters named after them, or all of them
        to `**arguments`. `info` may be left out: `(event)`,
        `(event, *, serviceId=None)`.

        It runs once per group of identical subscriptions per event (not once
        per subscriber); its result is the field's value, to which each
        subscriber's selection set is applied. An exception (shown to clients
        only if it is a `ClientError`, see `expose_errors`) becomes a GraphQL
        error in that event's `next` payload; the subscription goes on.

        By default a group holds subscribers of one principal and init payload
        only, and `context.principal` / `context.init_payload` are theirs.
        `shared=True` declares that the resolver does not depend on who asks:
        one group serves every principal, and the context carries the
        anonymous principal and no init payload.

        Each call has the engine's `resolver_timeout` (in seconds, 5 by default): past
        it, the subscribers get a GraphQL error for that event and an
        `async def` is cancelled (it sees `asyncio.CancelledError`). A plain
        `def` runs in a worker thread, never on the engine's event threads; it
        cannot be interrupted, so past the deadline its answer is discarded.
        """

        def decorate(function: F) -> F:
            with_info, keywords = _resolver_call(function, f"resolver of `{field}`", self._fields[field], leading=1)
            self.bind(field, topic=topic, filters=filters)
            binding = self._bindings[field]
            binding["resolver"] = function
            binding["with_info"] = with_info
            binding["keywords"] = keywords
            binding["shared"] = shared
            return function

        return decorate

    def stream(self, field: str) -> Callable[[F], F]:
        """Decorates an async generator `(info, **arguments)` that feeds
        one subscription of `field` (not a topic): each yielded value is sent,
        the subscription completes when the generator ends, and a client that
        leaves cancels it (its `finally` blocks run). `info` and the keyword
        arguments are as for `subscription`."""

        def decorate(function: F) -> F:
            binding = self._binding(field)
            with_info, keywords = _resolver_call(function, f"stream of `{field}`", self._fields[field], leading=0)

            def open_stream(info: _native.Context) -> _StreamRunner:
                arguments = info.arguments
                if keywords is not None:
                    arguments = {name: arguments[name] for name in keywords if name in arguments}
                generator = function(info, **arguments) if with_info else function(**arguments)
                if not hasattr(generator, "__anext__"):
                    raise TypeError(f"stream of `{field}` must be an async generator function")
                assert self._loop is not None
                return _StreamRunner(generator, self._loop)

            binding["stream"] = open_stream
            return function

        return decorate

    def on_connect(self, function: F) -> F:
        """Decorates the authentication hook `(payload, request)`, `def` or
        `async def`, run at `connection_init`. `payload` is the init payload
        (a dict or None); `request` has `headers`, `header(name)` and `peer`.
        Return a `Principal` (or None for an anonymous one); raise
        `Reject(reason)` to close with 4403 (or `Reject(reason, code)`)."""
        self._check_open()
        self._on_connect = function
        return function

    def _root_resolver(self, root: str, field: str, resolvers: Dict[str, Callable[..., Any]]) -> Callable[[F], F]:
        self._check_open()
        if field not in self._root_fields[root]:
            known = ", ".join(self._root_fields[root]) or "none"
            raise SubsError(f"`{root}` has no field `{field}` (fields: {known})")
        if self._execute is not None:
            raise SubsError("an @engine.execute hook executes queries and mutations: give it or root-field resolvers, not both")

        def decorate(function: F) -> F:
            count, variadic = _positional_count(function)
            if not variadic and count < 2:
                raise TypeError(f"resolver of `{root}.{field}` must take (arguments, context)")
            resolvers[field] = function
            return function

        return decorate

    def query(self, field: str) -> Callable[[F], F]:
        """Decorates the resolver of root field `field` of `Query`:
        `(arguments, context) -> value`, `def` or `async def`. subs then
        executes queries itself: each selected root field's resolver runs (a
        query's concurrently), and the operation's selection set is applied to
        its value (aliases, fragments, `@skip`/`@include`, `__typename` and
        introspection as the GraphQL spec says). `arguments` holds the field's
        arguments, variables substituted and defaults applied; `context` is a
        `RootContext` (`principal`, `init_payload`, `variables`, `field`,
        `response_key`, `kind`). An exception becomes a field error (`null`
        there, bubbling up from a non-null field); a selected field without a
        resolver is a field error too. A plain `def` runs on a worker thread,
        an `async def` on the engine's loop. `@engine.authorize` still decides
        first, on every root field the operation selects."""
        return self._root_resolver("Query", field, self._queries)

    def mutation(self, field: str) -> Callable[[F], F]:
        """Decorates the resolver of root field `field` of `Mutation`, like
        `query`; a mutation's root fields run one after the other, in
        document order."""
        return self._root_resolver("Mutation", field, self._mutations)

    def execute(self, function: F) -> F:
        """Decorates the executor of queries and mutations sent over the
        socket: `(query, variables, operation_name, principal) -> dict`,
        `def` or `async def`, returning the whole GraphQL response
        (`{"data": ..., "errors": [...]}`), typically from the library that
        serves your HTTP endpoint:

            @engine.execute
            async def execute(query, variables, operation_name, principal):
                _, result = await ariadne.graphql(schema, {"query": query,
                    "variables": variables, "operationName": operation_name})
                return result

        subs validates the document against its schema first. Without this
        hook such operations get a GraphQL error, unless root-field resolvers
        (`@engine.query`, `@engine.mutation`) execute them: give one or the
        other. Subscriptions never reach it."""
        self._check_open()
        if self._queries or self._mutations:
            raise SubsError("root-field resolvers (@engine.query, @engine.mutation) execute queries and mutations: give them or an @engine.execute hook, not both")
        self._execute = function
        return function

    def authorize(self, function: F) -> F:
        """Decorates `(principal, field, arguments) -> bool`, a plain `def`
        run on every subscribe: False (or `Reject(reason)`) answers that
        operation with a GraphQL error and keeps the connection."""
        self._check_open()
        if inspect.iscoroutinefunction(function):
            raise TypeError("authorize must be a plain function, not async")
        self._authorize = function
        return function

    def event_filter(
        self,
        function: Optional[F] = None,
        *,
        scope: Optional[Callable[[Principal], Optional[str]]] = None,
    ) -> Any:
        """Decorates `(principal, event) -> bool`, checked before an event
        reaches a group of subscribers (row-level security).

        Subscribers share resolver work only within one scope: by default the
        whole principal; pass `scope=lambda p: p.tenant` when the filter
        depends only on the tenant, for bigger, cheaper groups. The filter
        must give the same answer for principals of the same scope."""

        def decorate(f: F) -> F:
            self._check_open()
            if inspect.iscoroutinefunction(f):
                raise TypeError("event_filter must be a plain function, not async")
            self._event_filter = f
            self._event_filter_scope = scope
            return f

        if function is not None:
            return decorate(function)
        return decorate

    def tenant_rule(self, field: str = "tenantId", *, deliver_untagged: bool = False) -> None:
        """Tenant isolation: an event whose `field` (dotted path) holds tenant
        `t` reaches only principals of tenant `t`; events without the field
        reach principals without a tenant (and tenants too if
        `deliver_untagged`)."""
        self._check_open()
        self._tenant_field = field
        self._deliver_untagged = deliver_untagged

    # -- running ---------------------------------------------------------

    def start(self) -> _native.Engine:
        """Starts the engine now, on the running asyncio loop if there is one
        (else on a private loop thread); `async with engine` or `await
        engine.astart()` do it without blocking the loop. Otherwise the first
        `publish`, `serve` or `stats` starts it."""
        native = self._native
        if native is not None:
            return native
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = _PrivateLoop.get()
        return self._start_on(loop)

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> _native.Engine:
        with self._start_lock:
            if self._closed:
                raise SubsError("the engine is closed")
            if self._native is not None:
                return self._native
            self._loop = loop
            _logging.start()
            self._native = _native.Engine(
                self._schema,
                list(self._bindings.values()),
                loop,
                on_connect=self._on_connect,
                authorize=self._authorize,
                event_filter=self._event_filter,
                event_filter_scope=self._event_filter_scope,
                tenant_field=self._tenant_field,
                deliver_untagged_to_tenants=self._deliver_untagged,
                execute=self._execute,
                queries=dict(self._queries) or None,
                mutations=dict(self._mutations) or None,
                **self._options,
            )
            _logger.info("subs engine started (broker %s)", self._options["broker"])
            return self._native

    async def astart(self) -> None:
        """Starts the engine on the running loop (its coroutine resolvers and
        hooks run there). A networked broker connects on a worker thread,
        within `broker_timeout`: the loop is never blocked, and a broker that
        cannot be reached raises `SubsError` naming it."""
        if self._native is not None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_on, loop)

    def _for_request(self) -> _native.Engine:
        """The engine for a connection or request: started at the app's
        startup, or now if it needs no IO to start (the memory broker)."""
        native = self._native
        if native is not None:
            return native
        if self._options["broker"] != "memory":
            raise SubsError(
                "the engine was not started: with a networked broker start it at the app's startup "
                "(`FastAPI(lifespan=subs.lifespan(engine))`, `async with engine:`), never inside a request"
            )
        return self.start()

    async def aclose(self) -> None:
        """Stops the engine: ends its GraphQL-over-HTTP streams and the
        native servers it started, then refuses further use (`SubsError`).
        Open WebSocket connections of an ASGI server end when that server
        shuts down."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            native, self._native = self._native, None
            servers, self._servers = self._servers, []
        loop = asyncio.get_running_loop()
        for server in servers:
            server.stop()
            await loop.run_in_executor(None, server.shutdown, 10.0)
        if native is not None:
            native.close()
            _logger.info("subs engine closed")

    async def __aenter__(self) -> "Engine":  # noqa: PYI034 - Self needs Python 3.11
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def publish(self, topic: str, payload: Any) -> Awaitable[None]:
        """`await engine.publish(topic, payload)`: hands the event to the
        engine (waits only while its queue is full). The payload is converted
        to JSON now; a value without a JSON form raises `ConversionError`
        naming its path."""
        return self.start().publish(topic, payload)

    def publish_sync(self, topic: str, payload: Any) -> None:
        """Publishes from synchronous code or another thread; releases the
        GIL and blocks only while the engine's queue is full. In async code
        use `await engine.publish(...)`."""
        self.start().publish_sync(topic, payload)

    def publish_json(self, topic: str, payload: Union[str, bytes]) -> None:
        """Publishes already-serialized JSON (parsed once, at dispatch)."""
        self.start().publish_json_sync(topic, payload)

    def stats(self) -> Stats:
        """A snapshot of the counters (`connections`, `subscriptions`,
        `groups`, `resolver_calls`, ...)."""
        return self.start().stats()

    def metrics(self, openmetrics: bool = False) -> Tuple[str, str]:
        """The engine's Prometheus metrics: `(content_type, text)`."""
        return self.start().metrics(openmetrics)

    def metrics_asgi(self) -> "MetricsASGI":
        """An ASGI app answering `GET` with the engine's Prometheus metrics."""
        from ._metrics import MetricsASGI

        return MetricsASGI(self)

    def health_asgi(self, *, ready_when_broker_down: bool = False) -> "HealthASGI":
        """An ASGI app answering `GET /healthz` (alive) and, on a path ending
        in `/readyz`, readiness: 503 while draining, before the engine
        started or with the broker down (200 "degraded" then, with
        `ready_when_broker_down`). `SubsMiddleware` serves both by default."""
        from ._health import HealthASGI

        return HealthASGI(self, ready_when_broker_down=ready_when_broker_down)

    async def drain(self, deadline: float = 30.0) -> bool:
        """Drains for a rolling deploy (docs/operations.md): readiness turns
        503 at once, new clients are refused (HTTP 503 with `Retry-After`; a
        WebSocket handshake 503 where the server supports ASGI's
        `websocket.http.response`, else a close before the accept), connected
        WebSocket clients are closed with 1001 and HTTP streams end, in the
        ASGI modes and on the native servers this engine started. Returns
        whether every client left within `deadline` seconds; everything keeps
        serving (`/healthz`, `/metrics`) until the server shuts down."""
        native = self.start()
        self.start_drain()
        loop = asyncio.get_running_loop()
        servers = [loop.run_in_executor(None, server.drain, deadline) for server in list(self._servers)]
        left: bool = await native.drain(deadline)
        for server in servers:
            left = await server and left
        return left

    def start_drain(self) -> None:
        """Starts the drain (see `drain`) and returns at once; callable from
        a signal handler or another thread. Idempotent."""
        self.start().start_drain()
        for server in list(self._servers):
            server.drain(0.0)  # starts it; waiting is `drain`'s

    @property
    def draining(self) -> bool:
        """Whether a drain started."""
        native = self._native
        return native is not None and native.draining

    def prometheus_collector(self) -> "SubsCollector":
        """A `prometheus_client` collector of the engine's metrics (needs prometheus_client)."""
        from ._metrics import SubsCollector

        return SubsCollector(self)

    def asgi(self, *, http: bool = True, graphiql: bool = True) -> "SubsASGI":
        """The endpoint as an ASGI app: WebSocket for Starlette's
        `WebSocketRoute(path, engine.asgi())` (FastAPI:
        `app.add_api_websocket_route(path, engine.asgi())`), and GraphQL over
        HTTP (queries, mutations, graphql-sse, Apollo multipart) for
        `Route(path, engine.asgi())` (FastAPI: `app.add_route(path,
        engine.asgi())`). `http=False` answers plain HTTP with 426.
        `graphiql=False` serves no GraphiQL to browsers (the production
        profile in the guide)."""
        from ._asgi import SubsASGI

        return SubsASGI(self, http=http, graphiql=graphiql)

    def http(
        self,
        method: str,
        target: str,
        headers: Iterable[Tuple[bytes, bytes]],
        body: bytes = b"",
        peer: Optional[str] = None,
        *,
        graphiql: bool = True,
    ) -> Awaitable[Tuple[int, List[Tuple[bytes, bytes]], Union[bytes, _native.HttpStream]]]:
        """GraphQL over HTTP for a custom server: answers one request on the
        endpoint path (`target` is its path and query string, `body` the whole
        body) with `(status, headers, body)`, where `body` is `bytes` or an
        `HttpStream` (Server-Sent Events, multipart) whose `await next()`
        gives each chunk to write, `None` at its end; call its `close()` when
        the client goes away. `subs._asgi.serve_http` is this for ASGI.
        `graphiql`: a browser's `GET` gets GraphiQL and its assets."""
        return self.start().http(method, target, list(headers), body, peer, graphiql)

    def session(
        self,
        subprotocols: Sequence[str],
        headers: Optional[Iterable[Tuple[str, str]]] = None,
        peer: Optional[str] = None,
    ) -> _native.Session:
        """A session for a custom server (see the README's adapter protocol).
        Raises `Reject` when the upgrade is refused."""
        return self.start().session(list(subprotocols), list(headers or ()), peer)

    def start_server(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        path: str = "/graphql",
        http_handler: Optional[Callable[[str, str, bytes], Any]] = None,
        graphiql: bool = True,
    ) -> _native.Server:
        """Native mode: starts subs' Rust WebSocket server on its own threads
        and returns its handle (`port`, `shutdown()`); frames never pass
        through Python. `http_handler(method, path, body) -> (status,
        content_type, body)` answers other HTTP requests. `graphiql=False`
        serves no GraphiQL to browsers on `path`."""
        server = self.start().serve(host, port, path, http_handler, graphiql)
        self._servers.append(server)
        return server

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        path: str = "/graphql",
        http_handler: Optional[Callable[[str, str, bytes], Any]] = None,
        graphiql: bool = True,
    ) -> None:
        """Native mode, blocking until Ctrl-C (then a graceful shutdown)."""
        server = self.start_server(host, port, path=path, http_handler=http_handler, graphiql=graphiql)
        try:
            while not server.wait(0.2):
                pass
        except KeyboardInterrupt:
            server.shutdown()

    async def serve_async(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        path: str = "/graphql",
        http_handler: Optional[Callable[[str, str, bytes], Any]] = None,
        started: Optional[Callable[[_native.Server], None]] = None,
        graphiql: bool = True,
    ) -> None:
        """Native mode from async code: serves until cancelled, then shuts
        down gracefully. `started(server)` is called once it listens."""
        server = self.start_server(host, port, path=path, http_handler=http_handler, graphiql=graphiql)
        if started is not None:
            started(server)
        loop = asyncio.get_running_loop()
        try:
            while not await loop.run_in_executor(None, server.wait, 0.5):
                pass
        finally:
            server.stop()
            await asyncio.shield(loop.run_in_executor(None, server.shutdown, 10.0))
