"""The worker of the chaos soak (tools/chaos): short work in a few progress steps, each execution recorded.

Every execution of a handler is appended to a file of its own process, `$CHAOS_EXECUTIONS_DIR/<pid>.jsonl`,
one JSON line when it starts and one when it completes (its result is about to be published) or fails. The
lines are written with one `write(2)` each on an `O_APPEND` descriptor: they reach the kernel before the
handler goes on, so they survive a `kill -9` of this process, and they live outside NATS and PostgreSQL, which
the soak also kills. The harness counts the completions per workflow: more than one is an execution twice.

Each progress message and each result names the process and its run number (`pid 123 run 2`), so that the
harness can tell, from the workflow's history in PostgreSQL, which execution published which events (and so
under which delivery, the events' attempt, each execution ran).

    mcp-gateway-worker tools.chaos_worker:worker --nats-url nats://127.0.0.1:4222   # from the repository root
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from mcp_gateway_worker import ToolContext, ToolFailure, Worker

__all__ = ["FAIL_CODE", "worker"]

FAIL_CODE = "chaos_refused"
"""The code chaos_fail fails with: the tool's own failure, not one caused by a restart."""

ACK_WAIT = float(os.environ.get("CHAOS_ACK_WAIT", "10"))
"""Seconds before JetStream redelivers the command of a worker that died (the SDK's default is 30)."""

worker = Worker("chaos", max_concurrency=32, ack_wait=ACK_WAIT)

_runs: dict[str, int] = {}
_fd: int | None = None


def _record(**fields: Any) -> None:
    """Append one execution record (a single write on an O_APPEND descriptor: whole lines, kill -9 safe)."""
    global _fd
    folder = os.environ.get("CHAOS_EXECUTIONS_DIR")
    if not folder:
        return
    if _fd is None:
        path = os.path.join(folder, f"{os.getpid()}.jsonl")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    line = json.dumps({"pid": os.getpid(), "at": time.time(), **fields}, separators=(",", ":")) + "\n"
    os.write(_fd, line.encode())


async def _work(ctx: ToolContext, args: dict[str, Any], *, fail: bool = False) -> dict[str, Any]:
    run = _runs[ctx.workflow_id] = _runs.get(ctx.workflow_id, 0) + 1
    steps, step_ms = int(args["steps"]), int(args["step_ms"])
    pid = os.getpid()
    base = {"workflow_id": ctx.workflow_id, "tool": ctx.tool, "attempt": ctx.attempt, "run": run}
    _record(phase="start", **base)
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(step_ms / 1000)
            await ctx.progress(step, steps, f"step {step}/{steps} pid {pid} run {run}")
            if fail and step >= min(steps, 2):
                raise ToolFailure(FAIL_CODE, f"chaos_fail refuses after step {step} (pid {pid} run {run})")
    except ToolFailure:
        _record(phase="refused", **base)
        raise
    except BaseException as exc:
        _record(phase="aborted", error=f"{type(exc).__name__}: {exc}"[:300], **base)
        raise
    _record(phase="done", **base)
    return {"workflow_id": ctx.workflow_id, "steps": steps, "pid": pid, "run": run}


@worker.tool("chaos_steps", subject="chaos.steps")
async def chaos_steps(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _work(ctx, args)


@worker.tool("chaos_sync", subject="chaos.sync")
async def chaos_sync(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _work(ctx, args)


@worker.tool("chaos_async", subject="chaos.async")
async def chaos_async(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _work(ctx, args)


@worker.tool("chaos_fail", subject="chaos.fail")
async def chaos_fail(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await _work(ctx, args, fail=True)
