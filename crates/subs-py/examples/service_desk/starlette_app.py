"""The same service desk on plain Starlette: only the routing differs.

    uvicorn starlette_app:app --port 8000
"""

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

import subs

from app import engine, graphql_app

app = Starlette(
    routes=[
        WebSocketRoute("/graphql/ws", engine.asgi()),
        Route("/graphql", graphql_app.handle_request, methods=["GET", "POST"]),
    ],
    lifespan=subs.lifespan(engine),
)
