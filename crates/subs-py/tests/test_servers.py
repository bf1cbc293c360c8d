"""The ASGI servers subs runs on: uvicorn, whose websockets-sansio protocol
takes the fast path when it has what the fast path uses (uvicorn 0.35 and
later) and the standard path otherwise, and Hypercorn (standard path). Each
serves a subscription end to end and says in the log which path it took.

CI runs this file with the newest uvicorn (the test venv) and with the
oldest the package supports (`cargo xtask python-source`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import List

import pytest

from support import Client, free_port

APPS = Path(__file__).resolve().parent / "apps"


def _uvicorn_version() -> tuple:
    return tuple(int(part) for part in version("uvicorn").split(".")[:2])


def _command(server: str, port: int) -> List[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "servers_app:app", "--port", str(port), "--log-level", "warning"]
    return [sys.executable, "-m", "hypercorn", "servers_app:app", "--bind", f"127.0.0.1:{port}"]


def _servers() -> List[str]:
    servers = ["uvicorn"]
    try:
        version("hypercorn")
        servers.append("hypercorn")
    except Exception:  # noqa: BLE001 - not installed: that server is not in this run
        pass
    return servers


@pytest.mark.parametrize("server", _servers())
async def test_a_subscription_end_to_end_and_the_path_taken(server: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        _command(server, port),
        cwd=APPS,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(APPS)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                client = await Client.open(f"ws://127.0.0.1:{port}/graphql/ws")
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        await client.subscribe("1", "subscription { ticks }")
        n = 0
        deadline = time.monotonic() + 10
        while True:  # until the stats count the subscription (counted after it is registered)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/publish?n={n}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                counted = json.loads(response.read())["subscriptions"] == 1
            n += 1
            if counted:
                break
            assert time.monotonic() < deadline, "the subscription was not registered"
            time.sleep(0.01)
        # Registered before this publish: tick `n` must arrive, after any
        # earlier tick that raced the registration, in order.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/publish?n={n}", method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        seen = []
        while not seen or seen[-1] != n:
            seen.append((await client.next_data("1"))["data"]["ticks"])
        assert seen == sorted(set(seen)), seen
        await client.close()
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    fast = server == "uvicorn" and _uvicorn_version() >= (0, 35)
    expected = "subs ASGI fast path" if fast else "subs ASGI standard path"
    assert expected in output, output
