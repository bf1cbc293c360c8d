"""The README's FastAPI quick start works as written."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from support import Client, Server

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_readme_quick_start(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    quick_start = next(b for b in blocks if b.startswith("# app.py"))
    (tmp_path / "app.py").write_text(quick_start)
    # `cargo xtask ci` passes a fresh venv holding only the README's install
    # line (the wheel, fastapi, uvicorn[standard]); by hand, this venv serves.
    server = Server("app:app", tmp_path, os.environ.get("SUBS_README_PYTHON", sys.executable))
    try:
        client = await Client.open(server.ws)
        await client.subscribe("1", 'subscription { serviceUpdated(serviceId: "s1") { id status } }')
        await asyncio.sleep(0.1)
        await asyncio.to_thread(server.post, "/services/s2?status=DOWN", {})
        await asyncio.to_thread(server.post, "/services/s1?status=UP", {})
        assert await client.next_data("1") == {"data": {"serviceUpdated": {"id": "s1", "status": "UP"}}}
        await client.close()
        rejected = await Client.open(server.ws, init=False)
        await rejected.send({"type": "connection_init", "payload": {"token": "wrong"}})
        try:
            await rejected.receive()
        except Exception as closed:  # websockets.ConnectionClosed
            assert getattr(closed, "rcvd").code == 4403
        else:
            raise AssertionError("not closed")
    finally:
        server.stop()
