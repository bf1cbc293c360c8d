"""The engine's lifecycle: started on the application's loop at startup
(`async with`, `astart`, `subs.lifespan`), a bounded broker connect with a
clear error, `aclose`, and no lazy broker connect inside a request."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

import subs
from subs import Engine, SubsError

SCHEMA = "type Query { ok: Boolean } type Subscription { ticks: Int! }"


async def test_async_with_starts_on_the_running_loop_and_closes() -> None:
    async with Engine(schema=SCHEMA) as engine:
        assert engine._loop is asyncio.get_running_loop()
        await engine.publish("ticks", 1)
        assert engine.stats().connections == 0
    with pytest.raises(SubsError, match="the engine is closed"):
        await engine.publish("ticks", 2)
    await engine.aclose()  # closing twice is fine


async def test_a_broker_that_does_not_answer_fails_the_startup_within_its_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does) and never answers
    port = silent.getsockname()[1]
    try:
        engine = Engine(schema=SCHEMA, broker=f"redis://127.0.0.1:{port}", broker_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(SubsError, match=f"cannot connect to the broker at redis://127.0.0.1:{port}"):
            await engine.astart()
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_a_request_never_connects_a_networked_broker() -> None:
    engine = Engine(schema=SCHEMA, broker="redis://127.0.0.1:6379")
    with pytest.raises(SubsError, match="start it at the app's startup"):
        engine._for_request()


async def test_the_lifespan_helper_starts_and_closes_the_engine_with_the_app() -> None:
    engine = Engine(schema=SCHEMA, broker="redis://127.0.0.1:6379")
    app = Starlette(routes=[WebSocketRoute("/graphql", engine.asgi())], lifespan=subs.lifespan(engine))
    async with app.router.lifespan_context(app):
        assert engine._native is not None and engine._loop is asyncio.get_running_loop()
        await engine.publish("ticks", 1)
    with pytest.raises(SubsError, match="the engine is closed"):
        engine.stats()


async def test_the_endpoint_answers_the_asgi_lifespan_protocol() -> None:
    """Mounted as the ASGI app itself, the endpoint starts the engine at
    `lifespan.startup` and reports a broker failure as `startup.failed`."""
    engine = Engine(schema=SCHEMA, broker="redis://127.0.0.1:1", broker_timeout=2)
    incoming = [{"type": "lifespan.startup"}]
    sent = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await engine.asgi()({"type": "lifespan"}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "cannot connect to the broker at redis://127.0.0.1:1" in sent[0]["message"]
