"""What the engine's small read-only ASGI apps (`/healthz`, `/readyz`,
`/metrics`) share: only `GET` and `HEAD` are answered, and answers are
whole plain responses."""

from typing import Any, List, Optional, Tuple

Scope = Any
Send = Any


async def read_only_method(scope: Scope, send: Send) -> Optional[str]:
    """The request's method when it is an HTTP `GET` or `HEAD`; otherwise
    answers it (a WebSocket is closed with 1008, another method gets 405)
    and returns `None`."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return None
    if scope["type"] != "http":
        return None
    method = str(scope.get("method", "GET"))
    if method not in ("GET", "HEAD"):
        await plain(send, 405, b"Method not allowed\n", [(b"allow", b"GET, HEAD")])
        return None
    return method


async def plain(
    send: Send, status: int, body: bytes, extra: List[Tuple[bytes, bytes]], head: bool = False
) -> None:
    """A whole plain-text response (see `whole`)."""
    await whole(send, status, "text/plain; charset=utf-8", body, extra, head)


async def whole(
    send: Send, status: int, content_type: str, body: bytes, extra: List[Tuple[bytes, bytes]], head: bool = False
) -> None:
    """A whole response of `content_type`; to a `HEAD` (`head`), its headers
    only (with the length the body would have)."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": b"" if head else body})
