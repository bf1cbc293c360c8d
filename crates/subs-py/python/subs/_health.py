"""Health for load balancers and orchestrators in the ASGI modes: `/healthz`
(the process answers) and `/readyz` (it takes new clients: not draining,
broker connected), and the answer to a new client during a drain (see
`Engine.drain` and docs/operations.md)."""

from typing import TYPE_CHECKING, Any, Tuple

from ._probe_http import plain, read_only_method

if TYPE_CHECKING:
    from ._engine import Engine

Scope = Any
Receive = Any
Send = Any

HEALTHY = "ok\n"
NOT_STARTED = "not ready: engine not started\n"
DRAINING = "This instance is draining: reconnect to another one\n"


class HealthASGI:
    """An ASGI app answering `GET` on a path ending in `/readyz` with the
    engine's readiness, and on any other path with liveness (`/healthz`):

        Route("/healthz", engine.health_asgi()), Route("/readyz", engine.health_asgi())

    `/readyz` answers 503 while the engine drains or its broker is down
    (`ready_when_broker_down=True`: 200 with a "degraded" body then), and
    before an engine with a networked broker started (it connects at the
    app's startup; an in-memory engine starts on the first probe)."""

    def __init__(self, engine: "Engine", *, ready_when_broker_down: bool = False) -> None:
        self.engine = engine
        self.ready_when_broker_down = ready_when_broker_down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = await read_only_method(scope, send)
        if method is None:
            return
        if str(scope.get("path", "")).endswith("/readyz"):
            status, text = self.readiness()
        else:
            status, text = 200, HEALTHY
        await plain(send, status, text.encode(), [], head=method == "HEAD")

    def readiness(self) -> Tuple[int, str]:
        """`(status, body)` of `/readyz`."""
        native = self.engine._native
        if native is None:
            if self.engine._options["broker"] != "memory":
                # A networked broker connects at the app's startup, never here.
                return 503, NOT_STARTED
            native = self.engine._for_request()  # no IO: starts at once
        return native.readiness(self.ready_when_broker_down)


async def refuse_websocket(scope: Scope, send: Send) -> None:
    """Refuses a WebSocket handshake during a drain: 503 with `Retry-After`
    where the server supports ASGI's `websocket.http.response` extension
    (uvicorn does), else a close before the accept (the server answers 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = DRAINING.encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013, "reason": "draining"})


__all__: Tuple[str, ...] = ("HealthASGI",)
