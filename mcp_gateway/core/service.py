"""The tool-call service: validate, persist, publish, wait, reply. Transport-independent.

The MCP adapters (stdio, streamable HTTP) and any lean HTTP path call `ToolCallService.call` and turn the
`Outcome` into their wire form. Nothing is written or published for a call whose arguments are invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, cast

import structlog
from mcp_gateway_worker.contract import (
    CONTRACT_VERSION,
    MAX_DEPTH,
    Caller,
    Command,
    Headers,
    Subjects,
    encode,
    json_depth,
)

from mcp_gateway.core.changes import Waiters, Watch
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.ports import (
    ExistingWorkflow,
    NewWorkflow,
    OutboxMessage,
    Reopening,
    WorkflowRecord,
    WorkflowStore,
)
from mcp_gateway.core.presence import WorkerPresence
from mcp_gateway.core.states import APPROVAL, TERMINAL, Status, WorkflowState, reopen
from mcp_gateway.core.telemetry import NO_TELEMETRY, UNKNOWN_TOOL_LABEL, Telemetry
from mcp_gateway.core.tracing import new_traceparent, trace_id_of, traceparent_in, tracer
from mcp_gateway.core.workflows import Action, AnswerRefused, Viewer, WorkflowNotFound, Workflows
from mcp_gateway.errors import BusError, GatewayError, StoreError
from mcp_gateway.registry import Registry, SchemaViolation, Tool, holds_marker

__all__ = [
    "InputCallback",
    "Outcome",
    "OutcomeKind",
    "Progress",
    "RetryRefused",
    "ToolCallService",
    "UserAnswer",
    "new_traceparent",
    "outcome_from_state",
]

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
    UNAVAILABLE = "unavailable"
    """PostgreSQL could not record the call (it is away): nothing was written; the caller may simply retry."""
    TOO_LARGE = "too_large"
    """The call's command would not fit in one bus message (NATS `max_payload`): refused, nothing written."""
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    """The caller used this idempotency key for the tool already, with other arguments: refused."""
    NO_WORKER = "no_worker"
    """No worker listens for the tool's commands: the workflow is recorded and its command sent, and it runs
    when a worker appears (until its deadline); the call does not wait for it."""
    INPUT_REQUIRED = "input_required"
    """The workflow asks the caller something (a worker's question, or an approval) and no one could ask
    the user during the call (2026-07-28): the caller answers and calls again (`resume`)."""


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
    questions: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """The open questions the caller may answer (INPUT_REQUIRED)."""
    content: list[dict[str, Any]] | None = None
    unserved: str | None = None
    """The command subject no worker listens on (NO_WORKER, or a handle handed back with nobody to run it)."""


ProgressCallback = Callable[[Progress], Awaitable[None]]
LogCallback = Callable[[dict[str, Any]], Awaitable[None]]
"""Passes a worker's log line (`{level, message, logger}`) on to the client of the waiting call."""


@dataclass(frozen=True, slots=True)
class UserAnswer:
    action: Action
    content: dict[str, Any] | None = None

    @property
    def pair(self) -> tuple[Action, dict[str, Any] | None]:
        return self.action, self.content


InputCallback = Callable[[dict[str, Any]], Awaitable[UserAnswer]]
"""Asks the user the workflow's question while the call is open (elicitation on the 2025-11-25 wire)."""

ENVELOPE_DEPTH = 2
"""How deep the command envelope puts the arguments (they must still decode within the contract's MAX_DEPTH)."""
HEADER_OVERHEAD = 64
"""Bytes NATS adds around the headers of a message (the NATS/1.0 line, separators)."""

ASK_ATTEMPTS = 3
"""How often a question is put to the user when the answers break its schema."""


class RetryRefused(GatewayError):
    """A workflow cannot be run again: it has not ended, it completed, its tool is gone, or the arguments are bad."""


