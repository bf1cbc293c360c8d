"""The same service desk on plain Starlette: only the routing differs.

    uvicorn starlette_app:app --port 8000
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

import subs

from app import engine, graphql_app



def stats(request: Request) -> JSONResponse:
    """The engine's counters, as app.py serves them."""
    return JSONResponse(engine.stats().as_dict())


app = Starlette(
    routes=[
        WebSocketRoute("/graphql/ws", engine.asgi()),
        Route("/graphql", graphql_app.handle_request, methods=["GET", "POST"]),
        Route("/stats", stats, methods=["GET"]),
    ],
    lifespan=subs.lifespan(engine),
)
