"""`echo`: returns its arguments. The shortest whole path: validate, persist, publish, worker, fold, reply."""

from __future__ import annotations

from typing import Any

from mcp_gateway_worker import ToolContext, Worker

__all__ = ["worker"]

worker = Worker("diagnostics", max_concurrency=64)


@worker.tool("echo", subject="diagnostics.echo")
async def echo(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": args["text"], "workflow_id": ctx.workflow_id}