def unstorable(arguments: dict[str, Any]) -> list[SchemaViolation]:
    """What makes arguments impossible to carry or store, whatever the schema says: nesting deeper than the
    contract decodes, or a NUL character (PostgreSQL's JSON cannot hold one). Checked before the schema."""
    if json_depth(arguments) > MAX_DEPTH - ENVELOPE_DEPTH:
        return [SchemaViolation("", f"the arguments nest deeper than {MAX_DEPTH - ENVELOPE_DEPTH} levels")]
    stack: list[tuple[Any, str]] = [(arguments, "")]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            return [SchemaViolation(at, "a NUL character (\\u0000) cannot be stored; remove it")]
        if isinstance(node, dict):
            for key, child in cast(dict[str, Any], node).items():
                if "\x00" in key:
                    return [SchemaViolation(at, "a key holds a NUL character (\\u0000), which cannot be stored")]
                stack.append((child, f"{at}/{key.replace('~', '~0').replace('/', '~1')}"))
        elif isinstance(node, list):
            stack.extend((child, f"{at}/{i}") for i, child in enumerate(cast(list[Any], node)))
    return []


def _canonical(arguments: dict[str, Any]) -> bytes:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def arguments_hash(arguments: dict[str, Any]) -> str:
    """The same arguments, however their keys are ordered, give the same hash (idempotency keys compare it)."""
    return hashlib.sha256(_canonical(arguments)).hexdigest()


def arguments_digest(tool: Tool, arguments: dict[str, Any], key: bytes) -> str:
    """What an idempotency key's arguments are compared by. Arguments with no sensitive value: their plain hash.
    With one: a plain hash of the redacted arguments (what the row shows anyway) and an HMAC of the whole ones
    under `key`, with the key's id (`hmac:<key id>:<redacted hash>:<hmac>`). A plain hash of a low-entropy secret
    (a PIN, a password) would give it away to whoever reads the row: it can be guessed and checked offline."""
    redacted = tool.redact(arguments)
    if redacted == arguments:
        return arguments_hash(arguments)
    key_id = hmac.new(key, b"mcp-gateway idempotency key id", hashlib.sha256).hexdigest()[:16]
    keyed = hmac.new(key, _canonical(arguments), hashlib.sha256).hexdigest()
    return f"hmac:{key_id}:{arguments_hash(redacted)}:{keyed}"


def same_arguments(stored: str | None, ours: str | None) -> bool:
    """Whether a workflow's idempotency digest and a new call's name the same arguments. Digests made under
    another key (the `secret_key` setting changed) cannot compare the
    sensitive values: then the rest of the arguments decides."""
    if stored == ours:
        return True
    if stored is None or ours is None or not (stored.startswith("hmac:") and ours.startswith("hmac:")):
        return False
    theirs, mine = stored.split(":"), ours.split(":")
    return len(theirs) == len(mine) == 4 and theirs[1] != mine[1] and theirs[2] == mine[2]


