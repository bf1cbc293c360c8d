"""An engine's Prometheus metrics (every one is listed in docs/operations.md):
an ASGI app answering `GET` (what `SubsMiddleware` serves at `/metrics`), and
a `prometheus_client` collector for applications that already export their
own metrics. The exposition is rendered in Rust from the engine's counters at
scrape time; `prometheus_client` is optional (only `SubsCollector` needs it)."""

from typing import TYPE_CHECKING, Any, Iterator, List, Tuple

from ._probe_http import read_only_method, whole

if TYPE_CHECKING:
    from ._engine import Engine

Scope = Any
Receive = Any
Send = Any

OPENMETRICS = "application/openmetrics-text"


def _accept(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"accept":
            return bytes(value).decode("latin-1")
    return ""


class MetricsASGI:
    """An ASGI app answering `GET` (and `HEAD`) with the engine's metrics:
    Prometheus text, or OpenMetrics when the `Accept` header asks for it.

        app.mount("/metrics", engine.metrics_asgi())
    """

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = await read_only_method(scope, send)
        if method is None:
            return
        content_type, text = self.engine.start().metrics(OPENMETRICS in _accept(scope))
        await whole(send, 200, content_type, text.encode(), [], head=method == "HEAD")


class SubsCollector:
    """A `prometheus_client` collector of the engine's metrics, for an
    application that serves its own registry:

        from prometheus_client import REGISTRY
        REGISTRY.register(engine.prometheus_collector())

    Requires `prometheus_client` (imported when the collector is made)."""

    def __init__(self, engine: "Engine") -> None:
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("SubsCollector needs prometheus_client: pip install prometheus-client") from error
        self._parse = text_string_to_metric_families
        self.engine = engine

    def describe(self) -> List[Any]:
        # Nothing to describe ahead of a scrape: registering does not start the engine.
        return []

    def collect(self) -> Iterator[Any]:
        _, text = self.engine.start().metrics(False)
        yield from self._parse(text)


__all__: Tuple[str, ...] = ("MetricsASGI", "SubsCollector")
