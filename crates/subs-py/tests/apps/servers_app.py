"""A Starlette app with subs in front (SubsMiddleware), for the server
matrix test: uvicorn (oldest and newest supported) and Hypercorn."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import subs
from subs import Engine, SubsMiddleware

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

engine = Engine(schema="type Query { ok: Boolean } type Subscription { ticks: Int! }")


async def publish(request: Request) -> JSONResponse:
    await engine.publish("ticks", int(request.query_params["n"]))
    return JSONResponse(engine.stats().as_dict())


app = Starlette(routes=[Route("/publish", publish, methods=["POST"])], lifespan=subs.lifespan(engine))
app.add_middleware(SubsMiddleware, engine=engine, path="/graphql/ws")
