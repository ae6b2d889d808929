"""The Python worker SDK: handle mcp-gateway commands from NATS JetStream by tool name.

    worker = Worker("support")

    @worker.tool("lookup_order", subject="support.orders.lookup")
    async def lookup(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.progress(1, 2, "looking it up")
        return {...}

    async with worker.connect("nats://127.0.0.1:4222"):
        await worker.wait_closed()   # or: await worker.run("nats://...") until cancelled

It imports only the bus contract (`mcp_gateway.contract`), never the gateway.
"""

from mcp_gateway.worker._context import ToolContext, ToolFailure, ToolResult
from mcp_gateway.worker._worker import Handler, ResourceHandler, Worker

__all__ = ["Handler", "ResourceHandler", "ToolContext", "ToolFailure", "ToolResult", "Worker"]