class ToolCallService:
    def __init__(
        self,
        registry: Callable[[], Registry],
        store: WorkflowStore,
        dispatcher: Dispatcher,
        waiters: Waiters,
        subjects: Subjects,
        workflows: Workflows,
        presence: WorkerPresence | None = None,
        max_payload: Callable[[], int] = lambda: 1024 * 1024,
    ) -> None:
        self._registry = registry
        self._presence = presence
        self._max_payload = max_payload
        self.idempotency_window = 86_400.0
        """Seconds an idempotency key names its workflow (then it may name a new one)."""
        self.secret_key = secrets.token_bytes(32)
        """The key of the HMAC that idempotency keys compare sensitive arguments by (`arguments_digest`). Give
        every gateway process the same one so that a retry reaching another process, or coming after a restart,
        compares them too: the composition root sets it from the settings (`secret_key`, else data_dir/secret.key)."""
        """The bus's largest message; a call whose command is larger is refused before anything is written."""
        self._store = store
        self._dispatcher = dispatcher
        self._waiters = waiters
        self._subjects = subjects
        self._workflows = workflows
        self.stopping = False
        """Set when the gateway shuts down: calls cut short then are not cancellations; their work goes on."""
        self.telemetry: Telemetry = NO_TELEMETRY
        """Told of each call (outcome, latencies, in flight) and each admin retry; the composition root sets it."""

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
        attempt: int = 1,
    ) -> OutboxMessage:
        command = Command(
            workflow_id=workflow_id,
            tool=tool.name,
            tool_version=tool.config.version,
            arguments=arguments,
            caller=caller,
            deadline=deadline,
            subject=tool.config.subject,
            reply_subject=self._subjects.event(tool.config.subject, workflow_id),
            retry=tool.config.retry,
            attempt=attempt,
        )
        msg_id = workflow_id if attempt == 1 else f"{workflow_id}.{attempt}"
        headers = {
            Headers.MSG_ID: msg_id,
            Headers.SCHEMA: str(CONTRACT_VERSION),
            Headers.WORKFLOW_ID: workflow_id,
            Headers.TOOL: tool.name,
            Headers.TRACEPARENT: traceparent,
        }
        return OutboxMessage(workflow_id, self._subjects.command(tool.config.subject), msg_id, headers, encode(command))

    async def retry(
        self, workflow_id: str, viewer: Viewer, *, arguments: dict[str, Any] | None = None
    ) -> WorkflowRecord:
        """Run a workflow that ended without a result (failed, dead-lettered, timed out, cancelled) again, as a
        new attempt with a new deadline; its history is kept. With `arguments`, they replace the old ones (checked
        against the tool's input schema first). Refused (RetryRefused, saying why) otherwise."""
        record = await self._workflows.get(workflow_id, viewer)
        tool = self.registry.get(record.tool)
        if tool is None:
            raise RetryRefused(f"workflow {workflow_id}: tool {record.tool!r} is no longer configured")
        if arguments is None and holds_marker(record.arguments):
            raise RetryRefused(
                f"workflow {workflow_id}: its arguments were kept redacted (values marked x-sensitive are not "
                "stored), so they cannot be sent again; pass them whole: mcp-gateway workflows retry "
                f"{workflow_id} --arguments FILE (or dlq redrive ID --arguments FILE, or the body "
                '{"arguments": {...}} of POST /admin/workflows/ID/retry)'
            )
        args = arguments if arguments is not None else record.arguments
        violations = tool.input.violations(args)
        if violations:
            raise RetryRefused(f"the arguments do not match tool {tool.name!r}: " + "; ".join(map(str, violations)))
        reopened = reopen(record.state)
        if not reopened.changed:
            raise RetryRefused(f"workflow {workflow_id}: {reopened.note}")
        attempt = reopened.state.attempt
        deadline = datetime.now(UTC) + timedelta(seconds=tool.deadline_seconds)
        caller = Caller(subject=record.caller, request_id=record.request_id)
        # Traced, the new attempt joins the workflow's trace (its publish and the worker's spans); else a fresh one.
        traceparent = (tracer().enabled and traceparent_in(record.trace_id)) or new_traceparent()
        message = self._command(tool, workflow_id, args, caller, traceparent, deadline, attempt)
        kept = tool.redact(args)  # the command carries them whole; the row keeps them redacted
        result = await self._store.reopen(
            Reopening(
                workflow_id,
                record.state.version,
                attempt,
                message,
                deadline,
                kept,
                arguments is not None and (kept != record.arguments or kept != args),
                viewer.subject,
            ),
            lambda _tool, state: reopen(state),
        )
        if result is None:
            raise WorkflowNotFound(workflow_id)
        applied, outbox_id = result
        if outbox_id is None:
            raise RetryRefused(f"workflow {workflow_id}: {applied.fold.note or 'not reopened'}")
        log.info("workflow.retried", workflow_id=workflow_id, attempt=attempt, by=viewer.subject)
        self.telemetry.retried(record.tool, "admin")
        await self._dispatcher.send(_with_id(message, outbox_id))
        return await self._workflows.get(workflow_id, viewer)

    async def call(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        caller: Caller,
        traceparent: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_input: InputCallback | None = None,
        on_log: LogCallback | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Run a tool call. With `wait=False` (or a tool in `async` mode) it returns once the workflow is
        recorded and its command sent. A call cancelled while it waits (the client cancelled, or closed the
        request on the 2026-07-28 wire) cancels its workflow, unless the gateway is stopping.

        With an `idempotency_key`, a call by the same caller to the same tool with the same key (within the
        idempotency window) is the same workflow: it joins it (its result if it ended, else it waits as a call
        would), and the same key with other arguments is refused (IDEMPOTENCY_CONFLICT).

        `traceparent` (the client's) is continued. With tracing on, the call is a span (`gateway.call`) and its
        context is what the command carries and the workflow's trace id; off, the client's or a new one."""
        with (
            tracer().span("gateway.call", parent=traceparent, attributes={"gen_ai.tool.name": name}) as span,
            _CallTimer(self, name) as timed,
        ):
            outcome = await self._call(
                name,
                arguments,
                caller=caller,
                traceparent=tracer().traceparent() or traceparent,
                on_progress=timed.progress(on_progress),
                on_input=on_input,
                on_log=on_log,
                wait=wait,
                idempotency_key=idempotency_key,
            )
            timed.ended(outcome)
            span.set_attribute("mcp_gateway.outcome", outcome.kind.value)
            if outcome.workflow_id is not None:
                span.set_attribute("mcp_gateway.workflow_id", outcome.workflow_id)
            return outcome

    async def _call(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        caller: Caller,
        traceparent: str | None,
        on_progress: ProgressCallback | None,
        on_input: InputCallback | None,
        on_log: LogCallback | None,
        wait: bool,
        idempotency_key: str | None,
    ) -> Outcome:
        started = time.monotonic()
        tool = self.registry.get(name)
        if tool is None:
            return Outcome(OutcomeKind.UNKNOWN_TOOL, name)
        args = arguments or {}
        with tracer().span("gateway.validate"):
            violations = unstorable(args) or tool.input.violations(args)
        if violations:
            return Outcome(OutcomeKind.INVALID_ARGUMENTS, name, violations=violations)

        workflow_id = uuid.uuid4().hex
        traceparent = traceparent or new_traceparent()
        deadline = datetime.now(UTC) + timedelta(seconds=tool.deadline_seconds)
        message = self._command(tool, workflow_id, args, caller, traceparent, deadline)
        size = len(message.payload) + sum(len(k) + len(v) + 4 for k, v in message.headers.items()) + HEADER_OVERHEAD
        if size > self._max_payload():
            limit = self._max_payload()
            log.info("call.too_large", tool=name, size=size, limit=limit)
            return Outcome(OutcomeKind.TOO_LARGE, name, error={"size": size, "limit": limit})
        bound = structlog.contextvars.bind_contextvars(
            workflow_id=workflow_id, tool=name, trace_id=trace_id_of(traceparent)
        )
        budget = tool.config.timeout if wait and tool.config.mode not in ("async", "task") else 0.0
        kept = tool.redact(args)  # what the row, its views and the approval question show; the command has `args`
        approval = _approval_question(tool, kept)
        initial = WorkflowState(Status.INPUT_REQUIRED, questions=[approval]) if approval else None
        recorded = False
        hashed = arguments_digest(tool, args, self.secret_key) if idempotency_key is not None else None
        try:
            with self._waiters.watch(workflow_id) as watch:
                try:
                    created = await self._record(
                        NewWorkflow(
                            workflow_id,
                            name,
                            tool.config.version,
                            kept,
                            caller.subject,
                            caller.request_id,
                            trace_id_of(traceparent),
                            deadline,
                            status=initial.status if initial else Status.PENDING,
                            approval=approval,
                            idempotency_key=idempotency_key,
                            arguments_hash=hashed,
                            idempotency_window=self.idempotency_window,
                        ),
                        message,
                    )
                except StoreError as exc:  # nothing was recorded: safe for the client to call again
                    log.warning("call.not_recorded", error=str(exc))
                    return Outcome(OutcomeKind.UNAVAILABLE, name, error={"message": str(exc)})
                if isinstance(created, ExistingWorkflow):
                    return await self._join(tool, created, hashed, caller, budget, on_progress)
                outbox_id = created
                recorded = True
                log.info("call.accepted", mode=tool.config.mode, approval=tool.config.approval)
                self.telemetry.call_accepted(name, time.monotonic() - started)
                sent = False if initial else await self._dispatcher.send(_with_id(message, outbox_id))
                if not initial and self._presence is not None and not await self._presence.served(tool):
                    log.warning("call.no_worker", subject=message.subject)
                    status = Status.DISPATCHED if sent else Status.PENDING
                    kind = OutcomeKind.NO_WORKER if budget > 0 else OutcomeKind.HANDED_BACK
                    return Outcome(kind, name, workflow_id, status=status, unserved=message.subject)
                if budget > 0:
                    state = await self._wait(watch, workflow_id, caller, budget, on_progress, on_input, initial, on_log)
                else:
                    state = initial or WorkflowState(Status.DISPATCHED if sent else Status.PENDING)
        except asyncio.CancelledError:
            if recorded and not self.stopping:
                await asyncio.shield(self._cancel_quietly(workflow_id, caller))
            raise
        finally:
            structlog.contextvars.reset_contextvars(**bound)  # what the request had bound (its trace id) stays
        return outcome_from_state(name, workflow_id, state, tool.config.mode)

    async def _record(self, workflow: NewWorkflow, message: OutboxMessage) -> int | ExistingWorkflow:
        """The store write of a call (the workflow and its command, one transaction), as a span."""
        with tracer().span("gateway.store.create", attributes={"mcp_gateway.workflow_id": workflow.id}):
            return await self._store.create(workflow, message)

    async def _join(
        self,
        tool: Tool,
        existing: ExistingWorkflow,
        hashed: str | None,
        caller: Caller,
        budget: float,
        on_progress: ProgressCallback | None,
    ) -> Outcome:
        """A call whose idempotency key names a workflow of this caller and tool: that workflow's outcome (after
        waiting for it as the call would have), or a conflict when the arguments differ. Cancelling a joined call
        does not cancel the workflow (the call that started it may still wait for it)."""
        workflow_id = existing.workflow_id
        if not same_arguments(existing.arguments_hash, hashed):
            return Outcome(OutcomeKind.IDEMPOTENCY_CONFLICT, tool.name, workflow_id)
        log.info("call.joined", existing=workflow_id)
        with self._waiters.watch(workflow_id) as watch:
            record = await self._workflows.get(workflow_id, Viewer(caller.subject))
            state = await self._wait(watch, workflow_id, caller, budget, on_progress, None, record.state)
        return outcome_from_state(tool.name, workflow_id, state, tool.config.mode)

    async def resume(
        self,
        name: str,
        workflow_id: str,
        asked: list[str],
        answers: dict[str, UserAnswer],
        *,
        caller: Caller,
        on_progress: ProgressCallback | None = None,
    ) -> Outcome:
        """Continue a call whose workflow asked questions (2026-07-28 input-required): take the answers given,
        wait again. The state must name the caller's own workflow, of the tool called, and questions it asked
        (any other, from elsewhere or tampered with, is refused as not found); of those, the ones still open
        are answered (all checked before any is recorded). Questions left open are asked again in the outcome."""
        viewer = Viewer(caller.subject)
        record = await self._workflows.get(workflow_id, viewer)
        open_ids = {q["id"] for q in record.state.questions}
        if record.tool != name or not asked or not set(asked) <= open_ids | set(record.state.answers):
            raise WorkflowNotFound(workflow_id)  # names a question this workflow never asked: tampered with
        tool = self.registry.get(record.tool)
        mode = tool.config.mode if tool else "sync"
        given = {qid: answers[qid].pair for qid in asked if qid in answers and qid in open_ids}
        budget = tool.config.timeout if tool else 0.0
        with self._waiters.watch(workflow_id) as watch:  # before answering: the worker may finish at once
            answered = await self._workflows.answer_all(workflow_id, viewer, given) if given else None
            current = (answered or await self._workflows.get(workflow_id, viewer)).state
            state = await self._wait(watch, workflow_id, caller, budget, on_progress, None, current)
        return outcome_from_state(record.tool, workflow_id, state, mode)

    async def _ask(self, workflow_id: str, caller: Caller, question: dict[str, Any], on_input: InputCallback) -> None:
        """Put the question to the user (up to ASK_ATTEMPTS times while the answers break its schema)."""
        viewer = Viewer(caller.subject)
        asked = question
        for _ in range(ASK_ATTEMPTS):
            given = await on_input(asked)
            try:
                await self._workflows.answer(workflow_id, viewer, question["id"], given.action, given.content)
                return
            except AnswerRefused as exc:
                log.info("call.answer_refused", workflow_id=workflow_id, reason=str(exc))
                asked = {**question, "message": f"{exc}. {question['message']}"}
        await self._workflows.answer(workflow_id, viewer, question["id"], "cancel", None)

    async def _cancel_quietly(self, workflow_id: str, caller: Caller) -> None:
        try:
            await self._workflows.cancel(workflow_id, Viewer(caller.subject), "the client cancelled the call")
        except Exception as exc:  # the deadline still ends it; never mask the cancellation itself
            log.warning("call.cancel_failed", workflow_id=workflow_id, error=str(exc))

    async def _wait(
        self,
        watch: Watch,
        workflow_id: str,
        caller: Caller,
        budget: float,
        on_progress: ProgressCallback | None,
        on_input: InputCallback | None,
        initial: WorkflowState | None = None,
        on_log: LogCallback | None = None,
    ) -> WorkflowState | None:
        """Follow the workflow for up to `budget` seconds: forward progress, put questions to the user (or
        return at the first question when no one can ask it), return at the end."""
        last = initial
        put: set[str] = set()
        reported = float("-inf")
        if last is not None and last.status in TERMINAL:
            return last
        if last is not None:
            watch.seen(last.version)  # changes queued before that state was read are stale
        try:
            async with asyncio.timeout(budget):
                if last is not None and await self._asked(last, workflow_id, caller, on_input, put):
                    return last
                async for change, truncated in watch.changes():
                    last = change.state
                    if change.log is not None and on_log is not None:
                        await on_log(change.log)
                    if truncated:  # too large to announce whole: the store has it
                        with contextlib.suppress(StoreError):  # else: the announced part, and the final read
                            record = await self._store.get(workflow_id)
                            last = record.state if record is not None else last
                    if change.terminal:
                        return last
                    if await self._asked(last, workflow_id, caller, on_input, put):
                        return last
                    # MCP progress must increase: a change that is not a new step (a question, its answer) sends none.
                    if on_progress is not None and last.progress is not None and last.progress > reported:
                        reported = last.progress
                        await on_progress(Progress(last.progress, last.total, last.message))
        except TimeoutError:
            pass
        # No terminal change heard in time: the store has the last word (a change may have been missed). When
        # the store is away, the last state heard stands: the caller gets an answer naming the workflow.
        try:
            record = await self._store.get(workflow_id)
        except StoreError as exc:
            log.warning("call.final_read_failed", workflow_id=workflow_id, error=str(exc))
            return last
        return record.state if record is not None else last

    async def _asked(
        self,
        state: WorkflowState,
        workflow_id: str,
        caller: Caller,
        on_input: InputCallback | None,
        put: set[str],
    ) -> bool:
        """Handle the open questions; True when the call must return so the caller can answer them. `put`
        holds the ids already put to the user during this call (each is asked once)."""
        questions = [q for q in state.questions if q.get("by") != "admin"]
        if state.status is not Status.INPUT_REQUIRED or not questions:
            return False  # nothing to ask, or an admin decides: keep waiting
        if on_input is None:
            return True
        unasked = False
        for question in questions:
            if question["id"] in put:
                continue
            put.add(question["id"])
            try:
                await self._ask(workflow_id, caller, question, on_input)
            except AnswerRefused as exc:  # answered meanwhile elsewhere (an admin, another process): go on
                log.info("call.answered_elsewhere", workflow_id=workflow_id, reason=str(exc))
            except Exception as exc:  # the client could not be asked: return, the question stays open for
                log.warning("call.ask_failed", workflow_id=workflow_id, error=str(exc) or type(exc).__name__)
                unasked = True  # workflow_respond (rather than wait out the timeout for nothing)
        return unasked


def _approval_question(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any] | None:
    if tool.config.approval == "none":
        return None
    shown = json.dumps(arguments, ensure_ascii=False)[:2000]
    who = "you" if tool.config.approval == "caller" else "an admin"
    return {
        "id": APPROVAL,
        "kind": "confirm",
        "approval": True,
        "by": tool.config.approval,
        "message": f"Tool {tool.name!r} needs approval by {who} before it runs, with arguments {shown}. Approve?",
    }


def _with_id(message: OutboxMessage, outbox_id: int) -> OutboxMessage:
    return OutboxMessage(
        message.workflow_id, message.subject, message.msg_id, message.headers, message.payload, outbox_id
    )


def outcome_from_state(tool: str, workflow_id: str, state: WorkflowState | None, mode: str) -> Outcome:
    """What a call (or a later look at its workflow) amounts to, given the workflow's state."""
    asked = [q for q in state.questions if q.get("by") != "admin"] if state is not None else []
    if state is not None and state.status is Status.INPUT_REQUIRED and asked:
        return Outcome(OutcomeKind.INPUT_REQUIRED, tool, workflow_id, status=state.status, questions=asked)
    if state is None or state.status not in TERMINAL:
        kind = OutcomeKind.STILL_RUNNING if mode == "sync" else OutcomeKind.HANDED_BACK
        return Outcome(kind, tool, workflow_id, status=state.status if state else None)
    if state.status is Status.COMPLETED:
        return Outcome(
            OutcomeKind.COMPLETED, tool, workflow_id, result=state.result, status=state.status, content=state.content
        )
    error = state.error or {"code": state.status.value, "message": f"the workflow ended {state.status.value}"}
    return Outcome(OutcomeKind.FAILED, tool, workflow_id, error=error, status=state.status)


def outcome_label(outcome: Outcome) -> str:
    """What a call is counted as: its outcome's kind, except that a call whose workflow ended without a result
    names how it ended (`failed`, `cancelled`, `timed_out`, `dead_lettered`)."""
    if outcome.kind is OutcomeKind.FAILED and outcome.status is not None:
        return outcome.status.value
    return outcome.kind.value


class _CallTimer:
    """One call's telemetry: in flight from entry to exit, its first progress, how it ended and when. A call cut
    short is counted `cancelled` (the client gave up), `interrupted` (the gateway is stopping: the work goes on),
    `unavailable` (PostgreSQL or NATS away) or `error`."""

    __slots__ = ("_ended", "_label", "_service", "_started")

    def __init__(self, service: ToolCallService, name: str) -> None:
        self._service = service
        self._label = name if service.registry.get(name) is not None else UNKNOWN_TOOL_LABEL
        self._started = time.monotonic()
        self._ended = False

    def __enter__(self) -> _CallTimer:
        self._service.telemetry.call_started(self._label)
        return self

    def progress(self, on_progress: ProgressCallback | None) -> ProgressCallback | None:
        """`on_progress`, telling the telemetry when the first progress goes out."""
        if on_progress is None:
            return None
        forward = on_progress
        first = True

        async def progressed(progress: Progress) -> None:
            nonlocal first
            if first:
                first = False
                self._service.telemetry.call_progressed(self._label, time.monotonic() - self._started)
            await forward(progress)

        return progressed

    def ended(self, outcome: Outcome) -> None:
        self._ended = True
        result = outcome.kind in (OutcomeKind.COMPLETED, OutcomeKind.FAILED)
        elapsed = time.monotonic() - self._started
        self._service.telemetry.call_ended(self._label, outcome_label(outcome), elapsed, result=result)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._ended:
            return
        if self._service.stopping:
            kind = "interrupted"
        elif isinstance(e, asyncio.CancelledError):
            kind = "cancelled"
        else:
            kind = "unavailable" if isinstance(e, StoreError | BusError) else "error"
        self._service.telemetry.call_ended(self._label, kind, time.monotonic() - self._started, result=False)
