"""The `mcp-gateway-worker` command: run Worker objects against NATS until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from mcp_gateway_worker._credentials import BusCredentials, CredentialsRefused, PermissionDenied
from mcp_gateway_worker._heap import settle_heap
from mcp_gateway_worker._logs import configure_logging
from mcp_gateway_worker._metrics import MetricsPortUnavailable, MetricsUnavailable, WorkerMetrics, serve_metrics
from mcp_gateway_worker._tracing import configure_tracing
from mcp_gateway_worker._worker import Worker

__all__ = [
    "WorkerLoadError",
    "add_credential_arguments",
    "add_metrics_arguments",
    "credentials_from",
    "load_worker",
    "main",
    "run_workers",
]

USER_ENV, PASSWORD_ENV, CREDS_ENV = "MCPGW_NATS_USER", "MCPGW_NATS_PASSWORD", "MCPGW_NATS_CREDS"


class WorkerLoadError(Exception):
    """A `MODULE:ATTR` target that names no Worker."""


def load_worker(target: str) -> Worker:
    """The Worker named by `MODULE:ATTR` (ATTR defaults to `worker`), importable from the current folder too."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise WorkerLoadError(f"cannot load worker {target!r}: expected MODULE:ATTR, e.g. tickets:worker")
    if "" not in sys.path and os.getcwd() not in sys.path:  # `mcp-gateway-worker tickets:worker` in its folder
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in (attr or "worker").split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise WorkerLoadError(f"cannot load worker {target!r} (expected MODULE:ATTR naming a Worker): {exc}") from exc
    if not isinstance(obj, Worker):
        raise WorkerLoadError(f"{target!r} is a {type(obj).__name__}, not a mcp_gateway_worker.Worker")
    return obj


async def run_workers(
    workers: Sequence[Worker],
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    creds: str | Path | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Connect every worker and handle commands until cancelled; then drain each (in-flight work finishes or is
    handed back for redelivery). Credentials as for `Worker.connect` (or in the URL). With `metrics_port`, the
    workers' metrics, counted together, are served on `metrics_host:metrics_port` (the extra `metrics`)."""
    metrics = WorkerMetrics() if metrics_port is not None else None  # MetricsUnavailable before connecting
    async with AsyncExitStack() as stack:
        if metrics is not None and metrics_port is not None:
            await stack.enter_async_context(serve_metrics(metrics, metrics_host, metrics_port))
        for worker in workers:
            await stack.enter_async_context(
                worker.connect(url, user=user, password=password, creds=creds, metrics=metrics)
            )
        settle_heap()
        await asyncio.Event().wait()


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """`--metrics-port PORT` and `--metrics-host HOST`: for `mcp-gateway-worker` and `mcp-gateway worker` alike."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the workers' Prometheus metrics on this port (needs the extra mcp-gateway-worker[metrics])",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address the metrics port binds (default 127.0.0.1)",
    )


def add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """`--creds FILE`, `--user NAME`, `--password SECRET` (defaults from MCPGW_NATS_CREDS, MCPGW_NATS_USER,
    MCPGW_NATS_PASSWORD): for `mcp-gateway-worker` and `mcp-gateway worker` alike."""
    parser.add_argument(
        "--creds", type=Path, default=os.environ.get(CREDS_ENV) or None, help=f"a NATS .creds file (or {CREDS_ENV})"
    )
    parser.add_argument("--user", default=os.environ.get(USER_ENV) or None, help=f"NATS user (or {USER_ENV})")
    parser.add_argument(
        "--password",
        default=os.environ.get(PASSWORD_ENV) or None,
        help=f"its password (or {PASSWORD_ENV}, which keeps it out of the process list)",
    )


def credentials_from(args: argparse.Namespace) -> BusCredentials:
    """The credentials the arguments give (ValueError, saying what is missing, when they do not add up)."""
    return BusCredentials(args.user, args.password, args.creds)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mcp-gateway-worker", description="Run mcp-gateway workers against NATS.")
    p.add_argument("targets", nargs="+", metavar="MODULE:ATTR", help="Worker objects to run, e.g. tickets:worker")
    p.add_argument("--nats-url", default=os.environ.get("MCPGW_NATS_URL"), help="NATS URL (or MCPGW_NATS_URL)")
    p.add_argument(
        "--prefix", default=os.environ.get("MCPGW_SUBJECT_PREFIX"), help="subject prefix (default: the worker's)"
    )
    p.add_argument(
        "--log-level", default=os.environ.get("MCPGW_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    add_credential_arguments(p)
    add_metrics_arguments(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    if not args.nats_url:
        print(
            "mcp-gateway-worker: no NATS URL: pass --nats-url or set MCPGW_NATS_URL "
            "(for the gateway's embedded NATS: mcp-gateway nats-url)",
            file=sys.stderr,
        )
        return 2
    try:
        access = credentials_from(args)
        access.connect_options(args.nats_url)  # a .creds file that cannot be used is said now
        workers = [load_worker(t) for t in args.targets]
        configure_tracing("mcp-gateway-worker")  # OTEL_TRACES_EXPORTER etc. (TracingError is a ValueError)
    except (WorkerLoadError, ValueError) as exc:
        print(f"mcp-gateway-worker: {exc}", file=sys.stderr)
        return 2
    if args.prefix:
        workers = [w.with_prefix(args.prefix) for w in workers]
    try:
        return _run(
            run_workers(
                workers,
                args.nats_url,
                user=access.user,
                password=access.password,
                creds=access.creds,
                metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
            )
        )
    except (PermissionDenied, CredentialsRefused) as exc:
        print(f"mcp-gateway-worker: {exc}", file=sys.stderr)
        return 1
    except (MetricsUnavailable, MetricsPortUnavailable) as exc:
        print(f"mcp-gateway-worker: {exc}", file=sys.stderr)
        return 2


def _run(coro: Any) -> int:
    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        try:
            await coro
        except asyncio.CancelledError:
            return 0
        return 0

    return asyncio.run(main())
