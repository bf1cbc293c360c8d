"""Type stubs of the native module (checked by `python -m mypy.stubtest subs._native`)."""

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, final

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_DEPTH",
    "ConnectionInfo",
    "Context",
    "ClientError",
    "ConversionError",
    "Engine",
    "HttpStream",
    "Hub",
    "Principal",
    "Reject",
    "RootContext",
    "Server",
    "Session",
    "Stats",
    "SubsError",
    "drain_logs",
    "dropped_logs",
    "from_json",
    "inspect_roots",
    "inspect_schema",
    "to_json",
]

MAX_DEPTH: int
CLOSE_TIMEOUT: float

class SubsError(Exception):
    """A configuration or engine error (bad schema, unknown field, broker unreachable, engine closed)."""
class ConversionError(ValueError):
    """A value without a JSON form (the message names its path)."""
class Reject(Exception):
    """Raised by a hook to refuse: `Reject(reason)` (4403 in on_connect, a GraphQL error in authorize) or `Reject(reason, code)`."""
class ClientError(Exception):
    """An error whose message is meant for the client (a GraphQL error)."""

@final
class Principal:
    """Who is connected: `id`, `tenant`, `roles`, `claims`; `Principal()` is anonymous."""

    def __new__(
        cls,
        id: str = ...,
        tenant: Optional[str] = None,
        roles: Sequence[str] = ...,
        claims: Any = None,
    ) -> Principal: ...
    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> Optional[str]: ...
    @property
    def roles(self) -> Tuple[str, ...]: ...
    @property
    def claims(self) -> Any: ...
    @property
    def is_anonymous(self) -> bool: ...
    def has_role(self, role: str) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ConnectionInfo:
    """The request of a connection, for `on_connect`: `headers`, `header(name)`, `peer`."""

    @property
    def headers(self) -> Dict[str, str]: ...
    def header(self, name: str) -> Optional[str]: ...
    @property
    def peer(self) -> Optional[str]: ...

@final
class Context:
    """A resolver's and a stream's `info` (exported as `subs.Info` too)."""

    @property
    def topic(self) -> str:
        """The topic of the event (`""` for streams)."""
    @property
    def arguments(self) -> Dict[str, Any]:
        """The root field's arguments, variables substituted."""
    @property
    def variables(self) -> Dict[str, Any]:
        """The operation's variables (coerced, defaults applied)."""
    @property
    def context(self) -> Dict[str, Any]:
        """A dict like Ariadne's and Strawberry's context value: `principal`
        and `init_payload`."""
    @property
    def principal(self) -> Principal:
        """The subscriber's principal (anonymous for a `shared=True` resolver)."""
    @property
    def init_payload(self) -> Optional[Dict[str, Any]]:
        """The `connection_init` payload (None for a `shared=True` resolver)."""

