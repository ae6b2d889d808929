"""The `mcp-gateway` command: serve, check, migrate, worker, workflows, stats, dlq, token, bus-user, db-url and
nats-url."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Coroutine, Generator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import structlog
import uvicorn
from mcp_gateway_worker import (
    CredentialsRefused,
    MetricsPortUnavailable,
    MetricsUnavailable,
    PermissionDenied,
    load_worker,
    redact_url,
    run_workers,
)
from mcp_gateway_worker._cli import WorkerLoadError, add_credential_arguments, add_metrics_arguments, credentials_from
from mcp_gateway_worker._heap import settle_heap

from mcp_gateway import __version__, bus_users, oncall
from mcp_gateway.core.ports import WorkflowFilter
from mcp_gateway.core.states import Status
from mcp_gateway.errors import ConfigError, ConfigProblem, GatewayError
from mcp_gateway.logs import configure_logging
from mcp_gateway.observability import configure_tracing
from mcp_gateway.oncall import parse_since
from mcp_gateway.registry import load_registry
from mcp_gateway.settings import Settings, load_settings

__all__ = ["main"]

log = structlog.get_logger("mcp_gateway.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcp-gateway", description="An MCP server that fronts a NATS JetStream bus.")
    p.add_argument(
        "--config", type=Path, help="settings file (default: $MCPGW_CONFIG, else ./config/gateway.yaml when it exists)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve MCP over streamable HTTP or stdio")
    serve.add_argument("--transport", choices=["http", "stdio"], default="http")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="serve the port with N gateway processes (SO_REUSEPORT; http only; default 1, MCPGW_PROCESSES)",
    )
    serve.add_argument("--tools-dir", type=Path, help=TOOLS_DIR_HELP)
    serve.add_argument(
        "--with-examples",
        action="store_true",
        help="also run the example workers in this process (and, with no "
        "tool folder configured, serve the example tools)",
    )

    check = sub.add_parser("check", help="check the settings and every tool file; non-zero exit on any problem")
    check.add_argument("--tools-dir", type=Path, help=TOOLS_DIR_HELP)
    check.add_argument("--with-examples", action="store_true", help="with no tool folder configured, the examples'")
    check.add_argument("--json", action="store_true", help="print the result as JSON (problems too, exit code 1)")
    check.add_argument(
        "--live", action="store_true", help="also ask the running NATS which tools no worker listens for (exit 1)"
    )

    sub.add_parser("migrate", help="apply the database migrations (starts the embedded PostgreSQL if no URL)")

    worker = sub.add_parser("worker", help="run workers (default: the examples) against NATS")
    worker.add_argument("targets", nargs="*", metavar="MODULE:ATTR", help="Worker objects to run")
    worker.add_argument("--nats-url", help="NATS to connect to (default: settings, else the embedded one)")
    add_credential_arguments(worker)  # --creds, --user, --password (default: the embedded NATS's gateway user)
    add_metrics_arguments(worker)  # --metrics-port, --metrics-host (127.0.0.1)

    wf = sub.add_parser("workflows", help="inspect workflows")
    wf_sub = wf.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = wf_sub.add_parser("list", help="the newest workflows")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--tool", help="only this tool's")
    listing.add_argument("--caller", help="only this caller's (the token's subject)")
    listing.add_argument("--since", type=parse_since, help=SINCE_HELP)
    listing.add_argument("--limit", type=_positive, default=20)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    show = wf_sub.add_parser("show", help="one workflow and its event history")
    show.add_argument("workflow_id")
    show.add_argument("--follow", "-f", action="store_true", help="then print each new event until it ends")
    show.add_argument(
        "--json", action="store_true", help="print one JSON object, its history under 'events' (--follow: a line each)"
    )
    stats = sub.add_parser("stats", help="workflows by status and tool, the outbox's depth and age, dead letters")
    stats.add_argument("--since", type=parse_since, help=SINCE_HELP)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    for action, text in (
        ("approve", "approve a workflow held for approval (it is dispatched)"),
        ("deny", "deny a workflow held for approval (it ends cancelled, code denied)"),
        ("cancel", "cancel a workflow (a result that arrived first is kept); its worker is told to stop"),
    ):
        act = wf_sub.add_parser(action, help=text)
        act.add_argument("workflow_id")
    retry = wf_sub.add_parser("retry", help="run a failed, dead-lettered or timed-out workflow again (a new attempt)")
    retry.add_argument("workflow_id")
    retry.add_argument("--arguments", type=Path, metavar="FILE", help="a JSON file of new arguments")

    dlq = sub.add_parser("dlq", help="dead letters: messages the gateway could not take, workflows it gave up on")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="the newest dead letters")
    dlq_list.add_argument("--limit", type=int, default=20)
    dlq_list.add_argument("--json", action="store_true", help="print a JSON array")
    dlq_show = dlq_sub.add_parser("show", help="one dead letter, with a preview of its body")
    dlq_show.add_argument("letter_id", type=int)
    redrive = dlq_sub.add_parser("redrive", help="run the dead letter's workflow again (a new attempt)")
    redrive.add_argument("letter_id", type=int)
    redrive.add_argument("--arguments", type=Path, metavar="FILE", help="a JSON file of new arguments")

    token = sub.add_parser("token", help="static bearer tokens for HTTP callers (stored as SHA-256 only)")
    token_sub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--subject", required=True, help="the caller the token names (its workflows are its own)")
    create.add_argument("--scopes", default="", help="comma-separated scopes (tools, prompts, resources need them)")
    create.add_argument("--admin", action="store_true", help="also the admin scope (every workflow, /admin)")
    create.add_argument("--expires-days", type=float, metavar="DAYS", help="expire after DAYS (default: never)")
    create.add_argument("--note", help="what the token is for (shown by token list)")
    token_list = token_sub.add_parser("list", help="every token: id, subject, scopes, state (never the token)")
    token_list.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id, or every token of a subject")
    revoke.add_argument("id_or_subject")

    sub.add_parser("db-url", help="print the PostgreSQL URL (the embedded server's while the gateway runs)")
    nats_url = sub.add_parser("nats-url", help="print the NATS URL (the embedded server's while the gateway runs)")
    nats_url.add_argument(
        "--with-credentials", action="store_true", help="with the gateway user's password in it (a secret)"
    )
    bus_users.add_parser(sub)
    return p


TOOLS_DIR_HELP = "folder of tool YAML files (default: tools_dir of the settings, else ./config/tools)"
SINCE_HELP = "only those created since: a span back from now (90s, 15m, 2h, 3d, 1w) or an ISO 8601 time"


def _fail(message: str, code: int = 2) -> int:
    print(f"mcp-gateway: {message}", file=sys.stderr)
    return code


def _run(coro: Coroutine[Any, Any, int | None]) -> int:
    """Run on uvloop (1.1-1.4x faster here for NATS and HTTP); SIGINT and SIGTERM stop cleanly."""
    import uvloop

    async def main() -> int | None:
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored there)
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            return 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main()) or 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "processes": getattr(args, "processes", None),
        "tools_dir": getattr(args, "tools_dir", None),
        "nats_url": getattr(args, "nats_url", None),
    }
    try:
        settings = load_settings(args.config, **overrides)
        configure_logging(settings.log_level, settings.log_format)
        match args.command:
            case "check":
                settings = settings.model_copy(update={"tools_dir": settings.tools_folder(examples=args.with_examples)})
                return _run(_check(settings, args.json, args.live))
            case "serve":
                from mcp_gateway.processes import bind_process_context, serve_processes

                if settings.processes > 1 and args.transport != "http":
                    return _fail(
                        f"serve --processes {settings.processes} (processes, MCPGW_PROCESSES) serves HTTP only: "
                        f"--transport {args.transport} is one client's pipe, served by one process"
                    )
                settings = settings.model_copy(update={"tools_dir": settings.tools_folder(examples=args.with_examples)})
                registry = load_registry(settings.tools_folder())
                if settings.processes > 1:
                    settings.check_exposure()
                    config = args.config.resolve() if args.config is not None else None
                    grace = GRACEFUL_SHUTDOWN + 5
                    return _run(serve_processes(settings, examples=args.with_examples, config=config, grace=grace))
                bind_process_context()
                configure_tracing("mcp-gateway", enabled=settings.tracing)
                return _run(_serve(settings, registry, args.transport, args.with_examples))
            case "migrate":
                return _run(_migrate(settings))
            case "worker":
                configure_tracing("mcp-gateway-worker", enabled=settings.tracing)
                return _run(_workers(settings, args))
            case "bus-user":
                return bus_users.run(settings, args)
            case "workflows":
                return _run(_workflows(settings, args))
            case "stats":
                return _run(_stats(settings, args))
            case "dlq":
                return _run(_dlq(settings, args))
            case "token":
                return _run(_tokens(settings, args))
            case "db-url":
                print(_database_url(settings))
                return 0
            case "nats-url":
                url = _nats_url(settings, credentials=args.with_credentials)
                print(url if args.with_credentials else redact_url(url))
                return 0
            case _:  # pragma: no cover - argparse refuses unknown commands
                return _fail(f"unknown command {args.command!r}")
    except ConfigError as exc:
        if getattr(args, "json", False) and args.command == "check":
            print(json.dumps({"ok": False, "problems": [_problem(p) for p in exc.problems]}, indent=2))
        return _fail(str(exc), 1)
    except GatewayError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`mcp-gateway check | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _problem(problem: ConfigProblem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "kind": problem.kind,
        "name": problem.tool,
        "key_path": problem.key_path,
        "message": problem.message,
    }


async def _check(settings: Settings, as_json: bool, live: bool) -> int:
    folder = settings.tools_folder()
    registry = load_registry(folder)
    unserved: list[str] | None = await _unserved(settings, list(registry.values())) if live else None
    ok = not unserved
    if as_json:
        tools = [
            {"name": t.name, "version": t.config.version, "subject": t.config.subject, "file": str(t.source)}
            | ({"worker": t.name not in unserved} if unserved is not None else {})
            for t in registry.values()
        ]
        shown = {"ok": ok, "tools_dir": str(folder), "tools": tools, "prompts": len(registry.prompts)}
        print(json.dumps(shown | ({"without_worker": unserved} if unserved is not None else {}), indent=2))
        return 0 if ok else 1
    print(f"ok: settings, {len(registry)} tool(s) and {len(registry.prompts)} prompt(s) in {folder}")
    for tool in registry.values():
        mark = "" if unserved is None else ("  NO WORKER" if tool.name in unserved else "  worker listening")
        print(f"  {tool.name} v{tool.config.version} -> {tool.config.subject} ({tool.source}){mark}")
    if unserved:
        print(f"{len(unserved)} tool(s) with no worker listening: {', '.join(unserved)}", file=sys.stderr)
    return 0 if ok else 1


async def _unserved(settings: Settings, tools: list[Any]) -> list[str]:
    """The names of the tools whose commands no worker listens for now, asked of the running NATS."""
    from mcp_gateway_worker.contract import Subjects

    from mcp_gateway.bus import NatsBus
    from mcp_gateway.core.presence import WorkerPresence

    subjects = Subjects(settings.subject_prefix)
    async with NatsBus(_nats_url(settings), subjects, name="mcp-gateway-check", observe_only=True) as bus:
        return [t.name for t in await WorkerPresence(bus, subjects).unserved(tools)]


async def _serve(settings: Settings, registry: Any, transport: str, examples: bool) -> int:
    from mcp_gateway.app import open_gateway
    from mcp_gateway.core.limits import CallLimits
    from mcp_gateway.examples import all_workers
    from mcp_gateway.processes import CANNOT_BIND_EXIT, reuse_port_sockets
    from mcp_gateway.server import build_http_app, serve_stdio
    from mcp_gateway.server._connections import ConnectionLimits, uvicorn_config
    from mcp_gateway.server._guard import AuthFailureThrottle
    from mcp_gateway.store import PostgresEventStore

    sockets: list[socket.socket] | None = None
    if transport == "http":
        settings.check_exposure()
        if settings.reuse_port:  # a child of `serve --processes`: bound now (fail fast), listening once it serves
            try:
                sockets = reuse_port_sockets(settings.host, settings.port)
            except OSError as exc:
                return _fail(
                    f"cannot bind {settings.host}:{settings.port} beside the other gateway processes "
                    f"(SO_REUSEPORT): {exc}; is another program serving that port?",
                    CANNOT_BIND_EXIT,
                )
    async with open_gateway(settings, registry) as gateway, AsyncExitStack() as workers:
        if examples:
            for worker in all_workers():
                await workers.enter_async_context(worker.connect(gateway.urls.nats))
        await gateway.report_unserved()
        if transport == "stdio":
            reload_at_sighup(gateway)
            settle_heap()
            await serve_stdio(gateway.mcp_server())  # as the local principal (settings local_subject, local_scopes)
            return 0
        app = build_http_app(
            gateway.mcp_server(),
            host=settings.host,
            port=settings.port,
            ready=gateway.ready,
            workflows=gateway.workflows,
            principals=gateway.principals,
            verifier=gateway.verifier,
            auth=settings.resolved_auth(),
            public_url=settings.public_url,
            authorization_servers=settings.authorization_servers or ([settings.jwt.issuer] if settings.jwt else None),
            scopes_supported=gateway.scopes_supported,
            event_store=PostgresEventStore(gateway.store.engine),
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
            max_request_body_size=settings.max_request_body,
            retry=gateway.admin_retry,
            dead_letters=gateway.store.dead_letters,
            rate_limit=settings.rate_limit,
            requests_in_flight=CallLimits(
                settings.max_requests_in_flight_per_caller, settings.limit_concurrency or 1_000_000
            ),
            body_timeout=settings.body_timeout,
            auth_failures=AuthFailureThrottle(
                settings.auth_failure_limit, settings.auth_failure_window, settings.auth_failure_cooloff
            ),
            metrics=gateway.metrics.exposition,
            metrics_scope=settings.metrics_scope,
            telemetry=gateway.metrics,
            lean=settings.lean_http,
        )
        config = uvicorn_config(
            app,
            host=settings.host,
            port=settings.port,
            limits=ConnectionLimits.from_settings(settings),
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_config=None,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        )
        server = _Uvicorn(config)
        loop = asyncio.get_running_loop()

        def stop() -> None:  # stop accepting, hand back calls in flight (their work goes on), unwind the gateway
            gateway.service.stopping = True
            server.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        reload_at_sighup(gateway)
        log.info(
            "serve.http",
            url=f"http://{settings.host}:{settings.port}/mcp",
            auth=settings.resolved_auth(),
            database=redact_url(gateway.urls.database),
        )
        settle_heap()
        for sock in sockets or []:
            sock.listen(settings.backlog)
        await server.serve(sockets=sockets)
        return 0 if server.started else _fail(f"could not serve on {settings.host}:{settings.port} (see the log)")


GRACEFUL_SHUTDOWN = 10
"""Seconds calls in flight get to finish when `serve` stops (then they are handed back)."""


def reload_at_sighup(gateway: Any) -> None:
    """SIGHUP: load the config folder again now (it is also checked every `reload_interval` seconds)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = loop.create_task(gateway.reloader.reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)


