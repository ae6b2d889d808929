"""Workflow resources: `workflow://{id}` (state, progress, result) and `workflow://{id}/events` (history),
and the update notifications their subscribers get on every change, on both protocol revisions; and the
list-changed notifications when the config is reloaded.

2025-11-25 clients subscribe with `resources/subscribe` (the session is kept and notified); 2026-07-28 clients
listen with `subscriptions/listen` (fed by the SDK's subscription bus). Changes come from the store, whichever
gateway process folded them. Fan-out is bounded: when the queue is full, updates are dropped (and logged);
a subscriber re-reads the resource anyway.
"""

from __future__ import annotations

import asyncio
import json
import re
from types import TracebackType
from typing import Any

import mcp.types as types
import structlog
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)

from mcp_gateway.core.changes import Change, Waiters
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.workflows import Viewer, Workflows
from mcp_gateway.registry import Registry
from mcp_gateway.server._workflow_tools import summary, workflow_uri

__all__ = ["TEMPLATES", "ResourceFeed", "connection_of", "parse_uri", "read_workflow_resource"]

log = structlog.get_logger(__name__)

MAX_LISTERS = 10_000
_URI = re.compile(r"^workflow://([A-Za-z0-9_-]{1,64})(/events)?$")

TEMPLATES = [
    types.ResourceTemplate(
        uri_template="workflow://{id}",
        name="workflow",
        title="Workflow",
        description="A workflow's state, latest progress, and result or error (JSON).",
        mime_type="application/json",
    ),
    types.ResourceTemplate(
        uri_template="workflow://{id}/events",
        name="workflow-events",
        title="Workflow history",
        description="A workflow's append-only event history (JSON).",
        mime_type="application/json",
    ),
]


def connection_of(session: ServerSession) -> Any:
    """The client connection behind a request's session. The SDK hands each request a new `ServerSession` proxy;
    per-connection state (`state`) and the standalone channel (`send_resource_updated`, `send_*_list_changed`)
    live on the connection, which the low-level request context does not expose."""
    return getattr(session, "_connection", session)


def parse_uri(uri: str) -> tuple[str, bool] | None:
    """(workflow id, whether the history is meant), or None for a URI that is not a workflow resource."""
    match = _URI.match(uri)
    return (match.group(1), match.group(2) is not None) if match else None


async def read_workflow_resource(workflows: Workflows, viewer: Viewer, uri: str) -> dict[str, Any] | None:
    parsed = parse_uri(uri)
    if parsed is None:
        return None
    workflow_id, history = parsed
    if history:
        events = await workflows.events(workflow_id, viewer)
        return {
            "workflow_id": workflow_id,
            "events": [
                {"id": e.id, "kind": e.kind, "status": e.status, "at": e.at.isoformat(), "data": e.data, "note": e.note}
                for e in events
            ],
        }
    record = await workflows.get(workflow_id, viewer)
    out = summary(record)
    if record.state.result is not None:
        out["result"] = record.state.result
    return out


def as_contents(uri: str, data: dict[str, Any]) -> types.ReadResourceResult:
    text = json.dumps(data, ensure_ascii=False)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
    )


class ResourceFeed:
    """Tells subscribers (both wires) that a workflow resource changed, or the list of tools, prompts or
    resources (after a config reload). 2025-11-25 sessions hear of list changes once they have listed."""

    def __init__(self, waiters: Waiters, supervisor: Supervisor, *, capacity: int = 4096) -> None:
        self._supervisor = supervisor
        self.bus = InMemorySubscriptionBus()
        self._subscribers: dict[str, set[Any]] = {}
        """Connections subscribed to each URI (2025-11-25)."""
        self._listers: dict[Any, None] = {}
        """Connections that listed tools, prompts or resources (2025-11-25), oldest first."""
        self._queue: asyncio.Queue[str] = asyncio.Queue(capacity)
        waiters.add_listener(self._on_change)

    async def __aenter__(self) -> ResourceFeed:
        self._supervisor.start("resource_feed", self._send_loop)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._supervisor.stop("resource_feed")

    def subscribe(self, session: ServerSession, uri: str) -> None:
        self._subscribers.setdefault(uri, set()).add(connection_of(session))

    def unsubscribe(self, session: ServerSession, uri: str) -> None:
        self._forget(connection_of(session), uri)

    def _forget(self, connection: Any, uri: str) -> None:
        subscribers = self._subscribers.get(uri)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._subscribers[uri]

    def listed(self, session: ServerSession) -> None:
        """A 2025-11-25 session listed tools, prompts or resources: tell it when they change. Bounded: past
        MAX_LISTERS connections, the oldest is forgotten (closed ones go at the next announcement)."""
        connection = connection_of(session)
        self._listers.pop(connection, None)
        self._listers[connection] = None
        while len(self._listers) > MAX_LISTERS:
            del self._listers[next(iter(self._listers))]

    async def lists_changed(self, old: Registry, new: Registry) -> None:
        """Announce what a reload changed: on `subscriptions/listen` streams, and to the sessions that listed."""
        changed: list[tuple[Any, str]] = []
        if old.listing != new.listing:
            changed.append((ToolsListChanged(), "send_tool_list_changed"))
        if [p.listing for p in old.prompts.values()] != [p.listing for p in new.prompts.values()]:
            changed.append((PromptsListChanged(), "send_prompt_list_changed"))
        old_resources = ([r.listing for r in old.resources.values()], [t.listing for t in old.templates])
        if old_resources != ([r.listing for r in new.resources.values()], [t.listing for t in new.templates]):
            changed.append((ResourcesListChanged(), "send_resource_list_changed"))
        for event, method in changed:
            await self.bus.publish(event)
            for connection in list(self._listers):
                try:
                    await getattr(connection, method)()
                except Exception:  # the connection is gone: forget it
                    self._listers.pop(connection, None)
        if changed:
            log.info("lists.changed", lists=[type(event).__name__ for event, _ in changed], sessions=len(self._listers))

    def _on_change(self, change: Change) -> None:
        try:
            self._queue.put_nowait(change.workflow_id)
        except asyncio.QueueFull:
            log.warning("resources.update_dropped", workflow_id=change.workflow_id)

    async def _send_loop(self) -> None:
        while True:
            workflow_id = await self._queue.get()
            for uri in (workflow_uri(workflow_id), workflow_uri(workflow_id) + "/events"):
                await self.bus.publish(ResourceUpdated(uri=uri))
                for connection in list(self._subscribers.get(uri, ())):
                    try:
                        await connection.send_resource_updated(uri)
                    except Exception:  # the connection is gone: forget it
                        self._forget(connection, uri)
