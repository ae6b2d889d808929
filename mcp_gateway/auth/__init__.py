"""Who a caller is: static tokens, JWT access tokens against a JWKS, and the principal a request stands for.

The MCP SDK's own auth support does the HTTP side (the bearer middleware, `WWW-Authenticate`, RFC 9728
protected resource metadata); this package is its `TokenVerifier` and the mapping to the core's `Viewer`.
"""

from mcp_gateway.auth._jwt import JwtSettings, JwtVerifier
from mcp_gateway.auth._static import PREFIX, StaticTokens, StoredToken, TokenStore, new_token, token_sha256
from mcp_gateway.auth._verifier import GatewayTokenVerifier, Principals

__all__ = [
    "PREFIX",
    "GatewayTokenVerifier",
    "JwtSettings",
    "JwtVerifier",
    "Principals",
    "StaticTokens",
    "StoredToken",
    "TokenStore",
    "new_token",
    "token_sha256",
]
