"""MCP over streamable HTTP (the SDK's transport), with health and readiness beside it."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlparse

from mcp.server import Server
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    BearerAuthBackend,
    RequireAuthMiddleware,
)
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.server.streamable_http import EventStore, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.auth import Principals
from mcp_gateway.core.access import Viewer
from mcp_gateway.core.limits import CallLimits
from mcp_gateway.core.service import RetryRefused
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry
from mcp_gateway.core.workflows import AnswerRefused, WorkflowNotFound, Workflows
from mcp_gateway.server._access_log import AccessLog, NoteCaller
from mcp_gateway.server._guard import AuthFailureThrottle, CallerRateLimit, Guard, RateLimit, RequestsInFlight
from mcp_gateway.server._lean import LeanRoute
from mcp_gateway.server._lean_sessions import SessionCalls
from mcp_gateway.server._workflow_tools import summary
from mcp_gateway.server.admin import AdminPages, AdminSession, SessionCookie
from mcp_gateway.store import DeadLetter, WorkflowRecord

__all__ = ["build_http_app"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _metadata_routes(
    resource: AnyHttpUrl, servers: list[AnyHttpUrl], scopes: list[str] | Callable[[], list[str]] | None
) -> list[Route]:
    """RFC 9728 protected resource metadata as the SDK's `create_protected_resource_routes` serves it (its handler,
    its CORS, its path), but `scopes_supported` may be a callable asked at each request: a reload of the tool
    folder may name new scopes."""
    metadata = ProtectedResourceMetadata(
        resource=resource,
        authorization_servers=servers,
        scopes_supported=scopes() if callable(scopes) else scopes,
        resource_name="mcp-gateway",
    )
    handler = _LiveScopes(metadata, scopes) if callable(scopes) else ProtectedResourceMetadataHandler(metadata)
    path = urlparse(str(build_resource_metadata_url(resource))).path
    return [Route(path, endpoint=cors_middleware(handler.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"])]


class _LiveScopes(ProtectedResourceMetadataHandler):
    """The SDK's metadata handler, the scopes asked for at each request."""

    def __init__(self, metadata: ProtectedResourceMetadata, scopes: Callable[[], list[str]]) -> None:
        super().__init__(metadata)
        self.scopes = scopes

    async def handle(self, request: Request) -> Response:
        self.metadata = self.metadata.model_copy(update={"scopes_supported": self.scopes()})
        return await super().handle(request)


class _TrimHeaders:
    """Strips the optional whitespace around header values that HTTP says is not part of them (uvicorn's parser
    keeps it, and the SDK compares `Mcp-Method` / `Mcp-Name` with the body as they come)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(name, value.strip(b" \t")) for name, value in scope["headers"]]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


Retry = Callable[[str, dict[str, Any] | None, Viewer], Awaitable[WorkflowRecord]]
"""Run a workflow again as an admin (with new arguments, or None for the old ones)."""
DeadLetters = Callable[[int], Awaitable[list[DeadLetter]]]
Metrics = Callable[[], Awaitable[bytes]]
"""The Prometheus text exposition of the gateway's metrics (`GatewayMetrics.exposition`)."""
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for admins: everything but the body's bytes, of which a printable preview."""
    return {
        "id": letter.id,
        "at": letter.at.isoformat() if letter.at else None,
        "source": letter.source,
        "subject": letter.subject,
        "workflow_id": letter.workflow_id,
        "reason": letter.reason,
        "size": letter.size,
        "delivered": letter.delivered,
        "headers": letter.headers,
        "preview": letter.head[:200].decode("utf-8", errors="replace"),
    }


