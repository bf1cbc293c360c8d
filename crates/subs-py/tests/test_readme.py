"""The README's FastAPI quick start works as written."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

from support import Client, Server, eventually

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
        await eventually(lambda: _subscriptions(server) == 1, "the subscription is registered")
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


async def test_readme_http_snippets(tmp_path: Path) -> None:
    """The README's curl (Server-Sent Events) and gql (multipart) snippets
    receive events from the quick start."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (tmp_path / "app.py").write_text(next(b for b in blocks if b.startswith("# app.py")))
    client_py = next(b for b in blocks if b.startswith("# client.py"))
    curl = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if b.startswith("curl "))
    server = Server("app:app", tmp_path, os.environ.get("SUBS_README_PYTHON", sys.executable))
    try:
        url = f"localhost:{server.port}"
        (tmp_path / "client.py").write_text(client_py.replace("localhost:8000", url))
        runs = []
        if shutil.which("curl"):
            runs.append(["sh", "-c", curl.replace("localhost:8000", url).replace("curl -N", "curl -sN --max-time 20")])
        runs.append([sys.executable, str(tmp_path / "client.py")])
        for command in runs:
            process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
            assert process.stdout is not None
            reading = asyncio.ensure_future(_first_event(process.stdout) if command[0] == "sh" else process.stdout.read())
            # Publish until the snippet has its event (it subscribes at its own pace).
            for _ in range(100):
                await asyncio.to_thread(server.post, "/services/s1?status=UP", {})
                done, _ = await asyncio.wait({reading}, timeout=0.1)
                if done:
                    break
            output = (await asyncio.wait_for(reading, 10)).decode()
            if command[0] == "sh":
                assert output.startswith("data: ") and '"status":"UP"' in output, output
                process.terminate()
            else:
                assert output.strip() == "{'serviceUpdated': {'id': 's1', 'status': 'UP'}}", output
            await process.wait()
    finally:
        server.stop()


async def _first_event(stdout: asyncio.StreamReader) -> bytes:
    """The data line of the first `next` event of a text/event-stream."""
    event = b""
    while True:
        line = await stdout.readline()
        if not line:
            return b"(the stream ended)"
        if line.startswith(b"event:"):
            event = line.strip()
        elif line.startswith(b"data:") and event == b"event: next":
            return line


def _subscriptions(server: Server) -> float:
    """Active subscriptions by the app's `/metrics` (SubsMiddleware serves
    it; the quick start has no `/stats`)."""
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("subs_subscriptions{", "subs_subscriptions "))
    )
