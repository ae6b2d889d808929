"""`echo`: returns its arguments. The shortest whole path: validate, persist, publish, worker, fold, reply.

`slow_progress`: runs for a while, reporting progress at a steady pace, each message the worker's Unix time when
it sent it (`t=<time.time()>`): what the benchmark's scale run (`tools/bench.py --scale N`) holds open by the
thousand to measure memory per open call and progress latency. Its calls mostly sleep, so it has a worker of its
own with room for thousands at once; they never take `echo`'s slots.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mcp_gateway_worker import ToolContext, Worker

__all__ = ["slow_worker", "worker"]

worker = Worker("diagnostics", max_concurrency=64)
slow_worker = Worker("diagnostics-slow", max_concurrency=4096)


@worker.tool("echo", subject="diagnostics.echo")
async def echo(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": args["text"], "workflow_id": ctx.workflow_id}


@slow_worker.tool("slow_progress", subject="diagnostics.slow_progress")
async def slow_progress(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Step k at k * interval seconds from the start (steps that fall behind are sent at once, never skipped),
    then the rest of `seconds`; interval 0: no progress, only the wait."""
    seconds, interval = float(args.get("seconds", 10.0)), float(args.get("interval", 0.1))
    steps = int(seconds / interval + 1e-9) if interval > 0 else 0
    start = time.monotonic()
    for step in range(1, steps + 1):
        await asyncio.sleep(max(0.0, start + step * interval - time.monotonic()))
        await ctx.progress(step, steps, f"t={time.time():.6f}")
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
    return {"steps": steps, "workflow_id": ctx.workflow_id}
