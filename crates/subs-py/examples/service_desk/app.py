"""The service desk: FastAPI + Ariadne for queries and mutations on /graphql,
subs for subscriptions on /graphql/ws, from the same Ariadne schema
(`subs.ariadne`), and a live service board at /.

    pip install -r requirements.txt      (subs itself: pip install ../..)

    uvicorn app:app --port 8000          (from this directory)

Open http://127.0.0.1:8000/ for the board (the same page as the Rust service
desk's), and http://127.0.0.1:8000/graphql/ws in a browser for GraphiQL,
served by subs (its queries and mutations run on Ariadne's executor).

Subscribe with any graphql-transport-ws client (graphql-ws, Apollo, gql):

    subscription { serviceUpdated(serviceId: "s1") { id name status } }

then run a mutation on /graphql:

    mutation { updateService(id: "s1", status: DEGRADED) { id status } }
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from ariadne import MutationType, QueryType, SubscriptionType, make_executable_schema
from ariadne.asgi import GraphQL
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

import subs.ariadne
from subs import Principal, Reject, SubsMiddleware

SCHEMA = """
enum ServiceStatus { OPERATIONAL DEGRADED DOWN }

type Service {
  id: ID!
  name: String!
  status: ServiceStatus!
  updatedAt: String!
}

type ServiceRequest {
  id: ID!
  serviceId: ID!
  title: String!
  requester: String
  createdAt: String!
}

type ServiceStatusChange {
  serviceId: ID!
  previous: ServiceStatus!
  current: ServiceStatus!
  at: String!
}

type Query {
  services: [Service!]!
  service(id: ID!): Service
  serviceRequests: [ServiceRequest!]!
}

type Mutation {
  updateService(id: ID!, name: String, status: ServiceStatus): Service!
  changeServiceStatus(id: ID!, status: ServiceStatus!): ServiceStatusChange!
  createServiceRequest(serviceId: ID!, title: String!): ServiceRequest!
  fileServiceRequest(serviceId: ID!, title: String!): ServiceRequest!
}

type Subscription {
  serviceUpdated(serviceId: ID): Service!
  newServiceRequest: ServiceRequest!
  serviceStatusChanged(serviceId: ID): ServiceStatusChange!
}
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


SERVICES: Dict[str, Dict[str, Any]] = {
    "s1": {"id": "s1", "name": "Email", "status": "OPERATIONAL", "updatedAt": now()},
    "s2": {"id": "s2", "name": "VPN", "status": "OPERATIONAL", "updatedAt": now()},
    "s3": {"id": "s3", "name": "Printing", "status": "DEGRADED", "updatedAt": now()},
}
REQUESTS: list = []
_request_ids = itertools.count(1)

# Tokens a client may send in its connection_init payload ({"token": "..."}).
TOKENS = {"agent-token": Principal("agent-1", roles=["agent"]), "viewer-token": Principal("viewer-1")}

# --- queries and mutations (Ariadne) -----------------------------------------

query = QueryType()
mutation = MutationType()
subscription = SubscriptionType()


@subscription.field("serviceUpdated")
def resolve_service_updated(service: Dict[str, Any], info: Any, serviceId: Optional[str] = None) -> Dict[str, Any]:
    # On subs: runs once per group of identical subscriptions per event, not per subscriber.
    return {**service, "name": service["name"].strip()}


@query.field("services")
def resolve_services(*_: Any) -> list:
    return list(SERVICES.values())


@query.field("service")
def resolve_service(*_: Any, id: str) -> Optional[Dict[str, Any]]:
    return SERVICES.get(id)


@query.field("serviceRequests")
def resolve_requests(*_: Any) -> list:
    return REQUESTS


@mutation.field("updateService")
async def resolve_update_service(*_: Any, id: str, name: Optional[str] = None, status: Optional[str] = None) -> Dict[str, Any]:
    service = SERVICES.setdefault(id, {"id": id, "name": name or id, "status": "OPERATIONAL", "updatedAt": now()})
    previous = service["status"]
    if name is not None:
        service["name"] = name
    if status is not None:
        service["status"] = status
    service["updatedAt"] = now()
    await engine.publish("services", service)
    if status is not None and status != previous:
        change = {"serviceId": id, "previous": previous, "current": status, "at": service["updatedAt"]}
        await engine.publish("service_status", change)
    return service


@mutation.field("changeServiceStatus")
async def resolve_change_status(*_: Any, id: str, status: str) -> Dict[str, Any]:
    previous = SERVICES[id]["status"] if id in SERVICES else "OPERATIONAL"
    service = await resolve_update_service(id=id, status=status)
    return {"serviceId": id, "previous": previous, "current": status, "at": service["updatedAt"]}


@mutation.field("fileServiceRequest")
@mutation.field("createServiceRequest")
async def resolve_create_request(_: Any, info: Any, serviceId: str, title: str) -> Dict[str, Any]:
    request = {
        "id": f"r{next(_request_ids)}",
        "serviceId": serviceId,
        "title": title,
        "requester": None,
        "createdAt": now(),
    }
    REQUESTS.append(request)
    await engine.publish("service_requests", request)
    return request


executable_schema = make_executable_schema(SCHEMA, query, mutation, subscription)
graphql_app = GraphQL(executable_schema)

# --- subscriptions on subs ---------------------------------------------------
# The schema above, its queries and mutations (Ariadne's executor, over the
# socket too) and its subscription resolvers; subs adds the topics.
engine = subs.ariadne.engine(
    executable_schema,
    topics={"serviceUpdated": "services", "newServiceRequest": "service_requests", "serviceStatusChanged": "service_status"},
)
engine.bind("serviceUpdated", filters={"serviceId": "id"})  # serviceStatusChanged filters on event["serviceId"]


@engine.on_connect
async def authenticate(payload: Optional[Dict[str, Any]], request: Any) -> Optional[Principal]:
    token = (payload or {}).get("token")
    if token is None:
        return None  # anonymous
    principal = TOKENS.get(token)
    if principal is None:
        raise Reject("invalid token")  # closes the connection with 4403
    return principal


app = FastAPI(title="Service desk", lifespan=subs.lifespan(engine))  # starts subs with the app
# In front of FastAPI's routing: on uvicorn a connection's queued messages
# leave in one write (`app.add_api_websocket_route("/graphql/ws",
# engine.asgi())` works too; starlette_app.py mounts it as a route).
app.add_middleware(SubsMiddleware, engine=engine, path="/graphql/ws")
app.add_route("/graphql", graphql_app.handle_request, methods=["GET", "POST"])


# The live service board, shared with the Rust service desk: queries and
# mutations over HTTP to Ariadne, subscriptions over subs' WebSocket (whose
# path also serves the graphql-ws client the page imports).
BOARD = Path(__file__).resolve().parents[3] / "subs-adapters" / "examples" / "service-board"


@app.get("/", response_class=HTMLResponse)
def board() -> str:
    page = (BOARD / "index.html").read_text()
    return page.replace("{{HTTP_PATH}}", "/graphql").replace("{{WS_PATH}}", "/graphql/ws")


@app.get("/board.js")
def board_js() -> Response:
    return Response((BOARD / "board.js").read_bytes(), media_type="text/javascript")


@app.get("/board.css")
def board_css() -> Response:
    return Response((BOARD / "board.css").read_bytes(), media_type="text/css")


@app.get("/stats")
def stats() -> Dict[str, int]:
    return engine.stats().as_dict()