class _Uvicorn(uvicorn.Server):
    """uvicorn, minus its own signal handling: the CLI decides what a signal means (a graceful stop)."""

    @contextmanager
    def capture_signals(self) -> Generator[None]:
        yield

    def stop(self) -> None:
        self.force_exit = self.should_exit  # a second Ctrl-C stops at once
        self.should_exit = True


async def _migrate(settings: Settings) -> int:
    from mcp_gateway.app import open_servers
    from mcp_gateway.store import run_migrations

    async with open_servers(settings.model_copy(update={"nats_url": settings.nats_url or "unused"})) as urls:
        await run_migrations(urls.database)
    print("ok: database migrated")
    return 0


async def _workers(settings: Settings, args: argparse.Namespace) -> int:
    """Run workers; as the bus user given (--user/--password, --creds, or their MCPGW_NATS_* variables), else on
    the embedded NATS as the gateway's own user (every permission: for a local demo)."""
    from mcp_gateway.examples import all_workers

    try:
        access = credentials_from(args)
        access.connect_options("")  # a .creds file that cannot be used is said now
        workers = [load_worker(t) for t in args.targets] if args.targets else all_workers()
    except (WorkerLoadError, ValueError) as exc:
        return _fail(str(exc))
    if settings.subject_prefix != "mcpgw":
        workers = [w.with_prefix(settings.subject_prefix) for w in workers]
    url = _nats_url(settings, credentials=access.user is None and access.creds is None)
    try:
        await run_workers(
            workers,
            url,
            user=access.user,
            password=access.password,
            creds=access.creds,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    except (PermissionDenied, CredentialsRefused) as exc:
        return _fail(str(exc), 1)
    except (MetricsUnavailable, MetricsPortUnavailable) as exc:
        return _fail(str(exc))
    return 0


def _nats_url(settings: Settings, *, credentials: bool = True) -> str:
    """The configured NATS URL, else the running embedded one's (`credentials`: with the gateway's user in it)."""
    from mcp_gateway.embedded import running_nats_url

    url = settings.nats_url or running_nats_url(settings.data_dir / "nats", credentials=credentials)
    if url is None:
        raise GatewayError(
            f"no NATS URL: none configured ({settings.source}), and no embedded NATS runs in "
            f"{settings.data_dir / 'nats'}; pass --nats-url, set MCPGW_NATS_URL, or start 'mcp-gateway serve' first"
        )
    return url


def _database_url(settings: Settings) -> str:
    from mcp_gateway.embedded import running_postgres_url

    url = settings.database_url or running_postgres_url(settings.data_dir / "postgres")
    if url is None:
        raise GatewayError(
            f"no database URL: none configured ({settings.source}; MCPGW_DATABASE_URL unset), and no embedded "
            f"PostgreSQL runs in {settings.data_dir / 'postgres'}. Start 'mcp-gateway serve' first, set "
            "MCPGW_DATABASE_URL, or pass the running gateway's settings with --config (its data_dir decides where "
            "the embedded servers run)"
        )
    return url


async def _act(settings: Settings, action: str, workflow_id: str) -> int:
    """approve / deny / cancel, as an admin, through a gateway process of its own (it shares running servers)."""
    from mcp_gateway.app import open_gateway
    from mcp_gateway.core.workflows import ADMIN, AnswerRefused, WorkflowNotFound

    async with open_gateway(settings.model_copy(update={"migrate_on_start": False})) as gateway:
        try:
            if action == "cancel":
                record = await gateway.workflows.cancel(workflow_id, ADMIN, "cancelled by an admin")
            else:
                decision = "accept" if action == "approve" else "decline"
                record = await gateway.workflows.answer(workflow_id, ADMIN, "approval", decision)
        except (WorkflowNotFound, AnswerRefused) as exc:
            return _fail(str(exc), 1)
    print(f"{record.id}  {record.status.value}")
    return 0


def _arguments_file(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GatewayError(f"--arguments {path}: cannot read a JSON object from it: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayError(f"--arguments {path}: must hold a JSON object (the tool's arguments)")
    return cast(dict[str, Any], data)


async def _retry(settings: Settings, workflow_id: str, arguments_file: Path | None) -> int:
    """Run a workflow again, as an admin, through a gateway process of its own (it shares running servers)."""
    from mcp_gateway.app import open_gateway
    from mcp_gateway.core.service import RetryRefused
    from mcp_gateway.core.workflows import ADMIN, WorkflowNotFound

    arguments = _arguments_file(arguments_file)
    async with open_gateway(settings.model_copy(update={"migrate_on_start": False})) as gateway:
        try:
            record = await gateway.service.retry(workflow_id, ADMIN, arguments=arguments)
        except (WorkflowNotFound, RetryRefused) as exc:
            return _fail(str(exc), 1)
    print(f"{record.id}  {record.status.value}  attempt {record.state.attempt}")
    return 0


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_gateway.server._http import dead_letter_view
    from mcp_gateway.store import PostgresStore

    async with PostgresStore(_database_url(settings)) as store:
        if args.action == "list":
            letters = await store.dead_letters(args.limit)
            if args.json:
                print(json.dumps([dead_letter_view(d) for d in letters], indent=2))
                return 0
            for d in letters:
                when = f"{d.at:%Y-%m-%d %H:%M:%S}" if d.at else ""
                print(f"{d.id:>6}  {when}  {d.source:<7} {d.workflow_id or '-':<32}  {d.reason[:80]}")
            return 0
        found = await store.dead_letters(1, letter_id=args.letter_id)
    if not found:
        return _fail(f"no dead letter {args.letter_id}", 1)
    letter = found[0]
    if args.action == "show":
        print(json.dumps(dead_letter_view(letter), indent=2))
        return 0
    if letter.workflow_id is None:
        return _fail(f"dead letter {letter.id} names no workflow (an event that could not be read): nothing to redrive")
    return await _retry(settings, letter.workflow_id, args.arguments)


async def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    """token create / list / revoke, straight on the database (the gateway sees a change within seconds)."""
    from datetime import UTC, datetime, timedelta

    from mcp_gateway.auth import StaticTokens, StoredToken
    from mcp_gateway.store import PostgresStore, PostgresTokenStore, run_migrations

    def view(t: StoredToken) -> dict[str, Any]:
        state = "revoked" if t.revoked_at else "expired" if t.expires_at and t.expires_at <= datetime.now(UTC) else "ok"
        return {
            "id": t.id,
            "subject": t.subject,
            "scopes": list(t.scopes),
            "state": state,
            "created_at": t.created_at.isoformat(),
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "note": t.note,
        }

    url = _database_url(settings)
    await run_migrations(url)
    async with PostgresStore(url) as store:
        token_store = PostgresTokenStore(store.engine)
        tokens = StaticTokens(token_store)
        if args.action == "create":
            scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
            bad = [x for x in scopes if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}", x)]
            if bad:
                return _fail(f"--scopes: {bad[0]!r} is not a scope (1-128 visible ASCII characters, no quote or \\)")
            if args.admin and settings.admin_scope not in scopes:
                scopes.append(settings.admin_scope)
            expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
            secret, stored = await tokens.create(args.subject, tuple(scopes), note=args.note, expires_at=expires)
            print(secret)
            print(
                f"token {stored.id} for {stored.subject!r}, scopes {', '.join(scopes) or '(none)'}: "
                "shown this once, only its SHA-256 is kept",
                file=sys.stderr,
            )
            return 0
        if args.action == "revoke":
            revoked = await token_store.revoke(args.id_or_subject)
            if not revoked:
                return _fail(f"no token with id or subject {args.id_or_subject!r}", 1)
            for t in revoked:
                print(f"revoked {t.id} ({t.subject})")
            return 0
        listed = [view(t) for t in await token_store.all()]
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    for t in listed:
        print(f"{t['id']}  {t['state']:<8} {t['subject']:<24} {','.join(t['scopes']) or '-':<30} {t['note'] or ''}")
    return 0


async def _workflows(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_gateway.store import PostgresStore

    if args.action in ("approve", "deny", "cancel"):
        return await _act(settings, args.action, args.workflow_id)
    if args.action == "retry":
        return await _retry(settings, args.workflow_id, args.arguments)

    async with PostgresStore(_database_url(settings)) as store:
        if args.action == "list":
            status = Status(args.status) if args.status else None
            query = WorkflowFilter(status, args.tool, args.caller, args.since, limit=args.limit)
            return await oncall.list_workflows(store, query, as_json=args.json, out=sys.stdout)
        view = oncall.follow_workflow if args.follow else oncall.show_workflow
        if await view(store, args.workflow_id, as_json=args.json, out=sys.stdout):
            return _fail(f"no workflow {args.workflow_id!r}", 1)
        return 0


async def _stats(settings: Settings, args: argparse.Namespace) -> int:
    from mcp_gateway_worker.contract import Subjects

    from mcp_gateway.bus import ConsumerState, events_consumer_at
    from mcp_gateway.store import PostgresStore

    backlog: ConsumerState | str
    try:
        backlog = await events_consumer_at(_nats_url(settings), Subjects(settings.subject_prefix))
    except GatewayError as exc:
        backlog = str(exc)
    async with PostgresStore(_database_url(settings)) as store:
        return await oncall.show_stats(store, since=args.since, as_json=args.json, out=sys.stdout, backlog=backlog)


def _positive(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {value!r}")
    return int(value)
