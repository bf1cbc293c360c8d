"""`@engine.query` / `@engine.mutation`: subs executes queries and mutations
itself from Python root-field resolvers (native server, in process)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Dict, List

import pytest

from subs import ClientError, Engine, Principal, RootContext, SubsError
from support import Client

SCHEMA = """
type Query {
  hello(name: String = "world"): String!
  whoami: User
  syncThread: Boolean!
  fails: String
  failsHard: String!
  unbound: String
}
type User { id: ID! roles: [String!]! kind: String! }
type Mutation { append(item: String!): [String!]! }
type Subscription { ticks: Int! }
"""


def make_engine(log: List[str], expose_errors: bool = False) -> Engine:
    engine = Engine(schema=SCHEMA, expose_errors=expose_errors)
    items: List[str] = []

    @engine.query("hello")
    async def hello(arguments: Dict[str, Any], context: RootContext) -> str:
        await asyncio.sleep(0)
        return f"hello {arguments['name']}"

    @engine.query("whoami")
    def whoami(arguments: Dict[str, Any], context: RootContext) -> Dict[str, Any]:
        return {"id": context.principal.id, "roles": list(context.principal.roles), "kind": context.kind, "extra": 1}

    @engine.query("syncThread")
    def sync_thread(arguments: Dict[str, Any], context: RootContext) -> bool:
        # A plain def does not run on the asyncio loop's thread.
        return threading.current_thread() is not threading.main_thread()

    @engine.query("fails")
    def fails(arguments: Dict[str, Any], context: RootContext) -> str:
        raise ValueError("fails went wrong")

    @engine.query("failsHard")
    async def fails_hard(arguments: Dict[str, Any], context: RootContext) -> str:
        raise ClientError("failsHard went wrong")

    @engine.mutation("append")
    async def append(arguments: Dict[str, Any], context: RootContext) -> List[str]:
        log.append(f"start {context.response_key}")
        for _ in range(5):
            await asyncio.sleep(0)
        items.append(arguments["item"])
        log.append(f"end {context.response_key}")
        return list(items)

    @engine.on_connect
    def auth(payload: Any, request: Any) -> Any:
        user = (payload or {}).get("user")
        return Principal(user, roles=["admin"]) if user else None

    return engine


@pytest.fixture
async def served() -> AsyncIterator[tuple]:
    log: List[str] = []
    engine = make_engine(log)
    server = engine.start_server("127.0.0.1", 0, path="/graphql")
    try:
        yield f"ws://127.0.0.1:{server.port}/graphql", log
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown, 5.0)


async def run(client: Client, id: str, query: str, variables: Any = None, operation_name: Any = None) -> Dict[str, Any]:
    payload: Dict[str, Any] = {"query": query, "variables": variables or {}}
    if operation_name:
        payload["operationName"] = operation_name
    await client.send({"id": id, "type": "subscribe", "payload": payload})
    response = await client.next_data(id)
    assert await client.receive() == {"id": id, "type": "complete"}
    return response


async def test_queries_with_aliases_fragments_variables_and_context(served: tuple) -> None:
    url, _ = served
    client = await Client.open(url, {"user": "ann"})
    response = await run(
        client,
        "1",
        "query Q($n: String) { a: hello(name: $n) hello ...F __typename } fragment F on Query { whoami { id roles kind } }",
        {"n": "ann"},
    )
    assert response == {
        "data": {
            "a": "hello ann",
            "hello": "hello world",
            "whoami": {"id": "ann", "roles": ["admin"], "kind": "query"},
            "__typename": "Query",
        }
    }
    assert await run(client, "2", "query A { hello } query B { syncThread }", operation_name="B") == {
        "data": {"syncThread": True}
    }
    await client.close()


async def test_exceptions_are_field_errors_and_bubble(served: tuple) -> None:
    url, _ = served
    client = await Client.open(url)
    response = await run(client, "1", "{ hello fails unbound }")
    assert response["data"] == {"hello": "hello world", "fails": None, "unbound": None}
    assert [e["path"] for e in response["errors"]] == [["fails"], ["unbound"]]
    # A ValueError is not meant for clients: a generic message.
    assert response["errors"][0]["message"] == "Internal error while resolving the field"
    assert response["errors"][1]["message"] == "Field `Query.unbound` has no resolver on this server"
    response = await run(client, "2", "{ hello failsHard }")
    assert response["data"] is None
    assert response["errors"][0]["path"] == ["failsHard"]
    assert "failsHard went wrong" in response["errors"][0]["message"]
    await client.close()


async def test_mutation_fields_run_one_after_the_other(served: tuple) -> None:
    url, log = served
    client = await Client.open(url)
    response = await run(client, "1", 'mutation { a: append(item: "x") b: append(item: "y") }')
    assert response == {"data": {"a": ["x"], "b": ["x", "y"]}}
    assert log == ["start a", "end a", "start b", "end b"]
    await client.close()


def test_configuration_errors() -> None:
    engine = Engine(schema=SCHEMA)
    with pytest.raises(SubsError, match="`Query` has no field `nope`"):
        engine.query("nope")
    with pytest.raises(SubsError, match="`Mutation` has no field `hello`"):
        engine.mutation("hello")
    with pytest.raises(TypeError, match=r"\(arguments, context\)"):
        engine.query("hello")(lambda arguments: "x")
    engine.query("hello")(lambda arguments, context: "x")
    with pytest.raises(SubsError, match="not both"):
        engine.execute(lambda query, variables, operation_name, principal: {"data": None})
    other = Engine(schema=SCHEMA)
    other.execute(lambda query, variables, operation_name, principal: {"data": None})
    with pytest.raises(SubsError, match="not both"):
        other.query("hello")


async def test_expose_errors_shows_every_exception_text() -> None:
    engine = make_engine([], expose_errors=True)
    server = engine.start_server("127.0.0.1", 0, path="/graphql")
    try:
        client = await Client.open(f"ws://127.0.0.1:{server.port}/graphql")
        response = await run(client, "1", "{ fails }")
        assert response["errors"][0]["message"] == "fails went wrong"
        await client.close()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown, 5.0)
