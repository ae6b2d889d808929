"""The core's ports: what it needs of the workflow store (PostgreSQL) and of the bus (NATS JetStream), and the
records they hand out (frozen, slotted). The adapters (`mcp_gateway.store`, `mcp_gateway.bus`) implement them
and import them from here; the core never imports an adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from mcp_gateway_worker.contract import Event, InputAnswer, Subjects

from mcp_gateway.core.states import Fold, Status, WorkflowState
from mcp_gateway.core.supervisor import Supervisor

__all__ = [
    "Applied",
    "Counts",
    "DeadLetter",
    "EventRecord",
    "ExistingWorkflow",
    "NewWorkflow",
    "OutboxMessage",
    "Reopening",
    "WorkflowFilter",
    "WorkflowRecord",
    "WorkflowStore",
]


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """Which workflows a listing holds, newest first. `before` pages on: the (created_at, id) of the last one seen."""

    status: Status | None = None
    tool: str | None = None
    caller: str | None = None
    since: datetime | None = None
    before: tuple[datetime, str] | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class Counts:
    """What the store holds now, for operators: workflows by (tool, status), the outbox, the dead letters."""

    by_tool_status: dict[tuple[str, Status], int]
    outbox: int
    """Commands recorded and not yet on the bus (held ones for approval excluded)."""
    outbox_oldest_seconds: float | None
    dead_letters: int

    def by_status(self) -> dict[Status, int]:
        totals: dict[Status, int] = {}
        for (_, status), n in self.by_tool_status.items():
            totals[status] = totals.get(status, 0) + n
        return totals


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    id: str
    tool: str
    tool_version: str
    arguments: dict[str, Any]
    caller: str
    request_id: str | None
    trace_id: str | None
    deadline: datetime
    status: Status = Status.PENDING
    approval: dict[str, Any] | None = None
    """An approval asked before dispatch: the workflow starts `input_required` and its command is held."""
    idempotency_key: str | None = None
    """The caller's key: the same caller, tool and key within `idempotency_window` seconds name one workflow."""
    arguments_hash: str | None = None
    idempotency_window: float = 86_400.0


