"""Nothing accepted is lost, nothing hostile stops the gateway: an oversized call, a poisoned outbox entry, a gap
that outlasts redeliveries, and a bus that goes away under a worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from mcp_gateway_worker import ToolContext, Worker
from mcp_gateway_worker.contract import Caller, Event, EventKind, Subjects, encode
from nats.errors import TimeoutError as NatsTimeoutError
from structlog.testing import capture_logs

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.folding import EventFolder
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status, WorkflowState
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.errors import StoreError
from mcp_gateway.registry import Registry
from mcp_gateway.server._results import outcome_to_result
from mcp_gateway.store import Applied, OutboxMessage
from tests import workers as test_workers
from tests.conftest import Env, error_detail, running_workers
from tests.test_faults import reach

CALLER = Caller(subject="tester")


async def test_a_call_too_large_for_the_bus_is_refused_before_anything_is_written(gateway: Gateway) -> None:
    limit = gateway.bus.max_payload
    outcome = await gateway.service.call("sink", {"payload": "x" * (limit + 10)}, caller=CALLER)  # < 4 MiB
    assert outcome.kind is OutcomeKind.TOO_LARGE
    result = outcome_to_result(outcome)
    assert error_detail(result)["limit"] == limit and str(limit) in str(result.content[0])
    assert await gateway.store.list() == [] and await gateway.store.unpublished(0, 10) == []
    after = await gateway.service.call("echo", {"text": "fine"}, caller=CALLER)  # the relay and fold live on
    assert after.kind is OutcomeKind.COMPLETED
    assert all(v == "ok" for v in (await gateway.ready()).values())


async def test_arguments_nested_deeper_than_the_contract_takes_are_invalid(gateway: Gateway) -> None:
    nested: dict[str, Any] = {}
    for _ in range(70):
        nested = {"a": nested}
    outcome = await gateway.service.call("echo", {"text": "x", "deep": nested}, caller=CALLER)
    assert outcome.kind is OutcomeKind.INVALID_ARGUMENTS  # (here also an unknown key: refused either way)
    assert await gateway.store.list() == []


async def test_one_entry_that_cannot_be_published_never_holds_back_the_relay(env: Env) -> None:
    async with open_gateway(env.settings()) as gateway:
        real = gateway.bus.publish_command
        poisoned: set[str] = set()

        async def publish(message: OutboxMessage) -> None:
            if message.workflow_id in poisoned:
                raise RuntimeError("a publish error nobody foresaw")
            await real(message)

        async def hold(message: OutboxMessage) -> bool:  # the call's own publish: leave it all to the relay
            return False

        gateway.bus.publish_command = publish  # type: ignore[method-assign]
        send = gateway.dispatcher.send
        gateway.dispatcher.send = hold  # type: ignore[method-assign]
        bad = await gateway.service.call("steps", {"count": 1}, caller=CALLER, wait=False)
        good = await gateway.service.call("steps", {"count": 1}, caller=CALLER, wait=False)
        assert bad.workflow_id is not None and good.workflow_id is not None
        poisoned.add(bad.workflow_id)
        gateway.dispatcher.send = send  # type: ignore[method-assign]
        async with running_workers(env):
            assert await reach(gateway, good.workflow_id, Status.COMPLETED) is Status.COMPLETED
        assert gateway.supervisor.health()["dispatch.relay"].restarts == 0
        # The good entry's publish is marked in a batch shortly after; the bad one stays for the relay.
        async with asyncio.timeout(10):
            while (left := [m.workflow_id for m in await gateway.store.unpublished(0, 10)]) != [bad.workflow_id]:
                assert bad.workflow_id in left, left
                await asyncio.sleep(0.05)


@dataclass
class FakeDelivery:
    data: bytes
    attempts: int
    subject: str
    headers: dict[str, str] = field(default_factory=dict[str, str])
    settled: list[str] = field(default_factory=list[str])

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")

    async def term(self) -> None:
        self.settled.append("term")


class OneWorkflowStore:
    """Just enough of a store for the folder: one workflow, whose state the decisions change."""

    def __init__(self) -> None:
        self.state = WorkflowState(Status.RUNNING, attempt=1, last_seq=0)

    async def apply(self, event: Event, decide: Any) -> Applied:
        decision = decide("steps", self.state)
        if not decision.defer:
            self.state = decision.state
        return Applied(event.workflow_id, "steps", decision, duplicate=False)


async def test_a_gap_waits_by_time_however_often_the_event_was_redelivered() -> None:
    """After a PostgreSQL outage, an event may come back with a high delivery count (each failed store put it
    back); it must still wait for its predecessors, for a bounded time, not a bounded count."""
    subjects = Subjects("gap")
    store = OneWorkflowStore()
    async with Supervisor() as supervisor:
        folder = EventFolder(store, None, Registry, supervisor, subjects, gap_wait=0.3)  # type: ignore[arg-type]
        ahead = Event(workflow_id="w1", attempt=1, seq=3, kind=EventKind.COMPLETED, at=datetime.now(UTC), result={})
        delivery = FakeDelivery(encode(ahead), attempts=40, subject=subjects.event("gap.tool", "w1"))
        await folder.fold_batch([delivery])  # type: ignore[list-item]
        assert delivery.settled == ["nak"] and store.state.status is Status.RUNNING  # deferred, not folded
        await asyncio.sleep(0.35)
        await folder.fold_batch([delivery])  # type: ignore[list-item]
        assert delivery.settled == ["nak", "ack"] and store.state.status is Status.COMPLETED  # then folded


flaky = Worker("flaky", publish_patience=0.5)


@flaky.tool("steps", subject="testing.steps")
async def steps(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    for i in range(1, args["count"] + 1):
        await ctx.progress(i, args["count"], f"step {i}")
    return {"count": args["count"]}


async def test_a_bus_outage_under_a_worker_is_no_failure(env: Env) -> None:
    """Publishes that time out (NATS restarting) are retried; when the bus stays away past the worker's patience,
    the command goes back for redelivery and runs again later: the workflow completes, it never fails."""
    failures = {"left": 3}
    async with open_gateway(env.settings()) as gateway, flaky.with_prefix(env.prefix).connect(env.nats_url) as worker:
        assert worker._js is not None  # pyright: ignore[reportPrivateUsage]
        real = worker._js.publish  # pyright: ignore[reportPrivateUsage]

        async def publish(subject: str, payload: bytes, **kw: Any) -> Any:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise NatsTimeoutError
            return await real(subject, payload, **kw)

        worker._js.publish = publish  # type: ignore[method-assign] # pyright: ignore[reportPrivateUsage]
        retried = await gateway.service.call("steps", {"count": 3}, caller=CALLER)
        assert retried.kind is OutcomeKind.COMPLETED and failures["left"] == 0

        failures["left"] = 10**6  # away for longer than the worker waits: handed back, not failed
        outcome = await gateway.service.call("steps", {"count": 2}, caller=CALLER, wait=False)
        assert outcome.workflow_id is not None
        await asyncio.sleep(1.0)
        record = await gateway.store.get(outcome.workflow_id)
        assert record is not None and record.status not in (Status.FAILED, Status.COMPLETED)
        failures["left"] = 0  # NATS is back: the redelivered command runs
        assert await reach(gateway, outcome.workflow_id, Status.COMPLETED, seconds=20) is Status.COMPLETED


async def test_a_call_whose_wait_ends_while_the_store_is_away_still_gets_its_workflow_id(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, env: Env
) -> None:
    async def away(workflow_id: str) -> None:
        raise StoreError("PostgreSQL failed: ConnectionRefusedError")

    test_workers.gates.setdefault(env.prefix, asyncio.Event())
    monkeypatch.setattr(gateway.store, "get", away)
    outcome = await gateway.service.call("slow", {"seconds": 0, "gate": env.prefix}, caller=CALLER)
    test_workers.gates[env.prefix].set()
    assert outcome.kind is OutcomeKind.STILL_RUNNING and outcome.workflow_id is not None
    assert outcome.workflow_id in str(outcome_to_result(outcome).content[0])


async def test_a_message_the_event_store_cannot_keep_still_goes_out(env: Env) -> None:
    """2025-11-25: the SDK stores each message before it sends it; with PostgreSQL away it must still send it."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from mcp_gateway.store import PostgresEventStore
    from mcp_gateway.store._event_store import UNSTORED

    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # nothing listens there
    try:
        store = PostgresEventStore(engine)
        with capture_logs() as logs:
            event_id = await store.store_event("stream-1", None)
        assert event_id == UNSTORED
        assert any(e["event"] == "event_store.unstored" for e in logs)
    finally:
        await engine.dispose()


