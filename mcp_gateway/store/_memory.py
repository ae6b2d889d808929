"""The core's `WorkflowStore` port in memory: the same decisions as PostgreSQL (the core's fold, answer, end and
reopen, under one lock), for fast behaviour tests of the core and for trying the gateway without a database.
Nothing survives the process; one process only (changes are announced to this process's subscriber)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mcp_gateway_worker.contract import Event

from mcp_gateway.core.changes import Change
from mcp_gateway.core.ports import (
    Applied,
    Counts,
    DeadLetter,
    Decide,
    EventRecord,
    ExistingWorkflow,
    NewWorkflow,
    OutboxMessage,
    Reopening,
    WorkflowFilter,
    WorkflowRecord,
)
from mcp_gateway.core.states import TERMINAL, Fold, Status, WorkflowState, answering, ending, held_command
from mcp_gateway.core.supervisor import Supervisor

__all__ = ["InMemoryStore"]

CHANGE_LIMIT = 7_500
"""The size a change announcement may have (as PostgreSQL's NOTIFY): a larger one goes out truncated."""


@dataclass(slots=True)
class _Row:
    record: WorkflowRecord
    idempotency_key: str | None = None
    arguments_hash: str | None = None


@dataclass(slots=True)
class _Entry:
    message: OutboxMessage
    held: bool
    at: float = field(default_factory=time.monotonic)


class InMemoryStore:
    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._events: list[EventRecord] = []
        self._keys: set[tuple[str, str]] = set()
        self._outbox: dict[int, _Entry] = {}
        self._letters: list[DeadLetter] = []
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._subscribers: list[Callable[[bytes], None]] = []

    async def __aenter__(self) -> InMemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._subscribers.clear()

    def _record(
        self,
        workflow_id: str,
        key: str,
        kind: str,
        status: str | None,
        data: dict[str, Any],
        note: str | None,
        at: datetime,
    ) -> bool:
        """Append a happening to the history once per key; False when the key was recorded already."""
        if (workflow_id, key) in self._keys:
            return False
        self._keys.add((workflow_id, key))
        self._events.append(EventRecord(next(self._ids), workflow_id, key, kind, status, data, note, at))
        return True

    def _announce(self, change: Change) -> None:
        for subscriber in self._subscribers:
            subscriber(change.encode(CHANGE_LIMIT))

    async def create(self, workflow: NewWorkflow, command: OutboxMessage) -> int | ExistingWorkflow:
        async with self._lock:
            if workflow.idempotency_key is not None:
                cutoff = datetime.now(UTC) - timedelta(seconds=workflow.idempotency_window)
                for row in self._rows.values():
                    same = (row.record.caller, row.record.tool, row.idempotency_key)
                    if same == (workflow.caller, workflow.tool, workflow.idempotency_key):
                        if row.record.created_at < cutoff:
                            row.idempotency_key = None  # released: older than the window
                        else:
                            return ExistingWorkflow(row.record.id, row.arguments_hash)
            now = datetime.now(UTC)
            state = WorkflowState(workflow.status, questions=[workflow.approval] if workflow.approval else [])
            record = WorkflowRecord(
                workflow.id,
                workflow.tool,
                workflow.tool_version,
                workflow.arguments,
                workflow.caller,
                workflow.request_id,
                workflow.trace_id,
                now,
                now,
                workflow.deadline,
                state,
            )
            self._rows[workflow.id] = _Row(record, workflow.idempotency_key, workflow.arguments_hash)
            data = {"tool": workflow.tool, "version": workflow.tool_version}
            self._record(workflow.id, "created", "created", workflow.status.value, data, None, now)
            outbox_id = next(self._ids)
            self._outbox[outbox_id] = _Entry(replace(command, id=outbox_id), held=workflow.approval is not None)
            return outbox_id

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        async with self._lock:
            for outbox_id in outbox_ids:
                entry = self._outbox.pop(outbox_id, None)
                if entry is None:
                    continue
                row = self._rows.get(entry.message.workflow_id)
                moved = row is not None and row.record.state.status is Status.PENDING
                if row is not None and moved:
                    state = replace(row.record.state, status=Status.DISPATCHED, version=row.record.state.version + 1)
                    row.record = replace(row.record, state=state, updated_at=datetime.now(UTC))
                    self._announce(Change(row.record.id, state))
                status = Status.DISPATCHED.value if moved else None
                self._record(entry.message.workflow_id, "dispatched", "dispatched", status, {}, None, datetime.now(UTC))

    async def unpublished(self, older_than_seconds: float, limit: int) -> list[OutboxMessage]:
        cutoff = time.monotonic() - older_than_seconds
        found = [e.message for e in self._outbox.values() if not e.held and e.at < cutoff]
        return found[:limit]

    async def _transition(
        self, workflow_id: str, key: str, kind: str, data: dict[str, Any], at: datetime, decide: Decide
    ) -> Applied | None:
        row = self._rows.get(workflow_id)
        if row is None:
            return None
        before = row.record.state
        decision = decide(row.record.tool, before)
        if decision.defer:
            return Applied(workflow_id, row.record.tool, decision, duplicate=False)
        new = decision.state
        status = new.status.value if decision.changed else None
        if not self._record(workflow_id, key, kind, status, data, decision.note, at):
            return Applied(workflow_id, row.record.tool, decision, duplicate=True)
        released: list[OutboxMessage] = []
        if decision.changed:
            row.record = replace(row.record, state=new, updated_at=datetime.now(UTC))
            held = held_command(before.status, new.status)
            for outbox_id, entry in list(self._outbox.items()):
                if entry.message.workflow_id == workflow_id and entry.held:
                    if held == "release":
                        entry.held, entry.at = False, time.monotonic()
                        released.append(entry.message)
                    elif held == "drop":
                        del self._outbox[outbox_id]
            self._announce(Change(workflow_id, new, decision.log))
        return Applied(workflow_id, row.record.tool, decision, duplicate=False, released=released)

    async def apply(self, event: Event, decide: Decide) -> Applied | None:
        data = event.model_dump(mode="json", exclude_none=True, exclude={"v", "workflow_id", "kind", "at"})
        async with self._lock:
            return await self._transition(event.workflow_id, event.key, event.kind.value, data, event.at, decide)

    async def apply_many(self, items: Sequence[tuple[Event, Decide]]) -> list[Applied | None]:
        return [None] * len(items)  # one lock, nothing to batch: each is applied alone

    async def end(self, workflow_id: str, status: Status, code: str, message: str, by: str) -> Applied | None:
        h = ending(status, code, message, by)
        async with self._lock:
            return await self._transition(workflow_id, h.key, h.kind, h.data, datetime.now(UTC), h.decide)

    async def answer(
        self, workflow_id: str, request_id: str, action: str, content: dict[str, Any] | None, by: str
    ) -> Applied | None:
        h = answering(request_id, action, content, by)
        async with self._lock:
            return await self._transition(workflow_id, h.key, h.kind, h.data, datetime.now(UTC), h.decide)

    async def reopen(self, reopening: Reopening, decide: Decide) -> tuple[Applied, int | None] | None:
        def guarded(tool: str, state: WorkflowState) -> Fold:
            if state.version != reopening.version:
                return Fold(state, False, f"retry refused: the workflow changed meanwhile (version {state.version})")
            return decide(tool, state)

        data = {"by": reopening.by, "attempt": reopening.attempt, "arguments_changed": reopening.arguments_changed}
        async with self._lock:
            key = f"retried.{reopening.attempt}"
            applied = await self._transition(reopening.workflow_id, key, "retried", data, datetime.now(UTC), guarded)
            if applied is None:
                return None
            if not applied.fold.changed or applied.duplicate:
                return applied, None
            row = self._rows[reopening.workflow_id]
            row.record = replace(row.record, deadline=reopening.deadline, arguments=reopening.arguments)
            outbox_id = next(self._ids)
            self._outbox[outbox_id] = _Entry(replace(reopening.command, id=outbox_id), held=False)
            return applied, outbox_id

    async def overdue(self, limit: int = 100) -> list[str]:
        now = datetime.now(UTC)
        late = [r.record.id for r in self._rows.values() if r.record.status not in TERMINAL and r.record.deadline < now]
        return late[:limit]

    async def subscribe_changes(self, callback: Callable[[bytes], None], supervisor: Supervisor) -> None:
        self._subscribers.append(callback)

    async def dead_letter(self, letter: DeadLetter) -> int:
        letter_id = next(self._ids)
        self._letters.append(replace(letter, id=letter_id, at=datetime.now(UTC)))
        return letter_id

    async def dead_letters(self, limit: int = 50, letter_id: int | None = None) -> list[DeadLetter]:
        letters = [d for d in reversed(self._letters) if letter_id is None or d.id == letter_id]
        return letters[:limit]

    async def get(self, workflow_id: str) -> WorkflowRecord | None:
        row = self._rows.get(workflow_id)
        return row.record if row is not None else None

    async def events(self, workflow_id: str, after_id: int = 0) -> list[EventRecord]:
        return [e for e in self._events if e.workflow_id == workflow_id and e.id > after_id]

    async def list(
        self, *, status: Status | None = None, caller: str | None = None, limit: int = 50
    ) -> list[WorkflowRecord]:
        return await self.find(WorkflowFilter(status=status, caller=caller, limit=limit))

    async def find(self, query: WorkflowFilter) -> list[WorkflowRecord]:
        def selected(r: WorkflowRecord) -> bool:
            return (
                (query.status is None or r.status is query.status)
                and (query.tool is None or r.tool == query.tool)
                and (query.caller is None or r.caller == query.caller)
                and (query.since is None or r.created_at >= query.since)
                and (query.before is None or (r.created_at, r.id) < query.before)
            )

        records = [r.record for r in self._rows.values() if selected(r.record)]
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)[: query.limit]

    async def counts(self, *, open_only: bool = False, since: datetime | None = None) -> Counts:
        by: dict[tuple[str, Status], int] = {}
        for row in self._rows.values():
            r = row.record
            if (open_only and r.status in TERMINAL) or (since is not None and r.created_at < since):
                continue
            by[(r.tool, r.status)] = by.get((r.tool, r.status), 0) + 1
        waiting = [e for e in self._outbox.values() if not e.held]
        oldest = time.monotonic() - min(e.at for e in waiting) if waiting else None
        return Counts(by, len(waiting), oldest, len(self._letters))
