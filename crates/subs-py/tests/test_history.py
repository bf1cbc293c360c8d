"""History and resume from Python: `bind(history=...)` on the bench server
(`HISTORY=N`, in each mode), and the gql recipe of docs/history.md, run as
written there."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from support import bench_server

DOCS = Path(__file__).resolve().parents[3] / "docs" / "history.md"

MODES = {
    "middleware": ["--mode", "asgi"],
    "route": ["--mode", "asgi", "--asgi", "route"],
    "native": ["--mode", "native"],
}


@pytest.fixture(params=list(MODES), scope="module")
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    with bench_server(MODES[request.param], HISTORY="100") as port:
        yield port


def gql_recipe() -> Dict[str, Any]:
    """The Python block under "Python's gql" in docs/history.md, executed."""
    text = DOCS.read_text()
    section = text[text.index("### Python's gql") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/history.md has the gql recipe"
    namespace: Dict[str, Any] = {}
    exec(compile(code.group(1), str(DOCS), "exec"), namespace)
    return namespace


async def stats(port: int) -> Dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"http://127.0.0.1:{port}/stats")).json()


async def subscriptions_at_least(port: int, count: int) -> None:
    for _ in range(500):
        if (await stats(port))["subscriptions"] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server never counted {count} subscriptions")


async def publish_when_subscribed(port: int, baseline: int, count: int) -> None:
    await subscriptions_at_least(port, baseline + 1)
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"http://127.0.0.1:{port}/publish",
            json={"topic": "a", "count": count, "payloadBytes": 8, "intervalUs": 0},
        )
        assert response.status_code == 202


async def test_the_gql_recipe_resumes_after_a_reconnect(port: int) -> None:
    recipe = gql_recipe()
    url = f"ws://127.0.0.1:{port}/graphql"
    seen: List[Any] = []

    def take(n: int) -> Any:
        def handle(result: Any) -> bool:
            seen.append(result)
            return len(seen) < n

        return handle

    baseline = (await stats(port))["subscriptions"]
    publisher = asyncio.create_task(publish_when_subscribed(port, baseline, 3))
    position = await asyncio.wait_for(recipe["follow"](url, take(3)), 10)
    await publisher
    assert position["offset"] == seen[2].extensions["subs"]["offset"]
    first_offset = seen[0].extensions["subs"]["offset"]

    # Away: three more events are published (each `POST /publish` numbers
    # its seq from 0, offsets go on).
    published = (await stats(port))["eventsPublished"]
    async with httpx.AsyncClient(timeout=5) as client:
        await client.post(
            f"http://127.0.0.1:{port}/publish",
            json={"topic": "a", "count": 3, "payloadBytes": 8, "intervalUs": 0},
        )
    for _ in range(500):
        if (await stats(port))["eventsPublished"] >= published + 3:
            break
        await asyncio.sleep(0.01)
    position = await asyncio.wait_for(recipe["follow"](url, take(6), position), 10)
    offsets = [r.extensions["subs"]["offset"] for r in seen]
    assert offsets == list(range(first_offset, first_offset + 6))
    assert [r.data["ticks"]["seq"] for r in seen] == [0, 1, 2, 0, 1, 2]
    assert (await stats(port))["eventsReplayed"] >= 3


async def test_the_recipe_ends_on_a_gap_without_a_position(port: int) -> None:
    recipe = gql_recipe()
    seen: List[Any] = []
    url = f"ws://127.0.0.1:{port}/graphql"
    position = await asyncio.wait_for(
        recipe["follow"](url, seen.append, {"epoch": "gone", "offset": 7}), 10
    )
    assert position is None
    assert seen == []
    assert (await stats(port))["historyGaps"] >= 1
