"""The Python worker SDK: handle mcp-gateway commands from NATS JetStream by tool name.

    worker = Worker("support")

    @worker.tool("lookup_order", subject="support.orders.lookup")
    async def lookup(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.progress(1, 2, "looking it up")
        return {...}

    await worker.run("nats://127.0.0.1:4222")   # until cancelled; or `async with worker.connect(url): ...`

or from a shell: `mcp-gateway-worker tickets:worker --nats-url nats://... [--user U --password P | --creds F]`
(`worker.run(url, user=..., password=...)` from code; a refusal by NATS raises `PermissionDenied`). Prometheus
metrics of the commands handled: `--metrics-port PORT` (or `connect(url, metrics_port=...)`), with the extra
`metrics` (`pip install 'mcp-gateway-worker[metrics]'`). This distribution
(`mcp-gateway-worker`) is the bus contract (`mcp_gateway_worker.contract`) and this SDK; it needs nats-py,
pydantic and structlog, and nothing of the gateway.
"""

from mcp_gateway_worker._cli import load_worker, run_workers
from mcp_gateway_worker._context import ToolContext, ToolFailure, ToolResult
from mcp_gateway_worker._credentials import BusCredentials, CredentialsRefused, PermissionDenied, redact_url
from mcp_gateway_worker._metrics import MetricsPortUnavailable, MetricsUnavailable, WorkerMetrics
from mcp_gateway_worker._worker import Handler, ResourceHandler, Worker

__all__ = [
    "BusCredentials",
    "CredentialsRefused",
    "Handler",
    "MetricsPortUnavailable",
    "MetricsUnavailable",
    "PermissionDenied",
    "ResourceHandler",
    "ToolContext",
    "ToolFailure",
    "ToolResult",
    "Worker",
    "WorkerMetrics",
    "load_worker",
    "redact_url",
    "run_workers",
]
