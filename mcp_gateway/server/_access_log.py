"""The access log: one line per HTTP request, when its response has ended (a stream: when it closes).

`http.request` with the method, the route (its template, `/admin/workflows/{workflow_id}/{action}`, so ids and
query strings, which may carry secrets, never reach the log), the status, the duration in ms, the bytes sent, the
client's address, the caller's subject once authenticated and the trace id of a client's `traceparent`. Health
probes log at debug level, the rest at info; a request refused before it had an answer (the client went away)
logs status 0.

`AccessLog` is the outermost middleware, so refusals by the guard are logged too; `NoteCaller`, placed after
authentication, tells it who the caller was (the scope is copied on the way in, so it writes to a shared note).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.core.access import Viewer

__all__ = ["AccessLog", "NoteCaller"]

log = structlog.get_logger("mcp_gateway.access")

_NOTE = "mcpgw.access"
_QUIET = frozenset({"/healthz", "/readyz"})


class AccessLog:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", scope["path"]))
        return "(no route)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        note: dict[str, Any] = {}
        sent = {"status": 0, "bytes": 0}

        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app({**scope, _NOTE: note}, receive, send_noted)
        finally:
            route = self._route(scope)
            client = scope.get("client")
            fields: dict[str, Any] = {
                "method": scope["method"],
                "route": route,
                "status": sent["status"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "bytes": sent["bytes"],
                "client": client[0] if client else None,
            }
            if subject := note.get("subject"):
                fields["caller"] = subject
            if trace_id := _trace_id(scope):
                fields["trace_id"] = trace_id
            if route in _QUIET:
                log.debug("http.request", **fields)
            else:
                log.info("http.request", **fields)


class NoteCaller:
    """After authentication: the subject of the caller's valid token (none for an anonymous or refused one)."""

    def __init__(self, app: ASGIApp, who: Callable[[Scope], Viewer]) -> None:
        self.app = app
        self.who = who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        note = scope.get(_NOTE)
        user = scope.get("user")
        if isinstance(note, dict) and user is not None and user.is_authenticated:  # anonymous: no caller named
            note["subject"] = self.who(scope).subject
        await self.app(scope, receive, send)


def _trace_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
                return parts[1]
            return None
    return None
