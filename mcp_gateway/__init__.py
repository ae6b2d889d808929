"""mcp-gateway: an MCP server that fronts a NATS JetStream event bus, with workflow state in PostgreSQL.

The package is split by concern: `registry` (tools from config), `core` (the state machine, the tool-call
service, the supervisor, and the ports it owns), `store` (its PostgreSQL and in-memory adapters), `bus` (NATS and
in-memory), `server` (the MCP adapters), `embedded` (the servers started when no URL is configured), `examples`
(the example workers). The bus contract and the Python worker SDK are a distribution of their own,
`mcp-gateway-worker` (`worker/`, imported as `mcp_gateway_worker`), which imports nothing of this package.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
