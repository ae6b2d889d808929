"""The tool-call service: validate, persist, publish, wait, reply. Transport-independent.

The MCP adapters (stdio, streamable HTTP) and any lean HTTP path call `ToolCallService.call` and turn the
`Outcome` into their wire form. Nothing is written or published for a call whose arguments are invalid.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from mcp_gateway.contract import Caller, Command, Headers, Subjects, encode
from mcp_gateway.core.changes import Change, Waiters
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.states import TERMINAL, Status, WorkflowState
from mcp_gateway.core.workflows import Viewer, Workflows
from mcp_gateway.registry import Registry, SchemaViolation, Tool
from mcp_gateway.store import NewWorkflow, OutboxMessage, WorkflowStore

__all__ = ["Outcome", "OutcomeKind", "Progress", "ToolCallService", "new_traceparent", "outcome_from_state"]

log = structlog.get_logger(__name__)


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    STILL_RUNNING = "still_running"
    """A `sync` tool's call ran out of time; the work goes on until its deadline."""
    HANDED_BACK = "handed_back"
    """An `async` or `auto` tool's work continues; the caller follows it by workflow id (or task)."""


@dataclass(frozen=True, slots=True)
class Progress:
    progress: float
    total: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    tool: str
    workflow_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    violations: list[SchemaViolation] = field(default_factory=list[SchemaViolation])
    status: Status | None = None


ProgressCallback = Callable[[Progress], Awaitable[None]]


def new_traceparent() -> str:
    """A fresh W3C traceparent (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class ToolCallService:
    def __init__(
        self,
        registry: Callable[[], Registry],
        store: WorkflowStore,
        dispatcher: Dispatcher,
        waiters: Waiters,
        subjects: Subjects,
        workflows: Workflows,
    ) -> None:
        self._registry = registry
        self._store = store
        self._dispatcher = dispatcher
        self._waiters = waiters
        self._subjects = subjects
        self._workflows = workflows
        self.stopping = False
        """Set when the gateway shuts down: calls cut short then are not cancellations; their work goes on."""

    @property
    def registry(self) -> Registry:
        return self._registry()

    def _command(
        self,
        tool: Tool,
        workflow_id: str,
        arguments: dict[str, Any],
        caller: Caller,
        traceparent: str,
        deadline: datetime,
    ) -> OutboxMessage:
        command = Command(
            workflow_id=workflow_id,
            tool=tool.name,
            tool_version=tool.config.version,
            arguments=arguments,
            caller=caller,
            deadline=deadline,
            reply_subject=self._subjects.event(workflow_id),
        )
        headers = {
            Headers.MSG_ID: workflow_id,
            Headers.SCHEMA: "1",
            Headers.WORKFLOW_ID: workflow_id,
            Headers.TOOL: tool.name,
            Headers.TRACEPARENT: traceparent,
        }
        return OutboxMessage(
            workflow_id, self._subjects.command(tool.config.subject), workflow_id, headers, encode(command)
        )

    async def call(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        caller: Caller,
        traceparent: str | None = None,
        on_progress: ProgressCallback | None = None,
        wait: bool = True,
    ) -> Outcome:
        """Run a tool call. With `wait=False` (or a tool in `async` mode) it returns once the workflow is
        recorded and its command sent. A call cancelled while it waits (the client cancelled, or closed the
        request on the 2026-07-28 wire) cancels its workflow, unless the gateway is stopping."""
        tool = self.registry.get(name)
        if tool is None:
            return Outcome(OutcomeKind.UNKNOWN_TOOL, name)
        args = arguments or {}
        violations = tool.input.violations(args)
        if violations:
            return Outcome(OutcomeKind.INVALID_ARGUMENTS, name, violations=violations)

        workflow_id = uuid.uuid4().hex
        traceparent = traceparent or new_traceparent()
        deadline = datetime.now(UTC) + timedelta(seconds=tool.deadline_seconds)
        message = self._command(tool, workflow_id, args, caller, traceparent, deadline)
        structlog.contextvars.bind_contextvars(workflow_id=workflow_id, tool=name, trace_id=trace_id_of(traceparent))
        budget = tool.config.timeout if wait and tool.config.mode != "async" else 0.0
        recorded = False
        try:
            with self._waiters.watch(workflow_id) as watch:
                outbox_id = await self._store.create(
                    NewWorkflow(
                        workflow_id,
                        name,
                        tool.config.version,
                        args,
                        caller.subject,
                        caller.request_id,
                        trace_id_of(traceparent),
                        deadline,
                    ),
                    message,
                )
                recorded = True
                log.info("call.accepted", mode=tool.config.mode)
                sent = await self._dispatcher.send(_with_id(message, outbox_id))
                if budget > 0:
                    state = await self._wait(watch.changes(), workflow_id, budget, on_progress)
                else:
                    state = WorkflowState(Status.DISPATCHED if sent else Status.PENDING)
        except asyncio.CancelledError:
            if recorded and not self.stopping:
                await asyncio.shield(self._cancel_quietly(workflow_id, caller))
            raise
        finally:
            structlog.contextvars.unbind_contextvars("workflow_id", "tool", "trace_id")
        return outcome_from_state(name, workflow_id, state, tool.config.mode)

    async def _cancel_quietly(self, workflow_id: str, caller: Caller) -> None:
        try:
            await self._workflows.cancel(workflow_id, Viewer(caller.subject), "the client cancelled the call")
        except Exception as exc:  # the deadline still ends it; never mask the cancellation itself
            log.warning("call.cancel_failed", workflow_id=workflow_id, error=str(exc))

    async def _wait(
        self,
        changes: AsyncIterator[tuple[Change, bool]],
        workflow_id: str,
        budget: float,
        on_progress: ProgressCallback | None,
    ) -> WorkflowState | None:
        last: WorkflowState | None = None
        try:
            async with asyncio.timeout(budget):
                async for change, truncated in changes:
                    last = change.state
                    if change.terminal:
                        if truncated:
                            record = await self._store.get(workflow_id)
                            return record.state if record is not None else last
                        return last
                    if on_progress is not None and last.progress is not None:
                        await on_progress(Progress(last.progress, last.total, last.message))
        except TimeoutError:
            pass
        # No terminal change heard in time: the store has the last word (a change may have been missed).
        record = await self._store.get(workflow_id)
        return record.state if record is not None else last


def _with_id(message: OutboxMessage, outbox_id: int) -> OutboxMessage:
    return OutboxMessage(
        message.workflow_id, message.subject, message.msg_id, message.headers, message.payload, outbox_id
    )


def outcome_from_state(tool: str, workflow_id: str, state: WorkflowState | None, mode: str) -> Outcome:
    """What a call (or a later look at its workflow) amounts to, given the workflow's state."""
    if state is None or state.status not in TERMINAL:
        kind = OutcomeKind.STILL_RUNNING if mode == "sync" else OutcomeKind.HANDED_BACK
        return Outcome(kind, tool, workflow_id, status=state.status if state else None)
    if state.status is Status.COMPLETED:
        return Outcome(OutcomeKind.COMPLETED, tool, workflow_id, result=state.result, status=state.status)
    error = state.error or {"code": state.status.value, "message": f"the workflow ended {state.status.value}"}
    return Outcome(OutcomeKind.FAILED, tool, workflow_id, error=error, status=state.status)
