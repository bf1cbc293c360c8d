"""subs: GraphQL subscriptions for FastAPI, Starlette and any ASGI server, on
a Rust engine. See the README for the quick start."""

from ._asgi import SubsASGI, SubsMiddleware
from ._engine import Engine
from ._health import HealthASGI
from ._lifecycle import lifespan
from ._metrics import MetricsASGI, SubsCollector
from ._native import (
    ClientError,
    ConnectionInfo,
    Context,
    ConversionError,
    HttpStream,
    Principal,
    Reject,
    RootContext,
    Server,
    Session,
    Stats,
    SubsError,
    from_json,
    to_json,
)

Info = Context
"""What a resolver and a stream receive as `info` (the same class as `Context`)."""

__all__ = [
    "ClientError",
    "ConnectionInfo",
    "Context",
    "ConversionError",
    "Engine",
    "HealthASGI",
    "HttpStream",
    "Info",
    "MetricsASGI",
    "Principal",
    "Reject",
    "RootContext",
    "Server",
    "Session",
    "Stats",
    "SubsASGI",
    "SubsMiddleware",
    "SubsCollector",
    "SubsError",
    "from_json",
    "lifespan",
    "to_json",
]
