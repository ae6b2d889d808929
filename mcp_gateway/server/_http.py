"""MCP over streamable HTTP (the SDK's transport), with health and readiness beside it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from mcp.server import Server
from mcp.server.streamable_http import EventStore
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.core.service import RetryRefused
from mcp_gateway.core.workflows import ADMIN, AnswerRefused, Viewer, WorkflowNotFound, Workflows
from mcp_gateway.server._workflow_tools import summary
from mcp_gateway.store import DeadLetter, WorkflowRecord

__all__ = ["build_http_app"]

ANONYMOUS = Viewer("anonymous")
"""Who an HTTP caller is until authentication names them."""

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


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


Retry = Callable[[str, dict[str, Any] | None], Awaitable[WorkflowRecord]]
"""Run a workflow again as an admin (with new arguments, or None for the old ones)."""
DeadLetters = Callable[[int], Awaitable[list[DeadLetter]]]


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
    event_store: EventStore | None = None,
    viewer: Viewer = ANONYMOUS,
    heartbeat: float = 15.0,
    admin_token_sha256: str | None = None,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
    max_request_body_size: int = 4 * 1024 * 1024,
    retry: Retry | None = None,
    dead_letters: DeadLetters | None = None,
) -> Starlette:
    """`/mcp` (streamable HTTP, both protocol revisions), `/healthz` (alive), `/readyz` (NATS and PostgreSQL),
    `/workflows/{id}/events` (SSE)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def workflow_events(request: Request) -> Response:
        """SSE for UIs and admins: the history after `Last-Event-ID`, then live events, ending with the workflow."""
        workflow_id = request.path_params["workflow_id"]
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

    def refused(request: Request) -> JSONResponse | None:
        """None for a request with the admin bearer token; else the 404 (API off) or 401 to answer."""
        if admin_token_sha256 is None:
            return _problem(404, "admin_api_off", "the admin API is off: set admin_token_sha256 to turn it on")
        given = request.headers.get("authorization", "")
        token = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not token or not hmac.compare_digest(digest, admin_token_sha256):
            response = _problem(401, "unauthorized", "an admin bearer token is required (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="mcp-gateway admin"'
            return response
        return None

    async def admin_dead_letters(request: Request) -> JSONResponse:
        """GET /admin/dead-letters: the newest dead letters (`?limit=`, at most 500)."""
        if (answer := refused(request)) is not None:
            return answer
        if dead_letters is None:
            return _problem(404, "not_served", "dead letters are not served here")
        raw = request.query_params.get("limit", "50")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 500):
            return _problem(400, "bad_limit", f"limit must be a whole number from 1 to 500, got {raw[:20]!r}")
        return JSONResponse({"dead_letters": [dead_letter_view(d) for d in await dead_letters(int(raw))]})

    async def admin_action(request: Request) -> JSONResponse:
        """POST /admin/workflows/{id}/{approve|deny|cancel|retry}, with `Authorization: Bearer <admin token>`;
        retry takes an optional JSON body `{"arguments": {...}}` (a redrive with new arguments)."""
        if (answer := refused(request)) is not None:
            return answer
        workflow_id, action = request.path_params["workflow_id"], request.path_params["action"]
        try:
            if action == "retry" and retry is not None:
                arguments = await _retry_arguments(request)
                if isinstance(arguments, JSONResponse):
                    return arguments
                record = await retry(workflow_id, arguments)
            elif action == "cancel":
                record = await workflows.cancel(workflow_id, ADMIN, "cancelled by an admin")
            elif action in ("approve", "deny"):
                decision = "accept" if action == "approve" else "decline"
                record = await workflows.answer(workflow_id, ADMIN, "approval", decision)
            else:
                expected = "approve, deny, cancel or retry"
                return _problem(404, "unknown_action", f"unknown action {action!r}; expected {expected}")
        except WorkflowNotFound as exc:
            return _problem(404, "not_found", str(exc))
        except (AnswerRefused, RetryRefused) as exc:
            return _problem(409, "refused", str(exc))
        return JSONResponse({"workflow": summary(record)})

    async def readyz(request: Request) -> JSONResponse:
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=event_store,
        retry_interval=1000 if event_store is not None else None,
        host=host,
        transport_security=_security(host, port, allowed_hosts or [], allowed_origins or []),
        max_request_body_size=max_request_body_size,
        custom_starlette_routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/workflows/{workflow_id}/events", workflow_events),
            Route("/admin/workflows/{workflow_id}/{action}", admin_action, methods=["POST"]),
            Route("/admin/dead-letters", admin_dead_letters),
        ],
    )
    app.add_middleware(_TrimHeaders)
    return app
