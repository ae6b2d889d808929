"""What the gateway tells about itself while it runs: traces (OpenTelemetry, the optional extra `otel`) and
Prometheus metrics (`metrics`: one registry per gateway, served at `/metrics`)."""

from mcp_gateway.observability.metrics import CONTENT_TYPE, GatewayMetrics
from mcp_gateway.observability.tracing import TracingError, configure_tracing, trace_with

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "TracingError", "configure_tracing", "trace_with"]
