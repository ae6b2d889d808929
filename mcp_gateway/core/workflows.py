"""What a caller may see and do with workflows: status, wait for the result, cancel, list, history.

A caller sees only its own workflows; an admin sees all. An unknown id and someone else's id get the same
answer, so ids cannot be probed. Cancelling is decided by the store under the workflow's lock (a result that
arrived first wins) and then told to the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

import structlog

from mcp_gateway.bus import Bus
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.states import TERMINAL, Status
from mcp_gateway.errors import BusError, GatewayError
from mcp_gateway.store import EventRecord, WorkflowRecord, WorkflowStore

__all__ = ["ADMIN", "Viewer", "WorkflowNotFound", "Workflows"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: a caller subject, or an admin."""

    subject: str
    admin: bool = False


ADMIN = Viewer("admin", admin=True)


class WorkflowNotFound(GatewayError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id!r} for this caller (unknown id, or another caller's)")
        self.workflow_id = workflow_id


class Workflows:
    def __init__(self, store: WorkflowStore, bus: Bus, waiters: Waiters) -> None:
        self._store = store
        self._bus = bus
        self._waiters = waiters

    async def get(self, workflow_id: str, viewer: Viewer) -> WorkflowRecord:
        record = await self._store.get(workflow_id) if len(workflow_id) <= 64 else None
        if record is None or not (viewer.admin or record.caller == viewer.subject):
            raise WorkflowNotFound(workflow_id)
        return record

    async def wait(self, workflow_id: str, viewer: Viewer, seconds: float) -> WorkflowRecord:
        """The workflow once it has ended, or as it is after `seconds`."""
        with self._waiters.watch(workflow_id) as watch:
            record = await self.get(workflow_id, viewer)
            if record.status in TERMINAL or seconds <= 0:
                return record
            try:
                async with asyncio.timeout(seconds):
                    async for change, _ in watch.changes():
                        if change.terminal:
                            break
            except TimeoutError:
                pass
        return await self.get(workflow_id, viewer)

    async def cancel(self, workflow_id: str, viewer: Viewer, reason: str = "cancelled by the caller") -> WorkflowRecord:
        await self.get(workflow_id, viewer)
        applied = await self._store.end(workflow_id, Status.CANCELLED, "cancelled", reason, by=viewer.subject)
        if applied is not None and applied.fold.changed and not applied.duplicate:
            log.info("workflow.cancelled", workflow_id=workflow_id, by=viewer.subject)
            await self._tell_workers(workflow_id, "cancelled")
        return await self.get(workflow_id, viewer)

    async def expire_overdue(self) -> int:
        """End every open workflow past its deadline as timed out; the number ended."""
        ended = 0
        for workflow_id in await self._store.overdue():
            applied = await self._store.end(
                workflow_id, Status.TIMED_OUT, "deadline_exceeded", "the workflow passed its deadline", by="gateway"
            )
            if applied is not None and applied.fold.changed and not applied.duplicate:
                ended += 1
                log.info("workflow.timed_out", workflow_id=workflow_id)
                await self._tell_workers(workflow_id, "timed_out")
        return ended

    async def _tell_workers(self, workflow_id: str, reason: Literal["cancelled", "timed_out"]) -> None:
        try:
            await self._bus.publish_cancel(workflow_id, reason)
        except BusError as exc:  # the workflow has ended anyway; a worker that misses this is ignored later
            log.warning("workflow.cancel_not_sent", workflow_id=workflow_id, error=str(exc))

    async def list(self, viewer: Viewer, *, status: Status | None = None, limit: int = 20) -> list[WorkflowRecord]:
        caller = None if viewer.admin else viewer.subject
        return await self._store.list(status=status, caller=caller, limit=limit)

    async def events(self, workflow_id: str, viewer: Viewer, after_id: int = 0) -> list[EventRecord]:
        await self.get(workflow_id, viewer)
        return await self._store.events(workflow_id, after_id)

    async def follow(self, workflow_id: str, viewer: Viewer, after_id: int = 0) -> AsyncGenerator[EventRecord]:
        """The workflow's history after `after_id`, then each new event as it is recorded, until it ends."""
        with self._waiters.watch(workflow_id) as watch:
            status = (await self.get(workflow_id, viewer)).status
            while True:
                for event in await self._store.events(workflow_id, after_id):
                    after_id = event.id
                    yield event
                if status in TERMINAL:
                    return
                status = (await watch.next()).state.status
