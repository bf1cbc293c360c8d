"""The service desk on Strawberry: FastAPI + Strawberry for queries and
mutations on /graphql, subs for subscriptions on /graphql/ws, from the same
`strawberry.Schema` (`subs.strawberry`).

    pip install -r requirements.txt      (subs itself: pip install ../..)
    uvicorn strawberry_app:app --port 8000
"""

from __future__ import annotations

import asyncio
import enum
from datetime import datetime, timezone
from typing import AsyncGenerator, Dict, List, Optional

import strawberry
from fastapi import FastAPI
from strawberry.fastapi import GraphQLRouter

import subs.strawberry
from subs import SubsMiddleware


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


@strawberry.enum
class ServiceStatus(enum.Enum):
    OPERATIONAL = "OPERATIONAL"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


@strawberry.type
class Service:
    id: strawberry.ID
    name: str
    status: ServiceStatus
    updated_at: str


SERVICES: Dict[str, Service] = {
    "s1": Service(id=strawberry.ID("s1"), name="Email", status=ServiceStatus.OPERATIONAL, updated_at=now()),
    "s2": Service(id=strawberry.ID("s2"), name="VPN", status=ServiceStatus.OPERATIONAL, updated_at=now()),
}


@strawberry.type
class Query:
    @strawberry.field
    def services(self) -> List[Service]:
        return list(SERVICES.values())


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def update_service(self, id: strawberry.ID, status: ServiceStatus) -> Service:
        service = SERVICES[id]
        service.status, service.updated_at = status, now()
        # What subscribers of `serviceUpdated` receive: the object as GraphQL names it.
        await engine.publish("services", {"id": service.id, "name": service.name, "status": status.value, "updatedAt": service.updated_at})
        return service


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def service_updated(self, service_id: Optional[strawberry.ID] = None) -> AsyncGenerator[Service, None]:
        # On subs this field listens on the "services" topic (below); this
        # generator is what a plain Strawberry server would run instead.
        yield SERVICES[service_id or "s1"]

    @strawberry.subscription
    async def countdown(self, info: strawberry.Info, start: int = 3) -> AsyncGenerator[int, None]:
        # Not bound to a topic: on subs, a per-subscription stream fed by this generator.
        for n in range(start, -1, -1):
            yield n
            await asyncio.sleep(0)


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)

engine = subs.strawberry.engine(schema, topics={"serviceUpdated": "services"})
engine.bind("serviceUpdated", filters={"serviceId": "id"})

app = FastAPI(title="Service desk (Strawberry)", lifespan=subs.lifespan(engine))
app.include_router(GraphQLRouter(schema), prefix="/graphql")
app.add_middleware(SubsMiddleware, engine=engine, path="/graphql/ws")