@dataclass(frozen=True, slots=True)
class ExistingWorkflow:
    """`create` found the caller's workflow of the same tool and idempotency key: nothing was written."""

    workflow_id: str
    arguments_hash: str | None


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish, committed with the change that asked for it."""

    workflow_id: str
    subject: str
    msg_id: str
    headers: dict[str, str]
    payload: bytes
    id: int | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: str
    tool: str
    tool_version: str
    arguments: dict[str, Any]
    caller: str
    request_id: str | None
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    state: WorkflowState

    @property
    def status(self) -> Status:
        return self.state.status


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    workflow_id: str
    event_key: str
    kind: str
    status: str | None
    data: dict[str, Any]
    note: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Reopening:
    """A workflow to run again (an admin's retry or redrive): its new attempt's command and deadline."""

    workflow_id: str
    version: int
    """The version it was read at: a workflow changed since is not reopened."""
    attempt: int
    command: OutboxMessage
    deadline: datetime
    arguments: dict[str, Any]
    arguments_changed: bool
    by: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the gateway could not take: kept, with why, for an admin to see (and act on)."""

    source: str
    """`event` or `command`."""
    subject: str
    reason: str
    head: bytes
    """The first bytes of the body (`HEAD_BYTES` at most)."""
    size: int
    headers: dict[str, str] = field(default_factory=dict[str, str])
    workflow_id: str | None = None
    delivered: int = 1
    id: int | None = None
    at: datetime | None = None


HEAD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of applying a worker event: the fold's decision, or a duplicate that changed nothing."""

    workflow_id: str
    tool: str
    fold: Fold
    duplicate: bool
    released: list[OutboxMessage] = field(default_factory=list["OutboxMessage"])
    """Commands held for approval that this change let go: publish them."""


Decide = Callable[[str, WorkflowState], Fold]
"""Given the workflow's tool and current state, fold the event: the store calls it under the row lock."""


class WorkflowStore(Protocol):
    async def create(self, workflow: NewWorkflow, command: OutboxMessage) -> int | ExistingWorkflow:
        """Record a new workflow and its command in one transaction; returns the outbox id. With an idempotency
        key that the caller already used for the tool within the window: the existing workflow, nothing written
        (a key older than the window is released first)."""
        ...

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        """The outbox entries are on the bus: remove them and move pending workflows to dispatched."""
        ...

    async def unpublished(self, older_than_seconds: float, limit: int) -> list[OutboxMessage]:
        """Outbox entries older than the given age (a crashed publisher's leftovers)."""
        ...

    async def apply(self, event: Event, decide: Decide) -> Applied | None:
        """Record `event` once and fold it into its workflow; None when the workflow is unknown."""
        ...

    async def apply_many(self, items: Sequence[tuple[Event, Decide]]) -> list[Applied | None]:
        """`apply` for events of different workflows, in one commit where the store can: for each item its
        `Applied`, or None where it did not apply it (the caller applies that one alone, with `apply`). All or
        none of what it did is committed; an error means nothing of it was."""
        ...

    async def end(self, workflow_id: str, status: Status, code: str, message: str, by: str) -> Applied | None:
        """End a workflow from the gateway's side (cancelled, timed out), unless it already ended; recorded."""
        ...

    async def answer(
        self, workflow_id: str, request_id: str, action: str, content: dict[str, Any] | None, by: str
    ) -> Applied | None:
        """Record an answer to one of the workflow's open questions (refused, with a note, if it is not open)."""
        ...

    async def overdue(self, limit: int = 100) -> list[str]:
        """Ids of workflows that have not ended and are past their deadline."""
        ...

    async def subscribe_changes(self, callback: Callable[[bytes], None], supervisor: Supervisor) -> None:
        """Receive every committed workflow change (an encoded `Change`), in commit order."""
        ...

    async def reopen(self, reopening: Reopening, decide: Decide) -> tuple[Applied, int | None] | None:
        """Run a workflow again: the decision, and the new command's outbox id (None when refused)."""
        ...

    async def dead_letter(self, letter: DeadLetter) -> int:
        """Keep a message the gateway could not take; returns its id."""
        ...

    async def dead_letters(self, limit: int = 50, letter_id: int | None = None) -> list[DeadLetter]:
        """The newest dead letters first (or the one with `letter_id`)."""
        ...

    async def get(self, workflow_id: str) -> WorkflowRecord | None: ...

    async def events(self, workflow_id: str, after_id: int = 0) -> list[EventRecord]: ...

    async def list(
        self, *, status: Status | None = None, caller: str | None = None, limit: int = 50
    ) -> list[WorkflowRecord]: ...

    async def find(self, query: WorkflowFilter) -> list[WorkflowRecord]:
        """The workflows `query` selects, newest first."""
        ...

    async def counts(self, *, open_only: bool = False, since: datetime | None = None) -> Counts:
        """Workflows by tool and status (only those not ended, or only those created since), outbox, dead letters."""
        ...


class Delivery(Protocol):
    """One event message from the bus, with the ways to settle it."""

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str]: ...

    @property
    def attempts(self) -> int:
        """How often the bus has delivered it (1 the first time)."""
        ...

    @property
    def subject(self) -> str: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...


class Bus(Protocol):
    """What the core needs of the bus: commands out, events in, cancels and answers, resource reads, and what the
    bus can tell of its workers."""

    async def publish_command(self, message: OutboxMessage) -> None: ...

    async def fetch_events(self, batch: int, max_wait: float) -> Sequence[Delivery]: ...

    async def publish_cancel(
        self, workflow_id: str, reason: Literal["cancelled", "timed_out"], attempt: int | None = None
    ) -> None: ...

    async def publish_answer(self, answer: InputAnswer) -> None: ...

    async def request(self, subject: str, payload: bytes, max_wait: float) -> bytes: ...

    async def listened_subjects(self) -> list[str]: ...

    async def publish_dead_letter(self, workflow_id: str, body: bytes) -> None: ...

    @property
    def subjects(self) -> Subjects: ...

    @property
    def max_payload(self) -> int: ...

    @property
    def reconnected_for(self) -> float: ...
