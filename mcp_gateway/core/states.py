"""The workflow state machine: statuses, allowed moves, and folding a worker event into a workflow's state.

Plain code, no I/O. Folding is idempotent and order-tolerant: a duplicate event changes nothing (the store
refuses its key twice), an event from an older attempt or after a terminal state is recorded but moves
nothing, and progress only moves forward by sequence number.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from mcp_gateway_worker.contract import ErrorInfo, Event, EventKind

from mcp_gateway.registry import check_schema

__all__ = [
    "APPROVAL",
    "TERMINAL",
    "Fold",
    "Happening",
    "Status",
    "WorkflowState",
    "answer",
    "answering",
    "can_move",
    "end",
    "ending",
    "fold",
    "held_command",
    "reopen",
]


class Status(StrEnum):
    PENDING = "pending"
    """Recorded; the command is in the outbox, not yet on the bus."""
    DISPATCHED = "dispatched"
    """The command is on the bus; no worker has reported yet."""
    RUNNING = "running"
    INPUT_REQUIRED = "input_required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    DEAD_LETTERED = "dead_lettered"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT, Status.DEAD_LETTERED})
_ENDINGS = TERMINAL
_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.DISPATCHED, Status.RUNNING, Status.INPUT_REQUIRED} | _ENDINGS),
    Status.DISPATCHED: frozenset({Status.RUNNING, Status.INPUT_REQUIRED} | _ENDINGS),
    Status.RUNNING: frozenset({Status.INPUT_REQUIRED} | _ENDINGS),
    Status.INPUT_REQUIRED: frozenset({Status.RUNNING, Status.PENDING} | _ENDINGS),
}


APPROVAL = "approval"
"""The id of the question that holds a tool with `approval` until the caller (or an admin) decides; a worker's
questions never use it (the contract reserves it)."""


def held_command(before: Status, after: Status) -> Literal["release", "drop"] | None:
    """What becomes of a command held for approval when a workflow moves from `before` to `after`: an approval
    granted lets it go (`release`, it is published); an ending before that drops it (never sent)."""
    if before is not Status.INPUT_REQUIRED:
        return None
    if after is Status.PENDING:
        return "release"
    return "drop" if after in TERMINAL else None


def can_move(current: Status, target: Status) -> bool:
    """Whether a workflow in `current` may move to `target` (terminal states never move)."""
    return target in _ALLOWED.get(current, frozenset())


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """The part of a workflow that events change."""

    status: Status
    attempt: int = 1
    last_seq: int = -1
    progress: float | None = None
    total: float | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    version: int = 0
    content: list[dict[str, Any]] | None = None
    """Content blocks of the result (images, audio, resources), when the worker sent any."""
    questions: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """The open questions (a worker's, asked together or one after another; or an approval), in the order
    asked. The workflow is `input_required` while any is open."""
    answers: dict[str, Any] = field(default_factory=dict[str, Any])
    """Answers given so far, by request id: a question asked again (a redelivered command) gets the same one."""


@dataclass(frozen=True, slots=True)
class Fold:
    """What folding one event decided: the new state (maybe unchanged) and a note for the history."""

    state: WorkflowState
    changed: bool
    note: str | None = None
    defer: bool = False
    """Earlier events of this attempt have not arrived yet: put this one back and fold it a moment later."""
    resend: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """Questions asked again that were already answered: send these answers to the worker again."""
    log: dict[str, Any] | None = None
    """A worker's log line, for the call that waits (announced with the change, not kept in the state)."""


OutputCheck = Callable[[dict[str, Any]], Sequence[object]]
"""Returns the violations of a result against the tool's output schema (empty when valid)."""
ContentCheck = Callable[[list[dict[str, Any]]], Sequence[str]]
"""Returns what is wrong with a result's content blocks (empty when they are fine)."""


def _ignored(state: WorkflowState, note: str) -> Fold:
    return Fold(state, False, note)


def fold(
    state: WorkflowState,
    event: Event,
    check_output: OutputCheck | None = None,
    *,
    may_defer: bool = False,
    check_content: ContentCheck | None = None,
    retried: bool = False,
) -> Fold:
    """Apply one worker event to `state`.

    A worker numbers its events 0, 1, 2... per attempt. With `may_defer`, an event that skips ahead (its
    predecessors are still in flight, e.g. being folded by another gateway process) is deferred rather than
    applied, so that no progress step is lost behind a later one; the caller bounds how long it defers.
    With `retried` (the tool has a retry policy), a `failed` event marked `retryable` is the last attempt's
    failure: the workflow is dead-lettered, for an admin to redrive.
    """
    if event.attempt < state.attempt:
        return _ignored(state, f"stale: attempt {event.attempt} < current attempt {state.attempt}")
    if state.status in TERMINAL:
        return _ignored(state, f"ignored: workflow already {state.status}")
    base = state if event.attempt == state.attempt else replace(state, attempt=event.attempt, last_seq=-1)
    if may_defer and event.seq > base.last_seq + 1:
        return Fold(state, False, f"deferred: seq {event.seq} arrived before seq {base.last_seq + 1}", defer=True)
    newer = event.seq > base.last_seq
    match event.kind:
        case EventKind.STARTED | EventKind.PROGRESS:
            target = Status.INPUT_REQUIRED if base.status is Status.INPUT_REQUIRED else Status.RUNNING
            if not newer:
                # An older progress report arriving late: keep the newer figures, but a first sign of life
                # still moves a dispatched workflow to running.
                if base.status is target:
                    return _ignored(state, f"out of order: seq {event.seq} <= {base.last_seq}")
                return Fold(replace(base, status=target, version=base.version + 1), True)
            updated = replace(base, status=target, last_seq=event.seq, version=base.version + 1)
            if event.kind is EventKind.PROGRESS:
                updated = replace(updated, progress=event.progress, total=event.total, message=event.message)
            return Fold(updated, True)
        case EventKind.LOG:
            line = {"level": event.level, "message": event.message, "logger": event.logger}
            if not newer:
                return Fold(state, False, f"out of order: seq {event.seq} <= {base.last_seq}")
            return Fold(replace(base, last_seq=event.seq, version=base.version + 1), True, log=line)
        case EventKind.INPUT_REQUIRED:
            assert event.requests is not None
            asked = [r.model_dump(by_alias=True, exclude_none=True) for r in event.requests]
            resend = [base.answers[q["id"]] for q in asked if q["id"] in base.answers]
            open_ids = {q["id"] for q in base.questions}
            new = [q for q in asked if q["id"] not in base.answers and q["id"] not in open_ids]
            broken = [f"{q['id']}: {p}" for q in new if q.get("schema") for p in check_schema(q["schema"])]
            if broken:  # no answer could ever be checked against it: the workflow would wait for nothing
                error = ErrorInfo(
                    code="invalid_question",
                    message="the worker asked with a schema that is not a JSON Schema",
                    details={"problems": broken},
                )
                return _end(base, event, Status.FAILED, error=error.model_dump(exclude_none=True))
            moved = replace(base, last_seq=max(base.last_seq, event.seq), version=base.version + 1)
            if not new:  # asked again (a redelivered command): the answers given go out again
                if not newer:
                    return Fold(state, False, f"asked again: {[q['id'] for q in asked]}", resend=resend)
                return Fold(moved, True, f"asked again: {[q['id'] for q in asked]}", resend=resend)
            return Fold(
                replace(moved, status=Status.INPUT_REQUIRED, questions=[*base.questions, *new]), True, resend=resend
            )
        case EventKind.COMPLETED:
            violations: list[str] = []
            if check_output is not None:
                if event.result is None:
                    violations = ["/: the tool's output_schema asks for a structured result; none was sent"]
                else:
                    violations = [str(v) for v in check_output(event.result)]
            if violations:
                error = ErrorInfo(
                    code="invalid_output",
                    message="the worker's result does not match the tool's output_schema",
                    details={"violations": violations},
                )
                return _end(base, event, Status.FAILED, error=error.model_dump(exclude_none=True))
            content_problems = list(check_content(event.content)) if check_content and event.content else []
            if content_problems:
                error = ErrorInfo(
                    code="invalid_content",
                    message="the worker's content blocks are not MCP content blocks",
                    details={"problems": content_problems},
                )
                return _end(base, event, Status.FAILED, error=error.model_dump(exclude_none=True))
            return _end(base, event, Status.COMPLETED, result=event.result, content=event.content)
        case EventKind.RETRYING:
            assert event.error is not None
            if not newer:
                return _ignored(state, f"out of order: seq {event.seq} <= {base.last_seq}")
            note = f"attempt {event.attempt} failed ({event.error.code}): {event.error.message}"
            if event.retry_in is not None:
                note += f"; retrying in {event.retry_in:g} s"
            updated = replace(base, status=Status.RUNNING, last_seq=event.seq, message=note, version=base.version + 1)
            return Fold(updated, True)
        case EventKind.FAILED:
            assert event.error is not None
            ending = Status.DEAD_LETTERED if retried and event.error.retryable else Status.FAILED
            return _end(base, event, ending, error=event.error.model_dump(exclude_none=True))


_PAST = {"accept": "accepted", "decline": "declined", "cancel": "cancelled"}


def answer(state: WorkflowState, request_id: str, action: str, content: dict[str, Any] | None) -> Fold:
    """Record the user's (or an admin's) answer to one open question; the only way out of `input_required`.

    An approval accepted lets the held command go (`pending`); declined or cancelled, the workflow ends
    `cancelled` (code `denied`). A worker's question answered leaves the others open; the last one answered
    lets the worker go on (`running`)."""
    question = next((q for q in state.questions if q["id"] == request_id), None)
    if state.status is not Status.INPUT_REQUIRED or not state.questions:
        return _ignored(state, f"answer refused: workflow is {state.status.value}, it asks for no input")
    if question is None:
        open_ids = ", ".join(repr(q["id"]) for q in state.questions)
        return _ignored(state, f"answer refused: the open questions are {open_ids}, not {request_id!r}")
    given = {"request_id": request_id, "action": action, "content": content}
    answered = replace(
        state,
        questions=[q for q in state.questions if q["id"] != request_id],
        answers={**state.answers, request_id: given},
        version=state.version + 1,
    )
    if question.get("approval"):
        if action == "accept":
            return Fold(replace(answered, status=Status.PENDING), True)
        error = {"code": "denied", "message": f"the approval was {_PAST[action]}"}
        return Fold(replace(answered, status=Status.CANCELLED, error=error), True)
    return Fold(replace(answered, status=Status.INPUT_REQUIRED if answered.questions else Status.RUNNING), True)


def _end(
    state: WorkflowState,
    event: Event,
    status: Status,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    content: list[dict[str, Any]] | None = None,
) -> Fold:
    return Fold(
        replace(
            state,
            status=status,
            last_seq=max(state.last_seq, event.seq),
            result=result,
            error=error,
            content=content,
            questions=[],
            version=state.version + 1,
        ),
        True,
    )


REOPENABLE = frozenset({Status.FAILED, Status.DEAD_LETTERED, Status.TIMED_OUT, Status.CANCELLED})
ATTEMPT_STRIDE = 16
"""A retried workflow's new attempt is numbered this far past its last, beyond any redelivery of the old one (a
worker numbers a redelivered command's events by its delivery count), so the old attempt's stragglers are stale."""


def reopen(state: WorkflowState) -> Fold:
    """Run a workflow again (an admin's retry or redrive): from an ending that is not `completed`, a new attempt
    that starts `pending`, its history kept. Anything else is refused with a note."""
    if state.status not in REOPENABLE:
        return _ignored(state, f"retry refused: workflow is {state.status.value} (only {_names(REOPENABLE)} retry)")
    # Everything but the attempt and the version starts afresh (the history keeps what was before).
    return Fold(WorkflowState(Status.PENDING, attempt=state.attempt + ATTEMPT_STRIDE, version=state.version + 1), True)


@dataclass(frozen=True, slots=True)
class Happening:
    """Something the gateway itself does to a workflow (no worker event): its history key, kind and data, and
    the decision, which a store takes under the workflow's lock."""

    key: str
    kind: str
    data: dict[str, Any]
    decide: Callable[[str, WorkflowState], Fold]


def ending(status: Status, code: str, message: str, by: str) -> Happening:
    """End a workflow from the gateway's side (cancelled, timed out, dead-lettered): see `end`."""
    return Happening(
        f"{status.value}.{uuid.uuid4().hex[:8]}",
        status.value,
        {"by": by, "code": code, "message": message},
        lambda _tool, state: end(state, status, code, message),
    )


def answering(request_id: str, action: str, content: dict[str, Any] | None, by: str) -> Happening:
    """Record an answer to one open question: see `answer`."""
    return Happening(
        f"answer.{request_id}.{uuid.uuid4().hex[:8]}",
        "input_answered",
        {"by": by, "request_id": request_id, "action": action, "content": content},
        lambda _tool, state: answer(state, request_id, action, content),
    )


def _names(statuses: frozenset[Status]) -> str:
    return ", ".join(sorted(s.value for s in statuses))


def end(state: WorkflowState, status: Status, code: str, message: str) -> Fold:
    """End a workflow from the gateway's side (cancelled, timed out): the one place such races are decided.

    A workflow that already ended keeps its ending (a result that arrived first wins over a late cancel)."""
    if not can_move(state.status, status):
        return _ignored(state, f"{status.value} ignored: workflow already {state.status.value}")
    error = {"code": code, "message": message}
    return Fold(replace(state, status=status, error=error, questions=[], version=state.version + 1), True)
