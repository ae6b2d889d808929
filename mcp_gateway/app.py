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
from mcp_gateway_worker import redact_url
from mcp_gateway_worker.contract import Subjects

from mcp_gateway import __version__
from mcp_gateway.auth import GatewayTokenVerifier, JwtVerifier, Principals, StaticTokens
from mcp_gateway.bus import NatsBus
from mcp_gateway.core.access import ADMIN, Viewer
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.dead_letters import DeadLetterOffice
from mcp_gateway.core.deadlines import DeadlineKeeper
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.folding import EventFolder
from mcp_gateway.core.limits import CallLimits
from mcp_gateway.core.presence import WorkerPresence
from mcp_gateway.core.reload import RegistryReloader
from mcp_gateway.core.resources import ResourceReader
from mcp_gateway.core.service import ToolCallService
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.workflows import Workflows
from mcp_gateway.embedded import EmbeddedNats, EmbeddedPostgres, running_nats_url, running_postgres_url
from mcp_gateway.errors import GatewayError
from mcp_gateway.observability.metrics import GatewayMetrics
from mcp_gateway.registry import Registry, load_registry
from mcp_gateway.server import ResourceFeed, build_server, check_content, principal_from
from mcp_gateway.settings import Settings
from mcp_gateway.store import (
    PostgresStore,
    PostgresTokenStore,
    WorkflowRecord,
    migration_level,
    migrations_head,
    run_migrations,
)

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
            log.info(
                "embedded.nats.shared",
                url=redact_url(nats_url),
                note="started by another gateway process on this data dir",
            )
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
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.metrics = metrics or GatewayMetrics(store=store, bus=bus, supervisor=supervisor, version=__version__)
        """This gateway's Prometheus metrics (a registry of its own), served at /metrics; the core's telemetry."""
        self.urls = urls
        self.store = store
        self.bus = bus
        self.waiters = waiters
        self.dispatcher = dispatcher
        self.workflows = Workflows(store, bus, waiters, dispatcher, self.metrics)
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
        self.service.telemetry = self.metrics
        if (key := settings.secret_key_bytes()) is not None:
            self.service.secret_key = key
        else:
            log.warning(
                "settings.no_secret_key",
                note="set secret_key (the same in every gateway process) so that idempotent retries reaching another "
                "process compare x-sensitive arguments too",
            )
        self.call_limits = CallLimits(settings.max_in_flight_per_caller, settings.max_in_flight, telemetry=self.metrics)
        self.token_store = PostgresTokenStore(store.engine)
        self.tokens = StaticTokens(self.token_store)
        self.verifier = GatewayTokenVerifier(self.tokens, JwtVerifier(settings.jwt) if settings.jwt else None)
        self.principals = Principals(
            admin_scope=settings.admin_scope,
            local=Viewer(settings.local_subject, scopes=frozenset(settings.local_scopes)),
        )

    @property
    def registry(self) -> Registry:
        """The tools, prompts and resources served now (the config folder's last good state)."""
        return self.reloader.registry

    def mcp_server(self) -> Server[Any]:
        """The MCP server; each request acts as its token's principal, else the local one (stdio: always)."""
        return build_server(
            self.service,
            self.workflows,
            self.feed,
            self.resources,
            principal=principal_from(self.principals),
            current=self.principals.current,
            limits=self.call_limits,
        )

    def scopes_supported(self) -> list[str]:
        """Every scope the config names (tools, prompts, resources), the admin and metrics scopes: for RFC 9728."""
        r = self.registry
        named = [
            *(t.config.scopes for t in r.values()),
            *(p.config.scopes for p in r.prompts.values()),
            *(x.config.scopes for x in r.resources.values()),
            *(x.config.scopes for x in r.templates),
        ]
        own = {self.settings.admin_scope, self.settings.metrics_scope}
        return sorted({s for scopes in named for s in scopes} | own)

    async def admin_retry(
        self, workflow_id: str, arguments: dict[str, Any] | None, by: Viewer = ADMIN
    ) -> WorkflowRecord:
        """Run a workflow again as an admin (the admin API's and the CLI's retry and redrive)."""
        return await self.service.retry(workflow_id, by, arguments=arguments)

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
        """Each dependency, the database's migration level, the fold's backlog in JetStream, and each background
        loop (by name, with its last error when it keeps failing): every value "ok" means ready. A database
        migrated past this gateway's newest migration is ready (an older gateway during a rolling upgrade); one
        behind it is not."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2):
                level = await migration_level(self.store.engine)
            checks["postgres"] = "ok"
            head = migrations_head()
            if level == head or (level is not None and level > head):
                checks["migrations"] = "ok"
            else:
                checks["migrations"] = (
                    f"behind: the database is at {level or 'no migration'}, this gateway needs {head}"
                )
        except Exception as exc:
            checks["postgres"] = f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        checks["nats"] = "ok" if self.bus.connected else "disconnected"
        if self.bus.connected:
            checks["events_backlog"] = await self._event_backlog()
        health = self.supervisor.health()
        failing = set(self.supervisor.failing())
        for name, h in sorted(health.items()):
            checks[f"loop:{name}"] = f"failing: {h.last_error}" if name in failing else "ok"
        return checks

    async def _event_backlog(self) -> str:
        """Whether the fold keeps up: the events JetStream holds for it, against `ready_max_event_backlog`."""
        limit = self.settings.ready_max_event_backlog
        try:
            consumer = await self.bus.events_consumer(max_wait=2.0)
        except GatewayError as exc:
            return f"unknown: {exc}"
        if consumer.pending > limit:
            return f"lagging: {consumer.pending} events wait for the fold (more than ready_max_event_backlog {limit})"
        return "ok"


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

        async def tool_subject_of(workflow_id: str) -> str | None:
            """Where a workflow's answers go: its tool's subject (None if the registry no longer has its tool)."""
            record = await store.get(workflow_id)
            tool = gateway.registry.get(record.tool) if record is not None else None
            return tool.config.subject if tool is not None else None

        bus = await stack.enter_async_context(
            NatsBus(urls.nats, subjects, duplicate_window=settings.duplicate_window, tool_subject_of=tool_subject_of)
        )
        waiters = Waiters()
        await store.subscribe_changes(waiters.on_message, supervisor)
        metrics = GatewayMetrics(store=store, bus=bus, supervisor=supervisor, version=__version__)
        dispatcher = await stack.enter_async_context(
            Dispatcher(store, bus, supervisor, relay_after=settings.outbox_relay_after, telemetry=metrics)
        )
        gateway = Gateway(settings, registry, urls, store, bus, waiters, dispatcher, supervisor, metrics)
        office = DeadLetterOffice(store, bus, metrics)
        await bus.on_max_deliveries(office.exhausted)
        await stack.enter_async_context(
            EventFolder(
                store,
                bus,
                lambda: gateway.registry,
                supervisor,
                subjects,
                office,
                check_content=check_content,
                telemetry=metrics,
            )
        )
        await stack.enter_async_context(DeadlineKeeper(gateway.workflows, supervisor))
        await stack.enter_async_context(gateway.feed)
        await stack.enter_async_context(gateway.reloader)
        stack.callback(setattr, gateway.service, "stopping", True)  # first thing on the way out
        log.info("gateway.started", tools=len(registry), nats=redact_url(urls.nats), database=redact_url(urls.database))
        yield gateway
        log.info("gateway.stopping")
