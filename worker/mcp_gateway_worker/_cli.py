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
from typing import Any

from mcp_gateway_worker._logs import configure_logging
from mcp_gateway_worker._worker import Worker

__all__ = ["WorkerLoadError", "load_worker", "main", "run_workers"]


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


async def run_workers(workers: Sequence[Worker], url: str) -> None:
    """Connect every worker and handle commands until cancelled; then drain each (in-flight work finishes or is
    handed back for redelivery)."""
    async with AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker.connect(url))
        await asyncio.Event().wait()


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
        workers = [load_worker(t) for t in args.targets]
    except WorkerLoadError as exc:
        print(f"mcp-gateway-worker: {exc}", file=sys.stderr)
        return 2
    if args.prefix:
        workers = [w.with_prefix(args.prefix) for w in workers]
    return _run(run_workers(workers, args.nats_url))


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
