"""mcp-gateway: an MCP server that fronts a NATS JetStream event bus, with workflow state in PostgreSQL.

The package is split by concern: `contract` (the bus contract, shared with workers), `registry` (tools from
config), `core` (state machine and the tool-call service), `store` (PostgreSQL), `bus` (NATS), `server` (the MCP
adapters), `embedded` (the servers started when no URL is configured), `worker` (the Python worker SDK).
This module stays import-light so that a worker importing `mcp_gateway_worker` pulls in nothing else.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
