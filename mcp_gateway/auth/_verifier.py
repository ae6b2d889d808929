"""The gateway's `TokenVerifier` (the MCP SDK's auth port): static tokens first, then JWTs when configured;
and the principal (`Viewer`) a request's token stands for."""

from __future__ import annotations

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import Scope

from mcp_gateway.auth._jwt import JwtVerifier
from mcp_gateway.auth._static import PREFIX, StaticTokens
from mcp_gateway.core.access import Viewer
from mcp_gateway.errors import GatewayError

__all__ = ["GatewayTokenVerifier", "Principals"]


class GatewayTokenVerifier:
    def __init__(self, static: StaticTokens | None, jwt: JwtVerifier | None) -> None:
        self.static = static
        self.jwt = jwt

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            if token.startswith(PREFIX):
                return await self.static.verify(token) if self.static is not None else None
            return await self.jwt.verify(token) if self.jwt is not None else None
        except GatewayError:  # the token store is away: the request is refused (401), never let through
            return None


class Principals:
    """Maps a request to its principal: the token's subject and scopes (an admin with `admin_scope`), or, when
    the request carries no token and authentication is optional, the local principal."""

    def __init__(self, *, admin_scope: str, local: Viewer) -> None:
        self.admin_scope = admin_scope
        self.local = local

    def of_token(self, token: AccessToken) -> Viewer:
        scopes = frozenset(token.scopes)
        return Viewer(token.subject or token.client_id, admin=self.admin_scope in scopes, scopes=scopes)

    def of_scope(self, scope: Scope | None) -> Viewer:
        user = scope.get("user") if scope is not None else None
        if isinstance(user, AuthenticatedUser):
            return self.of_token(user.access_token)
        return self.local

    def current(self) -> Viewer:
        """The principal of the HTTP request being handled in this task (the SDK's auth context), else the local
        one: for checks the SDK makes before a handler has a request context (the `Mcp-Param-*` schema lookup)."""
        user = auth_context_var.get()
        return self.of_token(user.access_token) if user is not None else self.local
