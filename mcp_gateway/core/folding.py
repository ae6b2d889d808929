"""The folder: pulls worker events from the bus, folds each into its workflow in the store, announces the change.

Events are acknowledged only after their fold is committed. No message can stop it:
- one that cannot be decoded (for any reason: not JSON, nested too deep, not the contract's shape) or that
  fails the contract's checks (its subject, key or workflow disagree; its subject is not its workflow's tool's:
  see `check_event`) is terminated and kept as a dead letter, with a reason naming the subject expected;
- one the store cannot take because PostgreSQL is away is put back with a capped backoff, for as long as that
  lasts; one PostgreSQL refuses (a value it cannot store), or one whose fold fails unexpectedly, is tried
  `MAX_TRIES` times, then dead-lettered;
- an event that skips ahead of its predecessors (a gap in `seq`) waits for them up to `gap_wait` seconds from
  when this process first saw the gap, however often it was redelivered meanwhile, then is folded anyway (longer
  than the fold consumer's ack wait, so events held by a gateway that died come back in time).
Events of one workflow are folded in order; different workflows concurrently. The loop runs under the
supervisor: an error it did not expect restarts it, never ends it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import structlog
from mcp_gateway_worker.contract import ContractError, Event, EventKind, Headers, InputAnswer, Subjects, decode_event

from mcp_gateway.core.dead_letters import DeadLetterOffice
from mcp_gateway.core.ports import HEAD_BYTES, Applied, Bus, DeadLetter, Delivery, WorkflowStore
from mcp_gateway.core.states import TERMINAL, ContentCheck, Fold, Status, WorkflowState, fold
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry, dead_letter_kind, fold_lag
from mcp_gateway.core.tracing import trace_id_of, traceparent_in, tracer
from mcp_gateway.errors import BusError, StoreError, StoreRejected
from mcp_gateway.registry import Registry

__all__ = ["EventFolder", "check_event"]

log = structlog.get_logger(__name__)

MAX_TRIES = 5
"""How often an event PostgreSQL refuses, or whose fold fails unexpectedly, is tried before it is dead-lettered."""
DEFER_DELAY = 0.02
FETCH_WAIT = 0.5
"""Seconds one fetch waits for events; also the longest a stop waits for a fetch under way."""
MAX_RETRY_DELAY = 5.0
"""The longest an event waits before it is tried again while PostgreSQL is away (doubling from `retry_delay`)."""
REMEMBERED_GAPS = 10_000


def check_event(event: Event, delivery: Delivery, subjects: Subjects, tool_subject: str | None = None) -> str | None:
    """What makes an event's envelope disagree with itself or with where it came from (None when it agrees).

    It must come on an event subject whose last token is the workflow id of its body (`<prefix>.evt.<tool
    subject>.<workflow id>`), and a `Nats-Msg-Id` must be its key. With `tool_subject` (the subject of the
    workflow's tool, in the registry now), the subject must be exactly that tool's: NATS holds a worker user to
    publishing on its own tools' subjects, and this makes that hold for the workflow (a worker allowed to report
    on tool B's subject cannot finish a workflow of tool A). The fold checks the shape as it takes an event, and
    the tool part under the workflow's lock, where its tool is known.

    A workflow whose tool the registry no longer has (removed, or renamed, by a reload) has no subject to hold its
    events to: they are checked without one (the gateway cannot tell which subject was its tool's; NATS still
    holds each worker to its own). A tool whose subject a reload changed holds its running workflows to the new
    subject: their workers' events on the old one are refused (drain a tool's work before moving its subject).
    A delivery without a subject (a test double) is not checked against one."""
    if delivery.subject:
        parts = subjects.split_event(delivery.subject)
        if parts is None or parts[1] != event.workflow_id:
            expected = subjects.event(tool_subject or "<tool subject>", event.workflow_id)
            return f"the event names workflow {event.workflow_id} but came on {delivery.subject}; expected {expected}"
        if tool_subject is not None and parts[0] != tool_subject:
            expected = subjects.event(tool_subject, event.workflow_id)
            return (
                f"the event came on {delivery.subject}, the subject of tool subject {parts[0]!r}, but workflow "
                f"{event.workflow_id}'s tool has subject {tool_subject!r}: expected {expected}"
            )
    msg_id = delivery.headers.get(Headers.MSG_ID)
    if msg_id is not None and msg_id != event.key:
        return f"its {Headers.MSG_ID} {msg_id!r} is not its key {event.key!r} (workflow.attempt.seq)"
    return None


class EventFolder:
    def __init__(
        self,
        store: WorkflowStore,
        bus: Bus,
        registry: Callable[[], Registry],
        supervisor: Supervisor,
        subjects: Subjects,
        office: DeadLetterOffice | None = None,
        *,
        batch: int = 128,
        retry_delay: float = 0.25,
        grace: float = 5.0,
        gap_wait: float = 20.0,
        check_content: ContentCheck | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._bus = bus
        self._registry = registry
        self._supervisor = supervisor
        self._subjects = subjects
        self._office = office
        self._batch = batch
        self._retry_delay = retry_delay
        self._stopping = asyncio.Event()
        self._grace = grace
        self._gap_wait = gap_wait
        self._check_content = check_content
        self._gaps: OrderedDict[str, float] = OrderedDict()
        """Event key -> when this process first put it back for a gap."""
        self.dead_lettered = 0

    async def __aenter__(self) -> EventFolder:
        self._supervisor.start("fold", self._run)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop taking events; fold what was already taken (within `grace` seconds), so that nothing waits for
        its ack deadline in another process."""
        self._stopping.set()
        await self._supervisor.stop("fold", grace=self._grace)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                deliveries = await self._bus.fetch_events(self._batch, max_wait=FETCH_WAIT)
            except BusError as exc:  # a broken connection: NATS reconnects, we try again
                log.warning("fold.fetch_failed", error=str(exc))
                await asyncio.sleep(self._retry_delay)
                continue
            if deliveries:
                await self.fold_batch(deliveries)

    async def fold_batch(self, deliveries: Sequence[Delivery]) -> None:
        by_workflow: dict[str, list[tuple[Event, Delivery]]] = {}
        for delivery in deliveries:
            event = await self._take(delivery)
            if event is not None:
                by_workflow.setdefault(event.workflow_id, []).append((event, delivery))
        if len(by_workflow) < 2 or tracer().enabled:  # one workflow, or a span per fold: one at a time
            await asyncio.gather(*(self._fold_sequence(items) for items in by_workflow.values()))
            return
        sequences = list(by_workflow.values())
        for turn in range(max(len(items) for items in sequences)):  # each workflow's events in order
            await self._fold_together([items[turn] for items in sequences if turn < len(items)])

    async def _fold_together(self, items: list[tuple[Event, Delivery]]) -> None:
        """Events of different workflows: the store commits what it can of them at once (`apply_many`); each
        of the rest is folded alone, as it would be without the batch."""
        refusals: list[list[str]] = [[] for _ in items]
        decisions = [(e, self._decide(e, d, refused)) for (e, d), refused in zip(items, refusals, strict=True)]
        try:
            applied = await self._store.apply_many(decisions)
        except StoreError as exc:  # nothing of it was committed: each is folded alone (and its error handled there)
            log.info("fold.batch_failed", error=str(exc), events=len(items))
            applied = [None] * len(items)
        except Exception as exc:  # a bug, or input nothing foresaw: folded alone, where it is logged and counted
            log.warning("fold.batch_failed", error=f"{type(exc).__name__}: {exc}", events=len(items))
            applied = [None] * len(items)
        alone: list[Awaitable[None]] = []
        for (event, delivery), refused, done in zip(items, refusals, applied, strict=True):
            if done is None:
                alone.append(self._fold_one(event, delivery))
                continue
            parent = delivery.headers.get(Headers.TRACEPARENT)
            with structlog.contextvars.bound_contextvars(trace_id=trace_id_of(parent)):
                await self._settle_applied(event, delivery, done, refused)
        await asyncio.gather(*alone)

    async def _take(self, delivery: Delivery) -> Event | None:
        """The delivery's event, or None when it was dead-lettered (it cannot be decoded, or its subject is not
        an event subject of its workflow). That its subject is its workflow's tool's is checked when it is
        folded (`_decide`), where the tool is known."""
        try:
            event = decode_event(delivery.data)
        except ContractError as exc:
            await self._dead_letter(delivery, str(exc))
            return None
        problem = check_event(event, delivery, self._subjects)
        if problem is not None:
            tool_subject = await self._tool_subject(event.workflow_id)  # only now, to name the subject expected
            if tool_subject is not None:
                problem = check_event(event, delivery, self._subjects, tool_subject) or problem
            await self._dead_letter(delivery, f"refused: {problem}", event.workflow_id)
            return None
        return event

    async def _tool_subject(self, workflow_id: str) -> str | None:
        """The subject of the workflow's tool, if the workflow exists and the registry has its tool."""
        try:
            record = await self._store.get(workflow_id)
        except StoreError:
            return None
        tool = self._registry().get(record.tool) if record is not None else None
        return tool.config.subject if tool is not None else None

    async def _fold_sequence(self, items: list[tuple[Event, Delivery]]) -> None:
        for event, delivery in items:
            await self._fold_one(event, delivery)

    def _may_defer(self, key: str) -> bool:
        """Whether an event that skips ahead may still wait for its predecessors (bounded by time)."""
        first = self._gaps.get(key)
        if first is None:
            self._gaps[key] = first = time.monotonic()
            while len(self._gaps) > REMEMBERED_GAPS:
                self._gaps.popitem(last=False)
        return time.monotonic() - first < self._gap_wait

    def _decide(self, event: Event, delivery: Delivery, refused: list[str]) -> Callable[[str, WorkflowState], Fold]:
        """Fold the event into its workflow under the row lock. One that fails `check_event` against the
        workflow's tool is refused there (the reason appended to `refused`) and recorded nowhere (deferred, for
        the store), so that its key stays free for the real event."""

        def decide(tool_name: str, state: WorkflowState) -> Fold:
            tool = self._registry().get(tool_name)
            problem = check_event(event, delivery, self._subjects, tool.config.subject if tool is not None else None)
            if problem is not None:
                refused.append(problem)
                return Fold(state, False, f"refused: {problem}", defer=True)
            check = tool.output.violations if tool is not None and tool.output is not None else None
            last_seq = state.last_seq if event.attempt == state.attempt else -1
            ahead = event.attempt >= state.attempt and event.seq > last_seq + 1
            may_defer = self._may_defer(event.key) if ahead else False
            retried = tool is not None and tool.config.retry is not None
            return fold(state, event, check, may_defer=may_defer, check_content=self._check_content, retried=retried)

        return decide

    def _backoff(self, delivery: Delivery) -> float:
        return min(self._retry_delay * 2 ** max(delivery.attempts - 1, 0), MAX_RETRY_DELAY)

    async def _fold_one(self, event: Event, delivery: Delivery) -> None:
        """Fold one event in its trace: traced, a span (`gateway.fold`, kind consumer) that continues the event's
        `traceparent` (the worker's handler span), else the workflow's stored trace; the trace id on its logs."""
        parent = delivery.headers.get(Headers.TRACEPARENT)
        if not tracer().enabled:
            trace_id = trace_id_of(parent)
            if trace_id is None:
                return await self._fold(event, delivery)
            with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                return await self._fold(event, delivery)
        if parent is None:  # a worker that does not carry it: the trace the workflow's row names
            parent = await self._stored_trace(event.workflow_id)
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": delivery.subject,
            "mcp_gateway.workflow_id": event.workflow_id,
            "mcp_gateway.event": event.key,
            "mcp_gateway.event_kind": event.kind.value,
        }
        with (
            tracer().span("gateway.fold", parent=parent, kind="consumer", attributes=attributes),
            structlog.contextvars.bound_contextvars(trace_id=trace_id_of(tracer().traceparent() or parent)),
        ):
            await self._fold(event, delivery)

    async def _stored_trace(self, workflow_id: str) -> str | None:
        """A traceparent in the trace the workflow's row names (None when it names none, or cannot be read)."""
        try:
            record = await self._store.get(workflow_id)
        except StoreError:
            return None
        return traceparent_in(record.trace_id) if record is not None else None

    async def _fold(self, event: Event, delivery: Delivery) -> None:
        bound = log.bind(workflow_id=event.workflow_id, event=event.key, kind=event.kind.value)
        refused: list[str] = []
        try:
            applied = await self._store.apply(event, self._decide(event, delivery, refused))
        except StoreRejected as exc:
            bound.warning("fold.store_refused", error=str(exc), attempts=delivery.attempts)
            if delivery.attempts >= MAX_TRIES:
                await self._dead_letter(delivery, f"PostgreSQL refused it {delivery.attempts} times: {exc}")
            else:
                await self._settle(delivery.nak(self._backoff(delivery)))
            return
        except StoreError as exc:  # PostgreSQL away: put it back, as long as that lasts
            bound.warning("fold.store_failed", error=str(exc), attempts=delivery.attempts)
            await self._settle(delivery.nak(self._backoff(delivery)))
            return
        except Exception as exc:  # a bug, or input nothing foresaw: never the end of the fold
            bound.exception("fold.failed", error=f"{type(exc).__name__}: {exc}", attempts=delivery.attempts)
            if delivery.attempts >= MAX_TRIES:
                await self._dead_letter(delivery, f"folding failed {delivery.attempts} times: {type(exc).__name__}")
            else:
                await self._settle(delivery.nak(self._backoff(delivery)))
            return
        if applied is None:
            await self._dead_letter(delivery, "no such workflow", event.workflow_id)
            return
        await self._settle_applied(event, delivery, applied, refused)

    async def _settle_applied(self, event: Event, delivery: Delivery, applied: Applied, refused: list[str]) -> None:
        """What follows a committed fold (or a refusal, or a deferral, decided under the lock): acknowledge it."""
        bound = log.bind(workflow_id=event.workflow_id, event=event.key, kind=event.kind.value)
        if refused:
            await self._dead_letter(delivery, f"refused: {refused[-1]}", event.workflow_id)
            return
        if applied.fold.defer:
            await self._settle(delivery.nak(DEFER_DELAY))
            return
        self._gaps.pop(event.key, None)
        self._observe(event, delivery, applied)
        state = applied.fold.state
        if self._office and applied.fold.changed and not applied.duplicate and state.status is Status.DEAD_LETTERED:
            await self._office.given_up(event.workflow_id, applied.tool, state.attempt, state.error)
        for given in applied.fold.resend:  # questions asked again (a redelivery): the same answers again
            try:
                await self._bus.publish_answer(InputAnswer(workflow_id=event.workflow_id, **given))
            except BusError as exc:
                bound.warning("fold.resend_failed", error=str(exc))
        if applied.fold.note:
            bound.info("fold.noted", note=applied.fold.note, duplicate=applied.duplicate)
        await self._settle(delivery.ack())

    def _observe(self, event: Event, delivery: Delivery, applied: Applied) -> None:
        """Tell the telemetry of a fold committed: its lag, and the workflow's end or retry it brought."""
        self._telemetry.event_folded(event.kind.value, fold_lag(delivery))
        if not applied.fold.changed or applied.duplicate:
            return
        if applied.fold.state.status in TERMINAL:
            self._telemetry.workflow_ended(applied.tool, applied.fold.state.status.value)
        elif event.kind is EventKind.RETRYING:
            self._telemetry.retried(applied.tool, "policy")

    async def _dead_letter(self, delivery: Delivery, reason: str, workflow_id: str | None = None) -> None:
        """Keep the message where an admin sees it, then terminate it (never delivered again). If it cannot be
        kept now (PostgreSQL away), it is put back and dead-lettered when it comes again."""
        letter = DeadLetter(
            source="event",
            subject=delivery.subject,
            reason=reason,
            head=delivery.data[:HEAD_BYTES],
            size=len(delivery.data),
            headers=delivery.headers,
            workflow_id=workflow_id,
            delivered=delivery.attempts,
        )
        try:
            letter_id = await self._store.dead_letter(letter)
        except StoreError as exc:
            log.warning("fold.dead_letter_failed", error=str(exc), reason=reason)
            await self._settle(delivery.nak(self._backoff(delivery)))
            return
        self.dead_lettered += 1
        self._telemetry.dead_lettered("event", dead_letter_kind("event", reason))
        log.error(
            "fold.dead_lettered",
            dead_letter=letter_id,
            reason=reason,
            subject=delivery.subject,
            size=len(delivery.data),
            workflow_id=workflow_id,
        )
        await self._settle(delivery.term())

    async def _settle(self, action: Awaitable[None]) -> None:
        """Ack, nak or term; when NATS cannot take it now, JetStream redelivers the event after its ack wait."""
        try:
            await action
        except Exception as exc:
            log.warning("fold.settle_failed", error=str(exc) or type(exc).__name__)