@final
class RootContext:
    """A query or mutation root-field resolver's context: `kind`, `field`, `response_key`, `variables`, `principal`, `init_payload`."""

    @property
    def kind(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def response_key(self) -> str: ...
    @property
    def variables(self) -> Dict[str, Any]: ...
    @property
    def principal(self) -> Principal: ...
    @property
    def init_payload(self) -> Optional[Dict[str, Any]]: ...

@final
class Stats:
    """A snapshot of the engine's counters (`as_dict()` for all of them)."""

    @property
    def connections(self) -> int: ...
    @property
    def subscriptions(self) -> int: ...
    @property
    def groups(self) -> int: ...
    @property
    def events_published(self) -> int: ...
    @property
    def events_dispatched(self) -> int: ...
    @property
    def frames_queued(self) -> int: ...
    @property
    def frames_dropped(self) -> int: ...
    @property
    def slow_consumer_closes(self) -> int: ...
    @property
    def resolver_calls(self) -> int: ...
    @property
    def resolver_errors(self) -> int: ...
    @property
    def resolver_timeouts(self) -> int: ...
    @property
    def resolver_events_dropped(self) -> int: ...
    @property
    def events_filtered(self) -> int: ...
    @property
    def invalid_events(self) -> int: ...
    @property
    def events_replayed(self) -> int:
        """Events replayed from a topic's history to resuming subscribers."""
    @property
    def history_gaps(self) -> int:
        """Resumes answered with a `HISTORY_GAP`."""
    @property
    def security_rejections(self) -> int: ...
    @property
    def broker_published(self) -> int: ...
    @property
    def broker_received(self) -> int: ...
    @property
    def broker_reconnects(self) -> int: ...
    @property
    def broker_missed(self) -> int: ...
    def as_dict(self) -> Dict[str, int]: ...

@final
class Session:
    """One WebSocket connection driven by a custom server (see the README's adapter protocol)."""

    @property
    def subprotocol(self) -> Optional[str]: ...
    @property
    def id(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def receive(self, text: str) -> Awaitable[None]:
        """Hands the session one text frame from the client."""
    def receive_bytes(self, data: bytes) -> Awaitable[None]: ...
    def outgoing(self) -> Awaitable[Optional[Tuple[List[str], Optional[Tuple[int, str]]]]]:
        """The next batch to send, `(frames, close)`; None once the session ended."""
    def close(self) -> None: ...

@final
class HttpStream:
    """A streamed HTTP answer (Server-Sent Events, multipart): `await next()` gives each chunk, None at its end."""

    @property
    def closed(self) -> bool: ...
    def next(self) -> Awaitable[Optional[bytes]]: ...
    def close(self) -> None: ...

@final
class Hub:
    """Internal: the ASGI writer of every connection of one event loop."""

    def __new__(cls) -> Hub: ...
    def attach(self, session: Session, framed: bool = False) -> int: ...
    def take(self) -> List[Tuple[int, Optional[Union[List[str], bytes]], Optional[Tuple[int, str]]]]: ...
    def ready(self) -> Awaitable[None]: ...
    def park(self, key: int) -> None: ...
    def resume(self, key: int) -> None: ...
    def __len__(self) -> int: ...

@final
class Server:
    """subs' native Rust server (native mode): `port`, `host`, `wait`, `stop`, `shutdown`."""

    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    def wait(self, timeout: float) -> bool: ...
    def shutdown(self, timeout: float = 10.0) -> bool:
        """Graceful shutdown within `timeout` seconds; True if it completed."""
    def drain(self, deadline: float = 30.0) -> bool:
        """Stops admitting clients, sends the connected ones away and waits for them (at most `deadline` seconds); True if all left."""
    @property
    def draining(self) -> bool:
        """Whether a drain has started."""
    def stop(self) -> None: ...

@final
class Engine:
    """The native engine; build it through `subs.Engine`, which collects the decorators."""

    def __new__(
        cls,
        schema: str,
        bindings: Sequence[Mapping[str, Any]],
        event_loop: asyncio.AbstractEventLoop,
        *,
        on_connect: Optional[Callable[..., Any]] = None,
        authorize: Optional[Callable[..., Any]] = None,
        event_filter: Optional[Callable[..., Any]] = None,
        event_filter_scope: Optional[Callable[..., Any]] = None,
        tenant_field: Optional[str] = None,
        deliver_untagged_to_tenants: bool = False,
        init_timeout_ms: Optional[int] = None,
        max_frame_bytes: Optional[int] = None,
        outbound_queue_capacity: Optional[int] = None,
        outbound_queue_bytes: Optional[int] = None,
        keepalive_ms: Optional[int] = None,
        broker: Optional[str] = None,
        execute: Optional[Callable[[str, Dict[str, Any], Optional[str], Principal], Any]] = None,
        resolver_timeout_ms: Optional[int] = None,
        authenticate_timeout_ms: Optional[int] = None,
        execute_timeout_ms: Optional[int] = None,
        queries: Optional[Mapping[str, Callable[[Dict[str, Any], RootContext], Any]]] = None,
        mutations: Optional[Mapping[str, Callable[[Dict[str, Any], RootContext], Any]]] = None,
        expose_errors: bool = False,
        broker_connect_timeout_ms: Optional[int] = None,
    ) -> Engine: ...
    def close(self) -> None:
        """Ends the engine's GraphQL-over-HTTP streams (`subs.Engine.aclose`)."""
    def publish(self, topic: str, payload: Any) -> Awaitable[None]:
        """Publishes an event (converted now; waits only while the queue is full)."""
    def publish_sync(self, topic: str, payload: Any) -> None:
        """Publishes from synchronous code (any thread), without the GIL."""
    def publish_json_sync(self, topic: str, payload: Union[str, bytes]) -> None:
        """Publishes already-serialized JSON."""
    def session(
        self,
        subprotocols: Sequence[str],
        headers: Optional[Sequence[Tuple[str, str]]] = None,
        peer: Optional[str] = None,
    ) -> Session: ...
    def drain(self, deadline: float = 30.0) -> Awaitable[bool]:
        """Drains the ASGI modes: readiness 503, new clients refused, sessions closed with 1001, streams ended; whether all left in time."""
    def start_drain(self) -> None:
        """Starts the drain and returns at once."""
    @property
    def draining(self) -> bool:
        """Whether a drain of the ASGI modes started."""
    def readiness(self, ready_when_broker_down: bool = False) -> Tuple[int, str]:
        """What `/readyz` answers: `(status, body)`."""
    def serve(
        self,
        host: str,
        port: int,
        path: str = "/graphql",
        http_handler: Optional[Callable[[str, str, bytes], Any]] = None,
        graphiql: bool = True,
    ) -> Server: ...
    def http(
        self,
        method: str,
        target: str,
        headers: Sequence[Tuple[bytes, bytes]],
        body: bytes,
        peer: Optional[str] = None,
        graphiql: bool = True,
    ) -> Awaitable[Tuple[int, List[Tuple[bytes, bytes]], Union[bytes, HttpStream]]]: ...
    @property
    def http_body_limit(self) -> int: ...
    def stats(self) -> Stats:
        """A snapshot of the counters."""
    def metrics(self, openmetrics: bool = False) -> Tuple[str, str]:
        """The Prometheus exposition: `(content_type, text)`."""
    def registry_is_empty(self) -> bool: ...
    def subscription_fields(self) -> List[str]: ...
    def subscription_arguments(self, field: str) -> Optional[List[str]]: ...

def inspect_roots(sdl: str) -> Tuple[List[str], List[str]]: ...
def inspect_schema(sdl: str) -> List[Tuple[str, List[str]]]: ...
def to_json(value: Any, root: str = "value") -> str:
    """`value` as JSON under the package's type mapping (ConversionError names the path)."""
def from_json(text: str) -> Any:
    """JSON text as Python values."""
def drain_logs(timeout: float) -> List[Tuple[int, str, str]]: ...
def dropped_logs() -> int: ...
