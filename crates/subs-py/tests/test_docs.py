"""The Python blocks of the root README and of every docs/ page run (the
subs-py README's are run by test_readme.py). Each block runs in a fresh
namespace holding what the page's prose has already set up (`SCHEMA`, an
`engine`, a FastAPI `app`, `SubsMiddleware`); a block that defines its own
names shadows them. The root README's app is also served by uvicorn and
delivers an event."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from support import Client, Server

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PRELUDE = '''
from fastapi import FastAPI
from subs import Engine, SubsMiddleware

SCHEMA = """
type Query { ok: Boolean }
type Service { id: ID! status: String! }
type Subscription { serviceUpdated(id: ID): Service! }
"""
engine = Engine(schema=SCHEMA)
app = FastAPI()
'''


def blocks() -> List[Tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def test_the_docs_have_python_blocks() -> None:
    # A page layout change that hid every block from the regex would
    # otherwise pass the test below vacuously.
    assert len(blocks()) >= 7, blocks()


@pytest.mark.parametrize("where,code", blocks(), ids=[where for where, _ in blocks()])
async def test_block_runs(where: str, code: str) -> None:
    # A fixed port in a page may be taken on a shared machine: any free one.
    code = re.sub(r'(start_server\("[0-9.]+", )\d+\)', r"\g<1>0)", code)
    namespace: Dict[str, Any] = {"__name__": "docs_block"}
    exec(compile(PRELUDE, "<prelude>", "exec"), namespace)
    # Blocks with top-level `await`-free code only: run off the event loop
    # thread, as a module would be imported.
    await asyncio.to_thread(exec, compile(code, where, "exec"), namespace)
    app = namespace.get("app")
    if app is not None:
        # Starlette instantiates middleware at the first request: build the
        # stack now, so a wrong argument of `add_middleware` fails here.
        app.build_middleware_stack()
    server = namespace.get("server")
    if server is not None and "server.shutdown(" not in code:
        await asyncio.to_thread(server.shutdown, 5.0)
    if "publish" in namespace and "redis" in code:
        # scaling.md's publisher, for real, into the local Redis.
        namespace["publish"]("subs-docs-test", {"id": "1"})


async def test_root_readme_app_delivers(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    app_py = next(code for _, code in blocks() if "FastAPI()" in code and code in text)
    (tmp_path / "app.py").write_text(app_py)
    server = Server("app:app", tmp_path, os.environ.get("SUBS_README_PYTHON", sys.executable))
    try:
        client = await Client.open(f"ws://127.0.0.1:{server.port}/graphql/ws")
        await client.subscribe("1", 'subscription { serviceUpdated(id: "1") { id status } }')
        # The README's app has no /stats: publish until the subscriber has
        # its event (the first one published after it registered).
        for _ in range(100):
            await asyncio.to_thread(server.post, "/services/1?status=UP", {})
            try:
                data = await client.next_data("1", timeout=0.1)
                break
            except asyncio.TimeoutError:
                continue
        else:
            raise AssertionError("the README's app delivered nothing")
        assert data == {"data": {"serviceUpdated": {"id": "1", "status": "UP"}}}
        await client.close()
    finally:
        server.stop()
