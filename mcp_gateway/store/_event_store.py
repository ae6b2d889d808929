"""The SDK's `EventStore` (streamable-HTTP resumability on the 2025-11-25 wire) in PostgreSQL.

A client whose SSE stream breaks reconnects with `Last-Event-ID` and gets every message it missed, from
whichever gateway process it reaches. Old events are removed after `retention` seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types.jsonrpc import JSONRPCMessage, jsonrpc_message_adapter
from pydantic import ValidationError
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.store._postgres import store_failure

__all__ = ["UNSTORED", "PostgresEventStore"]

UNSTORED = "0"
"""The event id of a message the store could not keep (no stored event has it, so replay after it finds none)."""
STORE_TIMEOUT = 2.0
"""Seconds a message waits for the store before it goes out unstored."""

log = structlog.get_logger(__name__)

_STORE = text("INSERT INTO mcp_stream_events (stream_id, message) VALUES (:stream, :message) RETURNING id").bindparams(
    bindparam("message", type_=JSONB(none_as_null=True))  # a priming event is SQL NULL, not JSON null
)
_STREAM_OF = text("SELECT stream_id FROM mcp_stream_events WHERE id = :id")
_AFTER = text(
    "SELECT id, message FROM mcp_stream_events WHERE stream_id = :stream AND id > :id AND message IS NOT NULL "
    "ORDER BY id"
)
_PRUNE = text("DELETE FROM mcp_stream_events WHERE created_at < now() - make_interval(secs => :age)")


class PostgresEventStore(EventStore):
    def __init__(self, engine: AsyncEngine, *, retention: float = 3_600.0, prune_every: int = 1_000) -> None:
        self._engine = engine
        self._retention = retention
        self._prune_every = prune_every
        self._stored = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Store the message and return its id. When PostgreSQL cannot take it, the message still goes out now,
        with the id `UNSTORED` (a reconnect after it replays nothing): a client waiting for its answer must
        get it even while the store is away, so a store failure is logged, never raised into the SDK's router."""
        body: Any = None
        if message is not None:
            body = message.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            async with asyncio.timeout(STORE_TIMEOUT), self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                event_id = (await conn.execute(_STORE, {"stream": stream_id, "message": body})).scalar_one()
        except Exception as exc:
            log.warning("event_store.unstored", stream=stream_id, error=str(store_failure(exc)))
            return UNSTORED
        self._stored += 1
        if self._stored % self._prune_every == 0:
            try:
                removed = await self.prune()
            except Exception as exc:
                log.warning("event_store.prune_failed", error=str(store_failure(exc)))
            else:
                log.info("event_store.pruned", removed=removed)
        return str(event_id)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback, *, only_prefix: str = ""
    ) -> StreamId | None:
        """Replay the stream of `last_event_id` after it (only a stream named with `only_prefix`: a session's)."""
        if not (last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 18):
            return None
        async with self._engine.connect() as conn:
            stream_id = (await conn.execute(_STREAM_OF, {"id": int(last_event_id)})).scalar()
            if stream_id is None or not str(stream_id).startswith(only_prefix):
                return None
            rows = (await conn.execute(_AFTER, {"stream": stream_id, "id": int(last_event_id)})).all()
        for row in rows:
            try:
                message = jsonrpc_message_adapter.validate_python(row.message)
            except ValidationError as exc:
                log.error("event_store.bad_message", event_id=row.id, error=str(exc))
                continue
            await send_callback(EventMessage(message, str(row.id)))
        return str(stream_id)

    def for_session(self, session_id: str) -> EventStore:
        """This store as one session sees it: its streams are its own (the SDK names streams by request id, so
        without this a session resuming after an event id would be sent another session's stream of that id)."""
        return _SessionEvents(self, session_id)

    async def prune(self) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(_PRUNE, {"age": self._retention})
            return int(getattr(result, "rowcount", 0) or 0)


class _SessionEvents(EventStore):
    def __init__(self, store: PostgresEventStore, session_id: str) -> None:
        self._store = store
        self._prefix = f"{session_id}/"

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return await self._store.store_event(self._prefix + stream_id, message)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream = await self._store.replay_events_after(last_event_id, send_callback, only_prefix=self._prefix)
        return stream.removeprefix(self._prefix) if stream is not None else None