async def test_a_call_the_store_cannot_record_says_so_and_writes_nothing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*_: object) -> int:
        raise StoreError("PostgreSQL failed: ConnectionRefusedError")

    monkeypatch.setattr(gateway.store, "create", away)
    outcome = await gateway.service.call("echo", {"text": "x"}, caller=CALLER)
    assert outcome.kind is OutcomeKind.UNAVAILABLE and outcome.workflow_id is None
    result = outcome_to_result(outcome)
    assert error_detail(result)["error"] == "unavailable" and "Nothing was recorded" in str(result.content[0])


slow_runs: dict[str, int] = {}
sluggish = Worker("sluggish", ack_wait=0.5)


@sluggish.tool("steps", subject="testing.steps")
async def slow_steps(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    slow_runs[ctx.workflow_id] = slow_runs.get(ctx.workflow_id, 0) + 1
    await asyncio.sleep(1.6)  # three ack waits: JetStream delivers it again meanwhile
    return {"count": args["count"]}


async def test_a_command_delivered_again_while_its_handler_runs_runs_once(env: Env) -> None:
    """After a NATS restart (its working-acks lost), JetStream delivers a running command again: the worker that
    runs it keeps one handler and settles every delivery when it ends."""
    worker = sluggish.with_prefix(env.prefix)

    async def no_working_acks(deliveries: object) -> None:
        await asyncio.Event().wait()

    worker._heartbeat = no_working_acks  # type: ignore[method-assign] # pyright: ignore[reportPrivateUsage]
    async with open_gateway(env.settings()) as gateway, worker.connect(env.nats_url):
        outcome = await gateway.service.call("steps", {"count": 1}, caller=CALLER)
        assert outcome.kind is OutcomeKind.COMPLETED and outcome.workflow_id is not None
        assert slow_runs[outcome.workflow_id] == 1
        notes = [e.note for e in await gateway.store.events(outcome.workflow_id) if e.note]
        assert notes == []
