"""The composition root: every long-lived part, entered once, in order, for stdio and HTTP alike.

Start: embedded servers (only where no URL is configured), migrations, the store, the bus, the change
subscription, the dispatcher (which relays what a previous run left in the outbox), the folder.
Stop, in reverse: the folder stops taking events, the dispatcher flushes its marks, NATS drains, the
database closes, the embedded servers stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from mcp.server import Server
from mcp_gateway_worker.contract import Subjects
from sqlalchemy import text

from mcp_gateway.bus import NatsBus
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.dead_letters import DeadLetterOffice
from mcp_gateway.core.deadlines import DeadlineKeeper
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.folding import EventFolder
from mcp_gateway.core.presence import WorkerPresence
from mcp_gateway.core.reload import RegistryReloader
from mcp_gateway.core.resources import ResourceReader
from mcp_gateway.core.service import ToolCallService
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.workflows import ADMIN, Workflows
from mcp_gateway.embedded import EmbeddedNats, EmbeddedPostgres, running_nats_url, running_postgres_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.registry import Registry, load_registry
from mcp_gateway.server import ResourceFeed, build_server, check_content
from mcp_gateway.settings import Settings
from mcp_gateway.store import PostgresStore, WorkflowRecord, run_migrations

__all__ = ["Gateway", "open_gateway", "open_servers"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServerUrls:
    nats: str
    database: str


@asynccontextmanager
async def open_servers(settings: Settings) -> AsyncGenerator[ServerUrls]:
    """The NATS and PostgreSQL URLs: configured ones as they are; for the others, the embedded servers that another
    gateway process already runs on this data dir (several processes share them), else embedded servers started now."""
    async with AsyncExitStack() as stack:
        nats_dir, postgres_dir = settings.data_dir / "nats", settings.data_dir / "postgres"
        nats_url = settings.nats_url or running_nats_url(nats_dir)
        if nats_url is None:
            nats_url = (await stack.enter_async_context(EmbeddedNats(nats_dir))).url
        elif settings.nats_url is None:
            log.info("embedded.nats.shared", url=nats_url, note="started by another gateway process on this data dir")
        database_url = settings.database_url or running_postgres_url(postgres_dir)
        if database_url is None:
            database_url = (await stack.enter_async_context(EmbeddedPostgres(postgres_dir))).url
        elif settings.database_url is None:
            log.info("embedded.postgres.shared", url=database_url, note="started by another gateway process")
        yield ServerUrls(nats_url, database_url)


class Gateway:
    """The running gateway's parts. Built by `open_gateway`; transports get their MCP server from `mcp_server`."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        urls: ServerUrls,
        store: PostgresStore,
        bus: NatsBus,
        waiters: Waiters,
        dispatcher: Dispatcher,
        supervisor: Supervisor,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.urls = urls
        self.store = store
        self.bus = bus
        self.waiters = waiters
        self.dispatcher = dispatcher
        self.workflows = Workflows(store, bus, waiters, dispatcher)
        self.feed = ResourceFeed(waiters, supervisor)
        self.reloader = RegistryReloader(
            settings.tools_folder(), registry, self.feed.lists_changed, supervisor, interval=settings.reload_interval
        )
        self.resources = ResourceReader(lambda: self.registry, bus, bus.subjects)
        self.presence = WorkerPresence(bus, bus.subjects)
        self.service = ToolCallService(
            lambda: self.registry,
            store,
            dispatcher,
            waiters,
            bus.subjects,
            self.workflows,
            self.presence,
            max_payload=lambda: bus.max_payload,
        )
        self.service.idempotency_window = settings.idempotency_window

    @property
    def registry(self) -> Registry:
        """The tools, prompts and resources served now (the config folder's last good state)."""
        return self.reloader.registry

    def mcp_server(self, caller_subject: str = "anonymous") -> Server[Any]:
        return build_server(self.service, self.workflows, self.feed, self.resources, caller_subject=caller_subject)

    async def admin_retry(self, workflow_id: str, arguments: dict[str, Any] | None) -> WorkflowRecord:
        """Run a workflow again as an admin (the admin API's and the CLI's retry and redrive)."""
        return await self.service.retry(workflow_id, ADMIN, arguments=arguments)

    async def report_unserved(self) -> list[str]:
        """Log (and return) every tool whose commands no worker listens for now."""
        try:
            missing = await self.presence.unserved(self.registry.values())
        except GatewayError as exc:
            log.warning("gateway.workers_unknown", error=str(exc))
            return []
        names = [t.name for t in missing]
        if names:
            subjects = sorted({self.bus.subjects.command(t.config.subject) for t in missing})
            log.warning("gateway.tools_without_worker", tools=names, subjects=subjects)
        return names

    async def ready(self) -> dict[str, Any]:
        """Each dependency, and each background loop that keeps failing (by name, with its last error): every
        value "ok" means ready."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2), self.store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        checks["nats"] = "ok" if self.bus.connected else "disconnected"
        health = self.supervisor.health()
        failing = set(self.supervisor.failing())
        for name, h in sorted(health.items()):
            checks[f"loop:{name}"] = f"failing: {h.last_error}" if name in failing else "ok"
        return checks


@asynccontextmanager
async def open_gateway(settings: Settings, registry: Registry | None = None) -> AsyncGenerator[Gateway]:
    registry = registry if registry is not None else load_registry(settings.tools_folder())
    async with AsyncExitStack() as stack:
        urls = await stack.enter_async_context(open_servers(settings))
        # Every background loop runs under it; it is left last, after each part has stopped its own loops.
        supervisor = await stack.enter_async_context(Supervisor())
        if settings.migrate_on_start:
            await run_migrations(urls.database)
        store = await stack.enter_async_context(PostgresStore(urls.database, pool_size=settings.db_pool_size))
        subjects = Subjects(settings.subject_prefix)
        bus = await stack.enter_async_context(NatsBus(urls.nats, subjects, duplicate_window=settings.duplicate_window))
        waiters = Waiters()
        await store.subscribe_changes(waiters.on_message, supervisor)
        dispatcher = await stack.enter_async_context(
            Dispatcher(store, bus, supervisor, relay_after=settings.outbox_relay_after)
        )
        gateway = Gateway(settings, registry, urls, store, bus, waiters, dispatcher, supervisor)
        office = DeadLetterOffice(store, bus)
        await bus.on_max_deliveries(office.exhausted)
        await stack.enter_async_context(
            EventFolder(store, bus, lambda: gateway.registry, supervisor, subjects, office, check_content=check_content)
        )
        await stack.enter_async_context(DeadlineKeeper(gateway.workflows, supervisor))
        await stack.enter_async_context(gateway.feed)
        await stack.enter_async_context(gateway.reloader)
        stack.callback(setattr, gateway.service, "stopping", True)  # first thing on the way out
        log.info("gateway.started", tools=len(registry), nats=urls.nats, database=_redact(urls.database))
        yield gateway
        log.info("gateway.stopping")


def _redact(url: str) -> str:
    """A database URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{host}"
