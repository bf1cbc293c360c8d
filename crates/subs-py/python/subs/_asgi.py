"""The ASGI WebSocket endpoint."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, MutableMapping, Optional, Tuple

from ._native import Reject, Session

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


def _headers(scope: Scope) -> list:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]


async def serve_websocket(engine: "Engine", scope: Scope, receive: Receive, send: Send) -> None:
    """Runs one WebSocket connection of an ASGI server through a subs session."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        session = engine.session(list(scope.get("subprotocols") or ()), _headers(scope), _peer(scope))
    except Reject as refused:
        code = refused.args[1] if len(refused.args) > 1 else 4403
        await send({"type": "websocket.close", "code": code, "reason": str(refused.args[0]) if refused.args else ""})
        return
    accept: Dict[str, Any] = {"type": "websocket.accept"}
    if session.subprotocol is not None:
        accept["subprotocol"] = session.subprotocol
    await send(accept)
    await pump(session, receive, send)


async def pump(session: Session, receive: Receive, send: Send) -> None:
    """Moves frames between ASGI `receive`/`send` and `session` until either
    side closes; always ends the session (its subscriptions are removed)."""

    async def reader() -> None:
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

    tasks = (asyncio.ensure_future(reader()), asyncio.ensure_future(writer()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.close()
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
    """An ASGI app serving subs over WebSocket at whatever path it is mounted.

    - any ASGI server or Starlette: `WebSocketRoute("/graphql/ws", engine.asgi())`
      (it is called as `app(scope, receive, send)`);
    - FastAPI: `app.add_api_websocket_route("/graphql/ws", engine.asgi())`
      (FastAPI reads `__signature__` and calls it with `websocket=`).

    Plain HTTP requests get 426 Upgrade Required.
    """

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
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
            await serve_websocket(self.engine, scope, receive, send)
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
                    self.engine.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


__all__: Tuple[str, ...] = ("SubsASGI", "serve_websocket", "pump")