async def _retry_arguments(request: Request) -> dict[str, Any] | JSONResponse | None:
    """The optional `{"arguments": {...}}` body of a retry, or the 400 to answer."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return _problem(400, "bad_body", 'the body must be JSON: {} or {"arguments": {...}}')
    if not isinstance(parsed, dict) or not isinstance(parsed.get("arguments", {}), dict):
        return _problem(400, "bad_body", "the body must be a JSON object whose 'arguments' is an object")
    arguments = parsed.get("arguments")
    return arguments if isinstance(arguments, dict) else None


def _problem(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


class _Authenticated:
    """In front of a route: a request whose bearer token failed (or, when authentication is required, one with
    none) gets the SDK's 401 with `WWW-Authenticate` naming the protected resource metadata; the rest pass."""

    def __init__(self, app: ASGIApp, *, required: bool, metadata_url: AnyHttpUrl | None) -> None:
        self.app = app
        self.required = required
        self.refuse = RequireAuthMiddleware(app, [], metadata_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.required or any(name == b"authorization" for name, _ in scope.get("headers", ())):
            await self.refuse(scope, receive, send)  # passes an authenticated request through
        else:
            await self.app(scope, receive, send)


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, giving each session its own view of the event store (`for_session`), and
    telling `on_discard` of each session it discards (the lean route's `SessionCalls.ended`)."""

    on_discard: Callable[[str], None] | None = None

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        if self.on_discard is not None:
            self.on_discard(session_id)
        await super()._discard_session(session_id, transport)

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        for_session = getattr(self.event_store, "for_session", None)
        if transport is not None and transport.mcp_session_id is not None and for_session is not None:
            transport._event_store = for_session(transport.mcp_session_id)  # pyright: ignore[reportPrivateUsage]
        return transport

    @property
    def lifespan_state(self) -> Any:
        """The server's lifespan state while `run()` is entered, else None (for the lean route)."""
        return self._lifespan_state


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
    workflows: Workflows,
    principals: Principals,
    verifier: TokenVerifier | None = None,
    auth: Literal["required", "optional"] = "optional",
    public_url: str | None = None,
    authorization_servers: list[str] | None = None,
    scopes_supported: list[str] | Callable[[], list[str]] | None = None,
    event_store: EventStore | None = None,
    heartbeat: float = 15.0,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
    max_request_body_size: int = 4 * 1024 * 1024,
    retry: Retry | None = None,
    dead_letters: DeadLetters | None = None,
    rate_limit: str | None = None,
    requests_in_flight: CallLimits | None = None,
    body_timeout: float = 30.0,
    auth_failures: AuthFailureThrottle | None = None,
    metrics: Metrics | None = None,
    metrics_scope: str = "mcpgw:metrics",
    telemetry: Telemetry | None = None,
    lean: bool = True,
) -> Starlette:
    """`/mcp` (streamable HTTP, both protocol revisions), `/healthz` (alive), `/readyz` (NATS and PostgreSQL),
    `/workflows/{id}/events` (SSE), `/admin/...` (admins), `/metrics` (Prometheus's text format, from `metrics`:
    a token with `metrics_scope` or an admin's), and the RFC 9728 protected resource metadata. `telemetry` is told
    of refusals by a limit and failed authentications. `lean`: `tools/call` and `tools/list` on 2026-07-28 and in
    2025-11-25 sessions are answered by the lean route (`_lean.py`) in front of the SDK's transport, which answers
    everything else.

    Every route but the health checks and the metadata is behind `_Authenticated`: with `auth="required"` a
    request needs a valid bearer token; with "optional" a request without one is `principals.local`, and a
    request with a bad one is refused all the same."""
    if auth == "required" and verifier is None:
        raise ValueError("auth is required but no token verifier is configured")
    resource = AnyHttpUrl(f"{(public_url or f'http://{host}:{port}').rstrip('/')}/mcp")
    metadata_url = build_resource_metadata_url(resource)

    def guarded(endpoint: ASGIApp) -> ASGIApp:
        return _Authenticated(endpoint, required=auth == "required", metadata_url=metadata_url)

    def who(request: Request) -> Viewer:
        return principals.of_scope(request.scope)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def workflow_events(request: Request) -> Response:
        """SSE for UIs and admins: the history after `Last-Event-ID`, then live events, ending with the workflow."""
        workflow_id = request.path_params["workflow_id"]
        viewer = who(request)
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):  # an event id: a bigint
            return _problem(400, "bad_last_event_id", f"Last-Event-ID must be an event id (digits), got {raw[:40]!r}")
        after = int(raw)
        try:
            await workflows.get(workflow_id, viewer)
        except WorkflowNotFound as exc:
            return _problem(404, "not_found", str(exc))

        async def stream() -> AsyncGenerator[dict[str, str]]:
            async for event in workflows.follow(workflow_id, viewer, after):
                data = {"kind": event.kind, "status": event.status, "at": event.at.isoformat(), "data": event.data}
                if event.note:
                    data["note"] = event.note
                yield {"id": str(event.id), "event": event.kind, "data": json.dumps(data, ensure_ascii=False)}

        return EventSourceResponse(stream(), ping=heartbeat)

    def admin_of(request: Request) -> Viewer | JSONResponse:
        """The admin making the request, or the 401 (no token) / 403 (not an admin) to answer."""
        if not isinstance(request.scope.get("user"), AuthenticatedUser):
            response = _problem(401, "invalid_token", "an admin's bearer token is required (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="Authentication required", '
                f'resource_metadata="{metadata_url}"'
            )
            return response
        viewer = who(request)
        if not viewer.admin:
            scope = principals.admin_scope
            response = _problem(403, "insufficient_scope", f"{viewer.subject!r} is not an admin: needs scope {scope!r}")
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{metadata_url}"'
            )
            return response
        return viewer

    async def admin_dead_letters(request: Request) -> JSONResponse:
        """GET /admin/dead-letters: the newest dead letters (`?limit=`, at most 500)."""
        if isinstance(admin := admin_of(request), JSONResponse):
            return admin
        if dead_letters is None:
            return _problem(404, "not_served", "dead letters are not served here")
        raw = request.query_params.get("limit", "50")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 500):
            return _problem(400, "bad_limit", f"limit must be a whole number from 1 to 500, got {raw[:20]!r}")
        return JSONResponse({"dead_letters": [dead_letter_view(d) for d in await dead_letters(int(raw))]})

    async def admin_action(request: Request) -> JSONResponse:
        """POST /admin/workflows/{id}/{approve|deny|cancel|retry} by an admin (a token with the admin scope);
        retry takes an optional JSON body `{"arguments": {...}}` (a redrive with new arguments). The history
        records the admin's subject."""
        if isinstance(admin := admin_of(request), JSONResponse):
            return admin
        workflow_id, action = request.path_params["workflow_id"], request.path_params["action"]
        try:
            if action == "retry" and retry is not None:
                arguments = await _retry_arguments(request)
                if isinstance(arguments, JSONResponse):
                    return arguments
                record = await retry(workflow_id, arguments, admin)
            elif action == "cancel":
                record = await workflows.cancel(workflow_id, admin, f"cancelled by admin {admin.subject}")
            elif action in ("approve", "deny"):
                decision = "accept" if action == "approve" else "decline"
                record = await workflows.answer(workflow_id, admin, "approval", decision)
            else:
                expected = "approve, deny, cancel or retry"
                return _problem(404, "unknown_action", f"unknown action {action!r}; expected {expected}")
        except WorkflowNotFound as exc:
            return _problem(404, "not_found", str(exc))
        except (AnswerRefused, RetryRefused) as exc:
            return _problem(409, "refused", str(exc))
        return JSONResponse({"workflow": summary(record)})

    async def metrics_endpoint(request: Request) -> Response:
        """GET /metrics: for a token with the metrics scope (Prometheus's least privilege) or an admin's; 401
        without a token, 403 with one that has neither scope."""
        if not isinstance(request.scope.get("user"), AuthenticatedUser):
            response = _problem(401, "invalid_token", "a bearer token is required (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="Authentication required", '
                f'resource_metadata="{metadata_url}"'
            )
            return response
        viewer = who(request)
        if not (viewer.admin or metrics_scope in viewer.scopes):
            needs = f"scope {metrics_scope!r} (or {principals.admin_scope!r})"
            response = _problem(403, "insufficient_scope", f"{viewer.subject!r} may not read metrics: needs {needs}")
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="insufficient_scope", scope="{metrics_scope}", resource_metadata="{metadata_url}"'
            )
            return response
        assert metrics is not None  # the route is there only with it
        return Response(await metrics(), media_type=METRICS_MEDIA_TYPE)

    async def readyz(request: Request) -> JSONResponse:
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "unavailable", "process": os.getpid(), "checks": checks}  # which answered
        return JSONResponse(body, status_code=200 if ok else 503)

    manager = _SessionManager(
        app=server,
        event_store=event_store,
        retry_interval=1000 if event_store is not None else None,
        security_settings=None,  # the Guard checks Host and Origin on every route, /mcp included, once
        max_request_body_size=max_request_body_size,
    )
    mcp_endpoint: ASGIApp = StreamableHTTPASGIApp(manager)
    if lean:
        sessions = SessionCalls(manager)
        earlier = [m for m in server.middleware if not isinstance(getattr(m, "__self__", None), SessionCalls)]
        server.middleware = [sessions.remember, *earlier]  # notes each 2025-11-25 session's connection
        manager.on_discard = sessions.ended
        mcp_endpoint = LeanRoute(
            mcp_endpoint,
            server,
            lifespan_state=lambda: manager.lifespan_state,
            sessions=sessions,
            streamed=getattr(server, "streamed", lambda name: False),
        )
    issuers = authorization_servers or [str(resource).removesuffix("/mcp")]
    routes: list[BaseRoute] = [
        Route("/mcp", endpoint=guarded(mcp_endpoint)),
        *_metadata_routes(resource, [AnyHttpUrl(u) for u in issuers], scopes_supported),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *([Route("/metrics", endpoint=guarded(_endpoint(metrics_endpoint)), methods=["GET"])] if metrics else []),
        Route("/workflows/{workflow_id}/events", endpoint=guarded(_endpoint(workflow_events))),
        Route("/admin/workflows/{workflow_id}/{action}", endpoint=guarded(_endpoint(admin_action)), methods=["POST"]),
    ]
    # The admin page (server/admin) under /admin, for browsers; /admin/dead-letters still answers the JSON API's
    # clients as before. Its session cookie counts there and on the SSE feed only (AdminSession, below).
    cookie = SessionCookie(secure=resource.scheme == "https")
    dead_letters_api = guarded(_endpoint(admin_dead_letters))
    if verifier is None:
        routes.append(Route("/admin/dead-letters", endpoint=dead_letters_api, methods=["GET"]))
    else:
        pages = AdminPages(
            workflows=workflows,
            principals=principals,
            verifier=verifier,
            cookie=cookie,
            retry=retry,
            dead_letters=dead_letters,
        )
        routes += pages.routes(dead_letters_api=dead_letters_api)
    metadata = next(r for r in routes if isinstance(r, Route) and r.path == metadata_url.path)
    if metadata.path != "/.well-known/oauth-protected-resource":  # also at the bare well-known path
        routes.append(Route("/.well-known/oauth-protected-resource", metadata.endpoint, methods=["GET", "OPTIONS"]))
    # Outermost first: the access log, the guard (Host and Origin on every route, the body's size and time, the
    # failed-auth throttle), header trimming, authentication, then the rate per caller (by subject once known).
    security = _security(host, port, allowed_hosts or [], allowed_origins or [])
    middleware = [
        Middleware(AccessLog, routes=routes),
        Middleware(
            Guard,
            security=security,
            body_timeout=body_timeout,
            max_body_bytes=max_request_body_size,
            auth_failures=auth_failures,
            telemetry=telemetry or NO_TELEMETRY,
        ),
        Middleware(_TrimHeaders),
    ]
    if verifier is not None:
        middleware += [
            Middleware(AdminSession, cookie=cookie, public_origin=str(resource).removesuffix("/mcp")),
            Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(verifier)),
            Middleware(AuthContextMiddleware),
        ]
    middleware.append(Middleware(NoteCaller, who=principals.of_scope))
    if rate_limit is not None:
        middleware.append(Middleware(CallerRateLimit, limit=RateLimit(rate_limit), telemetry=telemetry or NO_TELEMETRY))
    if requests_in_flight is not None:
        middleware.append(Middleware(RequestsInFlight, limits=requests_in_flight, telemetry=telemetry or NO_TELEMETRY))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lambda app: manager.run())
    return app


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """A request handler as a plain ASGI app (so it can sit inside `_Authenticated`)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return app
