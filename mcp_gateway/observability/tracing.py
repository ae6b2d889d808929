"""Tracing for the gateway (OpenTelemetry, the optional extra `otel`), decided once at start; free when off.

`configure_tracing` (the CLI's `serve` and `worker` call it once) turns tracing on when the extra is installed
and either the standard environment asks for it (`OTEL_TRACES_EXPORTER=otlp|console`, not `none`, and not
`OTEL_SDK_DISABLED=true`) or the `tracing` setting is true (then the exporter defaults to otlp, and a missing
extra is an error). It makes an OpenTelemetry TracerProvider the global one (so the MCP SDK's own spans join in)
and installs one tracer in the core's port (`mcp_gateway.core.tracing`) and in the worker SDK (workers run in this
process with `serve --with-examples`). Off, neither switch is touched and nothing of the OpenTelemetry SDK is
imported: the core's spans are the no-op ones.

The spans of one tool call, one trace: `gateway.request` (the MCP request, kind server; a child of the client's
`traceparent`, from `_meta` or the HTTP header, or of the MCP SDK's own `tools/call` span) > `gateway.call` >
`gateway.validate`, `gateway.store.create`, `gateway.publish` (kind producer; its context is what the command's
`traceparent` header carries) > `worker.handle` (in the worker, kind consumer) > `gateway.fold` for each of its
events (kind consumer); and `gateway.reply` under the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_gateway_worker import _tracing as worker_tracing

from mcp_gateway.core import tracing as core_tracing
from mcp_gateway.errors import GatewayError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["TracingError", "configure_tracing", "trace_with"]

SCOPE = "mcp-gateway"
"""The instrumentation scope of the gateway's spans (the worker SDK's are `mcp-gateway-worker`)."""


class TracingError(GatewayError):
    """Tracing was asked for in a way that cannot be had (names the variable or setting, and what is expected)."""


def configure_tracing(service_name: str = "mcp-gateway", *, enabled: bool = False) -> bool:
    """Decide once, at start, whether this process traces; True when it does. `enabled`: the `tracing` setting."""
    try:
        chosen = worker_tracing.tracer_from_env(service_name, enabled=enabled, extra="mcp-gateway[otel]", scope=SCOPE)
    except worker_tracing.TracingError as exc:
        raise TracingError(f"tracing: {exc}") from None
    if chosen is not None:
        core_tracing.install(chosen)
        worker_tracing.install(worker_tracing.OtelTracer(None, worker_tracing.SCOPE))  # the global provider, now ours
    return chosen is not None


def trace_with(provider: TracerProvider | None) -> None:
    """Send the gateway's and the worker SDK's spans to `provider` (None: stop tracing, the no-op tracers again),
    without touching the global provider: for tests, and for an application that embeds the gateway and owns
    its provider."""
    if provider is None:
        core_tracing.install(None)
        worker_tracing.install(None)
        return
    core_tracing.install(worker_tracing.OtelTracer(provider, SCOPE))
    worker_tracing.install(worker_tracing.OtelTracer(provider, worker_tracing.SCOPE))
