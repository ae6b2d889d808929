"""What a caller may see and do with workflows: status, wait for the result, cancel, list, history.

A caller sees only its own workflows; an admin sees all. An unknown id and someone else's id get the same
answer, so ids cannot be probed. Cancelling is decided by the store under the workflow's lock (a result that
arrived first wins) and then told to the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from typing import Any, Literal

import structlog
from mcp_gateway_worker.contract import InputAnswer

from mcp_gateway.core.access import ADMIN, Viewer
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.ports import Bus, EventRecord, WorkflowFilter, WorkflowRecord, WorkflowStore
from mcp_gateway.core.states import APPROVAL, TERMINAL, Status
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry
from mcp_gateway.errors import BusError, GatewayError, StoreError
from mcp_gateway.registry import CompiledSchema

__all__ = ["ADMIN", "AnswerRefused", "Viewer", "WorkflowNotFound", "Workflows"]

log = structlog.get_logger(__name__)

Action = Literal["accept", "decline", "cancel"]


class WorkflowNotFound(GatewayError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id!r} for this caller (unknown id, or another caller's)")
        self.workflow_id = workflow_id


class AnswerRefused(GatewayError):
    """An answer that cannot be taken: nothing is asked, no such question is open, the values break its schema,
    or the answerer may not decide (an admin approval). `request_id` names the question answered."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Workflows:
    def __init__(
        self,
        store: WorkflowStore,
        bus: Bus,
        waiters: Waiters,
        dispatcher: Dispatcher,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._bus = bus
        self._waiters = waiters
        self._dispatcher = dispatcher

    @staticmethod
    def _refusal(record: WorkflowRecord, viewer: Viewer, request_id: str, action: str, content: Any) -> str | None:
        """Why this answer cannot be taken (None when it can)."""
        questions = record.state.questions
        if record.status is not Status.INPUT_REQUIRED or not questions:
            return f"workflow {record.id} is {record.status.value}; it asks for no input"
        question = next((q for q in questions if q["id"] == request_id), None)
        if question is None:
            asked = ", ".join(repr(q["id"]) for q in questions)
            return f"workflow {record.id} asks {asked}, not {request_id!r}"
        if question.get("by") == "admin" and not viewer.admin:
            return f"workflow {record.id} waits for an admin's approval, not the caller's"
        if action == "accept" and question.get("schema"):
            problems = CompiledSchema(question["schema"]).violations(content or {})
            if problems:
                listed = "; ".join(str(p) for p in problems)
                return f"the answer to {request_id!r} does not match what was asked ({listed})"
        return None

    async def answer(
        self,
        workflow_id: str,
        viewer: Viewer,
        request_id: str,
        action: Action,
        content: dict[str, Any] | None = None,
    ) -> WorkflowRecord:
        """Answer one of the workflow's open questions (a worker's, or an approval). Checked, recorded once,
        passed on."""
        return await self.answer_all(workflow_id, viewer, {request_id: (action, content)})

    async def answer_all(
        self, workflow_id: str, viewer: Viewer, answers: Mapping[str, tuple[Action, dict[str, Any] | None]]
    ) -> WorkflowRecord:
        """Answer several open questions at once: every answer is checked before any is recorded, so one that
        breaks its question (AnswerRefused, naming it) leaves them all open. Each is then recorded in its own
        transaction: one answered elsewhere in the meantime is refused alone, after those before it."""
        record = await self.get(workflow_id, viewer)
        for request_id, (action, content) in answers.items():
            refusal = self._refusal(record, viewer, request_id, action, content)
            if refusal is not None:
                raise AnswerRefused(refusal, request_id)
        for request_id, (action, content) in answers.items():
            applied = await self._store.answer(workflow_id, request_id, action, content, by=viewer.subject)
            if applied is None or applied.duplicate or not applied.fold.changed:
                note = applied.fold.note if applied and applied.fold.note else "the answer was not taken"
                raise AnswerRefused(note, request_id)
            log.info(
                "workflow.answered", workflow_id=workflow_id, request_id=request_id, action=action, by=viewer.subject
            )
            if applied.fold.state.status in TERMINAL:  # an approval denied
                self._telemetry.workflow_ended(applied.tool, applied.fold.state.status.value)
            for message in applied.released:  # an approval let the held command go
                await self._dispatcher.send(message)
            if request_id != APPROVAL:
                try:
                    await self._bus.publish_answer(
                        InputAnswer(workflow_id=workflow_id, request_id=request_id, action=action, content=content)
                    )
                except BusError as exc:  # recorded; a rerun of the command (redelivery) that asks again gets it
                    log.warning("workflow.answer_not_sent", workflow_id=workflow_id, error=str(exc))
        return await self.get(workflow_id, viewer)

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
            self._telemetry.workflow_ended(applied.tool, Status.CANCELLED.value)
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
                self._telemetry.workflow_ended(applied.tool, Status.TIMED_OUT.value)
                await self._tell_workers(workflow_id, "timed_out")
        return ended

    async def _tell_workers(self, workflow_id: str, reason: Literal["cancelled", "timed_out"]) -> None:
        try:
            record = await self._store.get(workflow_id)
            attempt = record.state.attempt if record is not None else None
            await self._bus.publish_cancel(workflow_id, reason, attempt)
        except (BusError, StoreError) as exc:  # it has ended anyway; a worker that misses this is ignored later
            log.warning("workflow.cancel_not_sent", workflow_id=workflow_id, error=str(exc))

    async def list(self, viewer: Viewer, *, status: Status | None = None, limit: int = 20) -> list[WorkflowRecord]:
        caller = None if viewer.admin else viewer.subject
        return await self._store.list(status=status, caller=caller, limit=limit)

    async def find(self, viewer: Viewer, query: WorkflowFilter) -> list[WorkflowRecord]:
        """The workflows `query` selects that `viewer` may see (a caller's own; an admin's, any)."""
        if not viewer.admin:
            query = replace(query, caller=viewer.subject)
        return await self._store.find(query)

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
