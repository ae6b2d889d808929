"""MCP over streamable HTTP (the SDK's transport), with health and readiness beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["build_http_app"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _security(host: str, port: int, allowed_hosts: list[str], allowed_origins: list[str]) -> TransportSecuritySettings:
    hosts = list(allowed_hosts)
    origins = list(allowed_origins)
    if host in LOCAL_HOSTS or host in ("0.0.0.0", "::"):
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if host not in LOCAL_HOSTS and host not in ("0.0.0.0", "::"):
        hosts.append(f"{host}:{port}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_http_app(
    server: Server[Any],
    *,
    host: str,
    port: int,
    ready: Callable[[], Awaitable[dict[str, Any]]],
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
    max_request_body_size: int = 4 * 1024 * 1024,
) -> Starlette:
    """`/mcp` (streamable HTTP, both protocol revisions), `/healthz` (alive), `/readyz` (NATS and PostgreSQL)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    return server.streamable_http_app(
        streamable_http_path="/mcp",
        host=host,
        transport_security=_security(host, port, allowed_hosts or [], allowed_origins or []),
        max_request_body_size=max_request_body_size,
        custom_starlette_routes=[Route("/healthz", healthz), Route("/readyz", readyz)],
    )
