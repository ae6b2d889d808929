"""The dispatcher: publishes commands from the outbox, marks them published in batches, and relays leftovers.

A call publishes its own command right after the commit (`send`), so the hot path waits for no poll. If that
publish fails, or the process dies before it, the entry stays in the outbox and the relay publishes it once
it is older than `relay_after` seconds, from whichever gateway process gets there first. JetStream's
de-duplication (`Nats-Msg-Id`) makes a second publish of the same command harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import TracebackType

import structlog
from mcp_gateway_worker.contract import Headers

from mcp_gateway.core.ports import Bus, OutboxMessage, WorkflowStore
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry
from mcp_gateway.core.tracing import tracer
from mcp_gateway.errors import BusError, StoreError

__all__ = ["Dispatcher"]

log = structlog.get_logger(__name__)

MAX_MARKS = 10_000
"""Published outbox ids waiting to be marked, at most; beyond it a mark is dropped and the relay re-sends."""


class Dispatcher:
    def __init__(
        self,
        store: WorkflowStore,
        bus: Bus,
        supervisor: Supervisor,
        *,
        relay_after: float = 5.0,
        relay_interval: float = 1.0,
        batch: int = 256,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._bus = bus
        self._relay_after = relay_after
        self._relay_interval = relay_interval
        self._batch = batch
        self._supervisor = supervisor
        self._published: asyncio.Queue[int] = asyncio.Queue(maxsize=MAX_MARKS)
        self.marks_dropped = 0

    async def __aenter__(self) -> Dispatcher:
        self._supervisor.start("dispatch.mark", self._mark_loop)
        self._supervisor.start("dispatch.relay", self._relay_loop)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._supervisor.stop("dispatch.mark", "dispatch.relay")
        await self._flush_marks()

    async def send(self, message: OutboxMessage) -> bool:
        """Publish one committed command; False when it stays in the outbox for the relay.

        Traced, the publish is a span (`gateway.publish`, kind producer) continuing the context the message
        carries (the call's: also when the relay sends it later), and the command goes out carrying the publish
        span's context instead, so that the worker's span is its child. The outbox keeps the call's."""
        if not tracer().enabled:
            return await self._send(message)
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": message.subject,
            "mcp_gateway.workflow_id": message.workflow_id,
        }
        parent = message.headers.get(Headers.TRACEPARENT)
        with tracer().span("gateway.publish", parent=parent, kind="producer", attributes=attributes):
            traceparent = tracer().traceparent()
            if traceparent is not None:
                message = dataclasses.replace(message, headers={**message.headers, Headers.TRACEPARENT: traceparent})
            return await self._send(message)

    async def _send(self, message: OutboxMessage) -> bool:
        try:
            await self._bus.publish_command(message)
        except BusError as exc:
            log.warning("dispatch.deferred", workflow_id=message.workflow_id, error=str(exc))
            self._telemetry.command_deferred()
            return False
        self._telemetry.command_published()
        if message.id is not None:
            try:
                self._published.put_nowait(message.id)
            except asyncio.QueueFull:  # bounded: the entry stays in the outbox, the relay publishes it again
                self.marks_dropped += 1  # (JetStream drops the duplicate)
        return True

    def _take_marks(self, ids: list[int]) -> list[int]:
        """`ids`, then what is queued, up to a batch."""
        while not self._published.empty() and len(ids) < self._batch:
            ids.append(self._published.get_nowait())
        return ids

    async def _mark(self, ids: list[int]) -> None:
        if not ids:
            return
        try:
            await self._store.mark_published(ids)
        except (StoreError, TimeoutError) as exc:
            # Not lost: the entries stay in the outbox and the relay publishes them again (de-duplicated).
            log.warning("dispatch.mark_failed", count=len(ids), error=str(exc) or type(exc).__name__)

    async def _flush_marks(self) -> None:
        while ids := self._take_marks([]):
            await self._mark(ids)

    async def _mark_loop(self) -> None:
        while True:
            await self._mark(self._take_marks([await self._published.get()]))

    async def relay_once(self) -> int:
        """Publish outbox entries older than `relay_after`; the number published."""
        leftovers = await self._store.unpublished(self._relay_after, self._batch)
        sent = 0
        for message in leftovers:
            try:
                if await self.send(message):
                    sent += 1
            except Exception as exc:  # one entry that cannot go out never holds back the others
                log.exception("dispatch.relay_entry_failed", workflow_id=message.workflow_id, error=repr(exc))
        if leftovers:
            log.info("dispatch.relayed", found=len(leftovers), published=sent)
            self._telemetry.commands_relayed(sent)
        return sent

    async def _relay_loop(self) -> None:
        while True:
            try:
                await self.relay_once()
            except (StoreError, TimeoutError) as exc:
                log.warning("dispatch.relay_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self._relay_interval)
