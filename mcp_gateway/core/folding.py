"""The folder: pulls worker events from the bus, folds each into its workflow in the store, announces the change.

Events are acknowledged only after their fold is committed. A bad event (not the contract's shape) is logged
with what was wrong and terminated, never retried; an event for an unknown workflow likewise. A store failure
leaves the event unacknowledged, to be redelivered. Events of one workflow are folded in order; different
workflows are folded concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

import structlog
from mcp_gateway_worker.contract import ContractError, Event, InputAnswer, decode_event

from mcp_gateway.bus import Bus, Delivery
from mcp_gateway.core._background import cancel_and_wait
from mcp_gateway.core.states import ContentCheck, Fold, WorkflowState, fold
from mcp_gateway.errors import BusError, StoreError
from mcp_gateway.registry import Registry
from mcp_gateway.store import WorkflowStore

__all__ = ["EventFolder"]

log = structlog.get_logger(__name__)

MAX_DEFERRALS = 5
"""An event that skips ahead of its predecessors is put back at most this many times, then folded anyway."""
DEFER_DELAY = 0.02
FETCH_WAIT = 0.5
"""Seconds one fetch waits for events; also the longest a stop waits for a fetch under way."""


class EventFolder:
    def __init__(
        self,
        store: WorkflowStore,
        bus: Bus,
        registry: Callable[[], Registry],
        *,
        batch: int = 128,
        retry_delay: float = 1.0,
        grace: float = 5.0,
        check_content: ContentCheck | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._registry = registry
        self._batch = batch
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._grace = grace
        self._check_content = check_content

    async def __aenter__(self) -> EventFolder:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop taking events; fold what was already taken (within `grace` seconds), so that nothing waits for
        its ack deadline in another process."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._grace)
        except TimeoutError:
            log.warning("fold.stopped_mid_batch", grace=self._grace)
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                deliveries = await self._bus.fetch_events(self._batch, max_wait=FETCH_WAIT)
            except Exception as exc:  # a broken connection: NATS reconnects, we try again
                log.warning("fold.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(self._retry_delay)
                continue
            if deliveries:
                await self.fold_batch(deliveries)

    async def fold_batch(self, deliveries: list[Delivery]) -> None:
        by_workflow: dict[str, list[tuple[Event, Delivery]]] = {}
        for delivery in deliveries:
            try:
                event = decode_event(delivery.data)
            except ContractError as exc:
                log.error("fold.bad_event", error=str(exc), headers=delivery.headers, size=len(delivery.data))
                await delivery.term()
                continue
            by_workflow.setdefault(event.workflow_id, []).append((event, delivery))
        await asyncio.gather(*(self._fold_sequence(items) for items in by_workflow.values()))

    async def _fold_sequence(self, items: list[tuple[Event, Delivery]]) -> None:
        for event, delivery in items:
            await self._fold_one(event, delivery)

    def _decide(self, event: Event, may_defer: bool) -> Callable[[str, WorkflowState], Fold]:
        def decide(tool_name: str, state: WorkflowState) -> Fold:
            tool = self._registry().get(tool_name)
            check = tool.output.violations if tool is not None and tool.output is not None else None
            return fold(state, event, check, may_defer=may_defer, check_content=self._check_content)

        return decide

    async def _fold_one(self, event: Event, delivery: Delivery) -> None:
        bound = log.bind(workflow_id=event.workflow_id, event=event.key, kind=event.kind.value)
        try:
            applied = await self._store.apply(event, self._decide(event, delivery.attempts <= MAX_DEFERRALS))
        except StoreError as exc:
            bound.warning("fold.store_failed", error=str(exc))
            await delivery.nak(self._retry_delay)
            return
        if applied is None:
            bound.error("fold.unknown_workflow")
            await delivery.term()
            return
        if applied.fold.defer:
            await delivery.nak(DEFER_DELAY)
            return
        for given in applied.fold.resend:  # questions asked again (a redelivery): the same answers again
            try:
                await self._bus.publish_answer(InputAnswer(workflow_id=event.workflow_id, **given))
            except BusError as exc:
                bound.warning("fold.resend_failed", error=str(exc))
        if applied.fold.note:
            bound.info("fold.noted", note=applied.fold.note, duplicate=applied.duplicate)
        await delivery.ack()
