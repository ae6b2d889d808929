"""structlog set-up: JSON lines on stderr (stdout may carry the MCP protocol), with the bound context ids. One
recipe serves the gateway and the workers: it lives in the worker distribution, which the gateway depends on."""

from mcp_gateway_worker._logs import configure_logging

__all__ = ["configure_logging"]
