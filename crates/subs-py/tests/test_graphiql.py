"""GraphiQL from the wheel: a browser's GET on the endpoint gets the page and
its files (embedded in the extension, under a strict Content-Security-Policy)
in every mode, `graphiql=False` turns it off, and the service desk serves its
live board. The page running in Chromium is `cargo xtask browser`'s job."""

from __future__ import annotations

import urllib.request
from typing import Iterator

import httpx
import pytest

from subs import Engine
from support import Server, bench_server

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
MODES = {
    "middleware": ["--mode", "asgi"],
    "route": ["--mode", "asgi", "--asgi", "route"],
    "native": ["--mode", "native"],
}


@pytest.fixture(params=list(MODES), scope="module")
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    with bench_server(MODES[request.param]) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_browser_gets_graphiql_and_its_files(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        page = await client.get("/graphql", headers=BROWSER)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "?asset=graphiql.js" in page.text
        for name in ("graphiql.js", "graphiql.css", "editor.worker.js", "json.worker.js", "graphql.worker.js", "graphql-ws.js"):
            asset = await client.get(f"/graphql?asset={name}")
            assert asset.status_code == 200, name
            assert len(asset.content) > 1000, name
        # GraphQL clients still get GraphQL on the path.
        query = await client.post("/graphql", json={"query": "{ __typename }"})
        assert query.json() == {"data": {"__typename": "Query"}}


def _get(engine: Engine, graphiql: bool) -> "object":
    return engine.http("GET", "/graphql", [(b"accept", BROWSER["accept"].encode())], b"", graphiql=graphiql)


async def test_graphiql_false_serves_no_page() -> None:
    engine = Engine(schema="type Query { ok: Boolean } type Subscription { ticks: Int! }")
    status, headers, _ = await _get(engine, True)  # type: ignore[misc]
    assert status == 200
    status, headers, body = await _get(engine, False)  # type: ignore[misc]
    assert status == 400, body
    assert b"content-security-policy" not in dict(headers)
    status, _, _ = await engine.http("GET", "/graphql?asset=graphiql.js", [], b"", graphiql=False)
    assert status == 400


def test_the_service_desk_serves_its_board(desk: Server) -> None:
    with urllib.request.urlopen(desk.base + "/", timeout=5) as response:
        page = response.read().decode()
    assert 'data-ws="/graphql/ws"' in page and 'data-http="/graphql"' in page
    for path in ("/board.js", "/board.css", "/graphql/ws?asset=graphql-ws.js"):
        with urllib.request.urlopen(desk.base + path, timeout=5) as response:
            assert response.status == 200, path
    change = desk.graphql('mutation { changeServiceStatus(id: "s2", status: DEGRADED) { serviceId current } }')
    assert change == {"changeServiceStatus": {"serviceId": "s2", "current": "DEGRADED"}}
    filed = desk.graphql('mutation { fileServiceRequest(serviceId: "s2", title: "VPN slow") { serviceId title } }')
    assert filed == {"fileServiceRequest": {"serviceId": "s2", "title": "VPN slow"}}
