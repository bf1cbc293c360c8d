"""Fixtures: the example apps and the edge-case app on real uvicorn servers."""

from __future__ import annotations

from typing import Iterator

import pytest

from support import EXAMPLES, HERE, Server


@pytest.fixture(scope="session")
def desk() -> Iterator[Server]:
    server = Server("app:app", EXAMPLES / "service_desk")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def desk_starlette() -> Iterator[Server]:
    server = Server("starlette_app:app", EXAMPLES / "service_desk")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge() -> Iterator[Server]:
    server = Server("edge_app:app", HERE / "apps")
    yield server
    server.stop()
