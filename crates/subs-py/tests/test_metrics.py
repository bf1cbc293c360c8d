"""Prometheus metrics from Python: `GET /metrics` on the bench server in every
mode (SubsMiddleware, `engine.metrics_asgi()` behind Starlette's routing, the
native Rust server) after real traffic over WebSocket, SSE and multipart, the
exposition checked by prometheus_client's parser; and the `prometheus_client`
collector for applications with their own registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Dict, Iterator, Tuple

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from subs import Engine
from support import Client, bench_server
from test_http import MULTIPART, SSE, multipart_parts, publish, sse_events, wait_subscriptions

MODES = {
    "middleware": ["--mode", "asgi"],
    "route": ["--mode", "asgi", "--asgi", "route"],
    "native": ["--mode", "native"],
}

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


@pytest.fixture(params=list(MODES), scope="module")
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    with bench_server(MODES[request.param]) as port:
        yield f"http://127.0.0.1:{port}"


def parse(text: str) -> Samples:
    """Every sample of an exposition by (name, sorted labels); the parser
    raises on anything that is not valid Prometheus text."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def by(transport: str) -> Tuple[Tuple[str, str], ...]:
    return (("transport", transport),)


async def test_metrics_after_traffic_on_every_transport(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        before = await scrape(client)
        refused = await client.post(
            "/graphql", json={"query": 'subscription { ticks(topic: "m") { seq } }'}, headers={**SSE, "x-reject": "true"}
        )
        assert refused.status_code == 403
        ws = await Client.open(base.replace("http://", "ws://") + "/graphql")
        await ws.subscribe("1", 'subscription { ticks(topic: "m") { seq } }')
        query = {"query": 'subscription { ticks(topic: "m") { seq } }'}
        async with client.stream("POST", "/graphql", json=query, headers=SSE) as sse, client.stream(
            "POST", "/graphql", json=query, headers=MULTIPART
        ) as multipart:
            assert sse.status_code == 200 and multipart.status_code == 200
            await wait_subscriptions(base, 3)
            during = await scrape(client)
            for transport in ("websocket", "sse", "multipart"):
                assert during[("subs_connections", by(transport))] == 1, transport
                assert during[("subs_subscriptions", by(transport))] == 1, transport
            await publish(client, "m", 3)
            events = sse_events(sse.aiter_lines())
            parts = multipart_parts(multipart.aiter_bytes())
            for n in range(3):
                assert (await ws.next_data("1"))["data"]["ticks"]["seq"] == n
                event = await asyncio.wait_for(events.__anext__(), 5)
                assert json.loads(event["data"])["data"]["ticks"]["seq"] == n
                part = await asyncio.wait_for(parts.__anext__(), 5)
                while part == {}:  # a heartbeat
                    part = await asyncio.wait_for(parts.__anext__(), 5)
                assert part is not None and part["payload"]["data"]["ticks"]["seq"] == n
            after = await scrape(client)
        await ws.close()
        await wait_subscriptions(base, 0)
        idle = await scrape(client)

    def delta(name: str, labels: Tuple[Tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before[(name, labels)]

    for transport in ("websocket", "sse", "multipart"):
        assert delta("subs_messages_sent_total", by(transport)) == 3, transport
        assert idle[("subs_connections", by(transport))] == 0, transport
        assert idle[("subs_subscriptions", by(transport))] == 0, transport
    assert delta("subs_events_published_total") == 3
    assert delta("subs_rejections_total", (("reason", "authentication"),)) == 1
    for name in ("subs_messages_dropped_total", "subs_slow_consumer_closes_total", "subs_resolver_timeouts_total"):
        assert after[(name, ())] == 0, name
    assert after[("subs_resolver_duration_seconds_bucket", (("le", "+Inf"),))] == after[("subs_resolver_duration_seconds_count", ())]


async def test_openmetrics_when_asked() -> None:
    engine = Engine("type Query { a: Int } type Subscription { tick: Int }")
    engine.bind("tick", topic="ticks")
    transport = httpx.ASGITransport(app=engine.metrics_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        open_metrics = await client.get("/", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.endswith("# EOF\n")
        refused = await client.post("/")
        assert refused.status_code == 405
    await engine.publish("ticks", 1)
    assert parse(engine.metrics()[1])[("subs_events_published_total", ())] == 1


def test_collector_joins_an_application_registry() -> None:
    engine = Engine("type Query { a: Int } type Subscription { tick: Int }")
    engine.bind("tick", topic="ticks")
    registry = CollectorRegistry()
    registry.register(engine.prometheus_collector())
    engine.publish_sync("ticks", 1)
    engine.publish_sync("ticks", 2)
    samples = parse(generate_latest(registry).decode())
    assert samples[("subs_events_published_total", ())] == 2
    assert samples[("subs_connections", by("websocket"))] == 0
    assert samples[("subs_resolver_duration_seconds_count", ())] == 0


def test_the_package_does_not_need_prometheus_client() -> None:
    script = """
import sys
sys.modules["prometheus_client"] = None  # an environment without it
import subs
engine = subs.Engine("type Query { a: Int } type Subscription { tick: Int }")
engine.bind("tick", topic="ticks")
assert "subs_events_published_total 0" in engine.metrics()[1]
engine.metrics_asgi()
try:
    engine.prometheus_collector()
except ImportError as error:
    assert "prometheus_client" in str(error)
else:
    raise AssertionError("the collector needs prometheus_client")
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
