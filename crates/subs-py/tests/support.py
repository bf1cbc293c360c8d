"""Test support: real uvicorn servers in subprocesses, and a small
graphql-transport-ws client on the `websockets` library."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from contextlib import contextmanager

from websockets.asyncio.client import ClientConnection, connect

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bench_server(args: List[str], **env: str) -> Iterator[int]:
    """The bench server (`examples/bench_server.py args`) on a free port, with
    `env` added to the environment: its port, once it printed `READY`."""
    environment = dict(os.environ, PORT=str(free_port()), PYTHONUNBUFFERED="1", **env)
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "bench_server.py"), *args],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        yield int(line.split()[1])
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


class Server:
    def __init__(self, app: str, app_dir: Path, python: str = sys.executable) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/graphql/ws"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                python,
                "-W",
                "error::RuntimeWarning",
                "-m",
                "uvicorn",
                app,
                "--app-dir",
                str(app_dir),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"server {app} exited: {output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server {app} did not start")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def graphql(self, query: str, variables: Optional[Dict[str, Any]] = None) -> Any:
        result = self.post("/graphql", {"query": query, "variables": variables or {}})
        assert "errors" not in result, result
        return result["data"]

    async def until_subscriptions(self, count: int, timeout: float = 5.0) -> Dict[str, Any]:
        """Waits until `/stats` counts exactly `count` subscriptions (this
        test's registered, earlier tests' gone; the servers are shared by a
        session) and answers the stats: what a test waits on after
        subscribing, instead of sleeping."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await asyncio.to_thread(self.get, "/stats")
            if stats["subscriptions"] == count:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"the server counts {stats['subscriptions']} subscriptions, not {count}: {stats}")
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


async def eventually(check: Any, what: str, timeout: float = 5.0) -> Any:
    """Polls the plain condition `check` until it answers something truthy
    (and answers it); fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def wait_until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Client:
    """A graphql-transport-ws client for tests."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    @classmethod
    async def open(
        cls,
        url: str,
        payload: Optional[Dict[str, Any]] = None,
        *,
        init: bool = True,
        max_queue: int = 16,
        compression: Optional[str] = "deflate",
    ) -> "Client":
        # A small `max_queue` makes a client that stops calling recv() stop
        # reading its socket too: a slow reader, as the server sees it.
        # `compression=None`: no permessage-deflate (browsers offer it, most
        # non-browser clients do not).
        socket = await connect(
            url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_queue=max_queue,
            compression=compression,
        )
        client = cls(socket)
        if init:
            await client.send({"type": "connection_init", "payload": payload or {}})
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
        return client

    async def send(self, message: Dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> Dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if message["type"] == "ping":
                await self.send({"type": "pong"})
                continue
            return message

    async def subscribe(self, id: str, query: str, variables: Optional[Dict[str, Any]] = None) -> None:
        await self.send({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})

    async def next_data(self, id: Optional[str] = None, timeout: float = 5.0) -> Dict[str, Any]:
        message = await self.receive(timeout)
        assert message["type"] == "next", message
        if id is not None:
            assert message["id"] == id, message
        return message["payload"]

    async def close(self) -> None:
        await self.socket.close()


__all__: List[str] = ["Client", "Server", "eventually", "wait_until"]
