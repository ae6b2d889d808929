"""Real NATS and PostgreSQL for the test session, started on free ports; a fresh database per test.

One server of each per test session (per xdist worker); migrations run once into a template database, and
each test gets `CREATE DATABASE ... TEMPLATE` (tens of ms) and its own subject prefix, so tests never share
state and may run in parallel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import jsonschema_rs
import mcp.types as types
import pytest
import uvicorn
from mcp import Client, StdioServerParameters

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.embedded import EmbeddedNats, EmbeddedPostgres
from mcp_gateway.examples import all_workers
from mcp_gateway.server import build_http_app
from mcp_gateway.server._results import ERROR_META
from mcp_gateway.settings import Settings
from mcp_gateway.store import PostgresEventStore, run_migrations
from tests import workers as test_workers

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "mcpgw_template"


@dataclass(frozen=True)
class Servers:
    nats_url: str
    admin_url: str
    tools_dir: Path

    def database_url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name


@dataclass(frozen=True)
class Env:
    """One test's share of the servers: its own database and subject prefix."""

    servers: Servers
    database_url: str
    prefix: str
    data_dir: Path

    @property
    def nats_url(self) -> str:
        return self.servers.nats_url

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "nats_url": self.nats_url,
            "database_url": self.database_url,
            "subject_prefix": self.prefix,
            "tools_dir": self.servers.tools_dir,
            "data_dir": self.data_dir,
            "migrate_on_start": False,
            "outbox_relay_after": 0.3,
        }
        values.update(overrides)
        return Settings.model_validate(values)

    def env_vars(self) -> dict[str, str]:
        """The same settings as MCPGW_* variables, for a gateway in a subprocess."""
        return {
            "MCPGW_NATS_URL": self.nats_url,
            "MCPGW_DATABASE_URL": self.database_url,
            "MCPGW_SUBJECT_PREFIX": self.prefix,
            "MCPGW_TOOLS_DIR": str(self.servers.tools_dir),
            "MCPGW_DATA_DIR": str(self.data_dir),
            "MCPGW_MIGRATE_ON_START": "false",
        }


@pytest.fixture(scope="session")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncGenerator[Servers]:
    base = tmp_path_factory.mktemp("servers")
    tools = base / "tools"
    shutil.copytree(ROOT / "config" / "tools", tools / "config")
    shutil.copytree(ROOT / "tests" / "tools", tools / "testing")
    shutil.copytree(ROOT / "config" / "conformance", tools / "conformance")
    async with EmbeddedNats(base / "nats") as nats, EmbeddedPostgres(base / "pg", fsync=False) as pg:
        conn = await asyncpg.connect(pg.admin_url)
        try:
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        s = Servers(nats.url, pg.admin_url, tools)
        await run_migrations(s.database_url(TEMPLATE))
        yield s


@pytest.fixture
async def env(servers: Servers, tmp_path: Path) -> AsyncGenerator[Env]:
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(servers.admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await conn.close()
    yield Env(servers, servers.database_url(name), "t" + uuid.uuid4().hex[:10], tmp_path)
    conn = await asyncpg.connect(servers.admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@asynccontextmanager
async def running_workers(env: Env) -> AsyncGenerator[None]:
    """The example workers and the test workers, on this test's subject prefix."""
    async with AsyncExitStack() as stack:
        for worker in [*all_workers(), test_workers.worker]:
            await stack.enter_async_context(worker.with_prefix(env.prefix).connect(env.nats_url))
        yield


@pytest.fixture
async def gateway(env: Env) -> AsyncGenerator[Gateway]:
    """A gateway in this process, with the workers running."""
    async with open_gateway(env.settings()) as gw, running_workers(env):
        yield gw


class StrictClient(Client):
    """The SDK's Client, checking each tool result as TypeScript-SDK clients (Claude Desktop, the Inspector) do:
    `structuredContent`, on `isError` results too, must be an instance of the tool's listed `outputSchema`, and
    a successful result of a tool with an `outputSchema` must have one. The Python client alone lets both pass."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *a: Any, **kw: Any
    ) -> types.CallToolResult:
        result = await super().call_tool(name, arguments, *a, **kw)
        listed = {t.name: t for t in (await self.list_tools()).tools}.get(name)
        schema = listed.output_schema if listed is not None else None
        if schema is None:
            return result
        if result.structured_content is None:
            assert result.is_error, f"tool {name!r} has an output schema but its result has no structuredContent"
        else:
            problems = [
                e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(result.structured_content)
            ]
            assert not problems, f"{name!r}: structuredContent breaks the listed outputSchema: {problems}"
        return result


def error_detail(result: types.CallToolResult) -> dict[str, Any]:
    """An isError result's machine-readable detail (in `_meta`; never in a structuredContent off the schema)."""
    assert result.is_error, result
    assert result.meta is not None and isinstance(result.meta.get(ERROR_META), dict), result
    return result.meta[ERROR_META]


Connect = Callable[..., AbstractAsyncContextManager[Client]]
"""Opens an SDK `Client` on the transport and protocol revision of the test's parameter (kwargs go to Client)."""
MODES = {"legacy": "2025-11-25", "auto": "2026-07-28"}


async def admin_token(gateway: Gateway, subject: str = "test-admin") -> str:
    """A new static token with the admin scope."""
    token, _ = await gateway.tokens.create(subject, (gateway.settings.admin_scope,))
    return token


@asynccontextmanager
async def http_server(
    gateway: Gateway, *, auth: Literal["required", "optional"] = "optional", lean: bool | None = None
) -> AsyncGenerator[str]:
    """The gateway's HTTP app on a free port (its URL); `lean`: the lean route on or off (default: the setting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound first, so the app knows its own URL
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_http_app(
        gateway.mcp_server(),
        host="127.0.0.1",
        port=port,
        ready=gateway.ready,
        workflows=gateway.workflows,
        principals=gateway.principals,
        verifier=gateway.verifier,
        auth=auth,
        scopes_supported=gateway.scopes_supported,
        event_store=PostgresEventStore(gateway.store.engine),
        retry=gateway.admin_retry,
        dead_letters=gateway.store.dead_letters,
        metrics=gateway.metrics.exposition,
        metrics_scope=gateway.settings.metrics_scope,
        telemetry=gateway.metrics,
        lean=gateway.settings.lean_http if lean is None else lean,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - polling uvicorn's started flag
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["http-legacy", "http-auto", "stdio-legacy", "stdio-auto"])
async def connect(request: pytest.FixtureRequest, env: Env, gateway: Gateway) -> AsyncGenerator[Connect]:
    transport, mode = str(request.param).split("-")
    if transport == "http":
        async with http_server(gateway) as url:

            def over_http(**kw: Any) -> Client:
                return StrictClient(url, mode=mode, read_timeout_seconds=30, **kw)

            yield over_http
    else:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcp_gateway", "serve", "--transport", "stdio"],
            env={**os.environ, **env.env_vars()},
        )

        def over_stdio(**kw: Any) -> Client:
            return StrictClient(params, mode=mode, read_timeout_seconds=30, **kw)

        yield over_stdio
