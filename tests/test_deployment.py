"""Deployment shapes: a gateway pointed at existing servers by URL; a gateway process killed mid-call."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx2
import nats
from mcp import Client
from mcp_gateway_worker.contract import Subjects

from mcp_gateway.app import open_gateway
from mcp_gateway.core.states import Status
from mcp_gateway.store import PostgresStore
from tests import workers as test_workers
from tests.conftest import Env, Servers, running_workers


async def test_urls_configured_start_nothing_create_streams_and_migrate(servers: Servers, tmp_path: Path) -> None:
    name = "fresh_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(servers.admin_url)
    await conn.execute(f"CREATE DATABASE {name}")  # empty: no tables yet
    await conn.close()
    env = Env(servers, servers.database_url(name), "u" + uuid.uuid4().hex[:8], tmp_path / "data")
    async with open_gateway(env.settings(migrate_on_start=True)) as gateway:
        assert gateway.urls.database == env.database_url
        assert await gateway.store.list() == []  # the tables exist
        nc = await nats.connect(env.nats_url)
        js = nc.jetstream()
        subjects = Subjects(env.prefix)
        for stream in (subjects.command_stream, subjects.event_stream):
            info = await js.stream_info(stream)
            assert info.config.duplicate_window == 3600
        await nc.close()
    assert not (tmp_path / "data").exists()  # no embedded server was started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_gateway(env: Env, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; it is waited on below with bounds
        [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(port)],
        env={**os.environ, **env.env_vars()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with asyncio.timeout(30), httpx2.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return process
            except httpx2.TransportError:
                await asyncio.sleep(0.05)


async def test_gateway_killed_mid_call_loses_nothing(env: Env) -> None:
    """SIGKILL the gateway while a worker holds the call; a new gateway process records the result, once."""
    port = _free_port()
    gate = test_workers.gates.setdefault(env.prefix, asyncio.Event())
    async with running_workers(env), PostgresStore(env.database_url) as store:
        first = await _start_gateway(env, port)
        workflow_id = ""
        try:
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
                call = asyncio.create_task(client.call_tool("slow", {"seconds": 0, "gate": env.prefix}))
                async with asyncio.timeout(15):  # the worker holds it: the workflow runs
                    while not (running := await store.list(status=Status.RUNNING)):  # noqa: ASYNC110 - polling the db
                        await asyncio.sleep(0.01)
                workflow_id = running[0].id
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                call.cancel()
        except* httpx2.RemoteProtocolError:
            # The call's answer was to come as JSON (the lean route); the SDK's client fails its session on the
            # connection the killed gateway dropped, where it ends an SSE stream quietly. The client's side of a
            # SIGKILL; what this test checks is the server's.
            assert workflow_id
        finally:
            first.kill()
        gate.set()  # the worker finishes while no gateway runs: its result waits in JetStream
        second = await _start_gateway(env, port)
        try:
            async with asyncio.timeout(15):
                while (record := await store.get(workflow_id)) is None or record.status is not Status.COMPLETED:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
        assert second.returncode == 0
        assert record.state.result == {"slept": 0}
        kinds = [e.kind for e in await store.events(workflow_id)]
    assert kinds.count("completed") == 1
    assert test_workers.executions[workflow_id] == 1
