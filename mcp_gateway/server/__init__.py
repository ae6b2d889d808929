"""The MCP surface: the SDK's low-level `Server` with the gateway's handlers, served over stdio or HTTP."""

from mcp_gateway.server._handlers import build_server, principal_from
from mcp_gateway.server._http import build_http_app
from mcp_gateway.server._resources import ResourceFeed
from mcp_gateway.server._results import check_content, outcome_to_result
from mcp_gateway.server._stdio import serve_stdio

__all__ = [
    "ResourceFeed",
    "build_http_app",
    "build_server",
    "check_content",
    "outcome_to_result",
    "principal_from",
    "serve_stdio",
]
