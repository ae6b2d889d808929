"""The core's behaviour, one test body each, run twice: on the in-memory adapters of its ports (no servers, fast)
and on the real ones (PostgreSQL and NATS JetStream, the SDK's workers)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from mcp_gateway_worker.contract import Caller, Command, Event, EventKind, Subjects, encode

from mcp_gateway.app import open_gateway
from mcp_gateway.bus import InMemoryBus
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.dead_letters import DeadLetterOffice
from mcp_gateway.core.deadlines import DeadlineKeeper
from mcp_gateway.core.dispatch import Dispatcher
from mcp_gateway.core.folding import EventFolder
from mcp_gateway.core.ports import Bus, WorkflowStore
from mcp_gateway.core.presence import WorkerPresence
from mcp_gateway.core.service import OutcomeKind, Progress, ToolCallService
from mcp_gateway.core.states import Status
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.workflows import ADMIN, Workflows
from mcp_gateway.registry import Registry, load_registry
from mcp_gateway.store import InMemoryStore
from tests.conftest import ROOT, Env, running_workers

CALLER = Caller(subject="tester")


@dataclass
class Core:
    """What a test body uses: the service and the workflows, the store, and a way to publish a raw event."""

    service: ToolCallService
    workflows: Workflows
    store: WorkflowStore
    publish_event: Callable[[str, bytes], Any]
    subjects: Subjects


def memory_registry(tmp: Path) -> Registry:
    shutil.copytree(ROOT / "config" / "tools", tmp / "config")
    shutil.copytree(ROOT / "tests" / "tools", tmp / "testing")
    return load_registry(tmp)


async def steps_worker(command: Command, emit: Callable[[bytes, str], Any]) -> None:
    """The `steps` tool, in process: `count` progress events, then the count."""
    count = int(command.arguments["count"])
    wid, now = command.workflow_id, datetime.now(UTC)
    events = [
        Event(workflow_id=wid, seq=i, kind=EventKind.PROGRESS, at=now, progress=i + 1, total=count)
        for i in range(count)
    ]
    events.append(Event(workflow_id=wid, seq=count, kind=EventKind.COMPLETED, at=now, result={"count": count}))
    for event in events:
        await emit(encode(event), event.key)


@pytest.fixture(params=["memory", "real"])
async def core(request: pytest.FixtureRequest, tmp_path: Path, env: Env) -> AsyncGenerator[Core]:
    if request.param == "real":
        async with open_gateway(env.settings()) as gateway, running_workers(env):
            nc = await nats.connect(gateway.urls.nats)
            js = nc.jetstream()

            async def publish_real(subject: str, body: bytes) -> None:
                await js.publish(subject, body)

            try:
                yield Core(gateway.service, gateway.workflows, gateway.store, publish_real, gateway.bus.subjects)
            finally:
                await nc.close()
        return
    registry = memory_registry(tmp_path)
    subjects = Subjects("mem")
    async with AsyncExitStack() as stack:
        supervisor = await stack.enter_async_context(Supervisor())
        store = await stack.enter_async_context(InMemoryStore())
        bus = await stack.enter_async_context(InMemoryBus(subjects))
        bus.serve("testing.steps", steps_worker)
        waiters = Waiters()
        await store.subscribe_changes(waiters.on_message, supervisor)
        port: Bus = bus
        dispatcher = await stack.enter_async_context(Dispatcher(store, port, supervisor, relay_after=0.3))
        workflows = Workflows(store, port, waiters, dispatcher)
        service = ToolCallService(
            lambda: registry, store, dispatcher, waiters, subjects, workflows, WorkerPresence(port, subjects)
        )
        office = DeadLetterOffice(store, port)
        await stack.enter_async_context(EventFolder(store, port, lambda: registry, supervisor, subjects, office))
        await stack.enter_async_context(DeadlineKeeper(workflows, supervisor))
        yield Core(service, workflows, store, bus.publish_event, subjects)


async def test_a_call_runs_folds_its_progress_in_order_and_completes(core: Core) -> None:
    seen: list[float] = []

    async def progress(p: Progress) -> None:
        seen.append(p.progress)

    outcome = await core.service.call("steps", {"count": 3}, caller=CALLER, on_progress=progress)
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.result == {"count": 3}
    assert outcome.workflow_id is not None and seen == sorted(seen) and seen[-1] == 3
    kinds = await _kinds_once_marked(core, outcome.workflow_id)
    # The relay's mark is batched after the publish: it may land before or after the worker's events.
    assert kinds.count("dispatched") == 1
    told = [kind for kind in kinds if kind != "dispatched"]
    assert told == ["created", "progress", "progress", "progress", "completed"]


async def _kinds_once_marked(core: Core, workflow_id: str) -> list[str]:
    kinds: list[str] = []
    for _ in range(100):
        kinds = [e.kind for e in await core.store.events(workflow_id)]
        if "dispatched" in kinds:
            return kinds
        await asyncio.sleep(0.05)
    raise AssertionError(f"the outbox never marked workflow {workflow_id} dispatched: {kinds}")


async def test_the_same_idempotency_key_is_the_same_workflow(core: Core) -> None:
    first = await core.service.call("steps", {"count": 1}, caller=CALLER, idempotency_key="k")
    again = await core.service.call("steps", {"count": 1}, caller=CALLER, idempotency_key="k")
    clash = await core.service.call("steps", {"count": 2}, caller=CALLER, idempotency_key="k")
    assert first.workflow_id == again.workflow_id == clash.workflow_id
    assert again.kind is OutcomeKind.COMPLETED and clash.kind is OutcomeKind.IDEMPOTENCY_CONFLICT
    assert len(await core.store.list()) == 1


async def test_a_poisoned_event_is_dead_lettered_and_the_fold_goes_on(core: Core) -> None:
    await core.publish_event(core.subjects.event("diagnostics.echo", "nobody"), b"[" * 10_000 + b"]" * 10_000)
    outcome = await core.service.call("steps", {"count": 1}, caller=CALLER)
    assert outcome.kind is OutcomeKind.COMPLETED
    async with asyncio.timeout(10):
        while not await core.store.dead_letters():  # noqa: ASYNC110 - polling the store: no event to await
            await asyncio.sleep(0.02)
    (letter,) = await core.store.dead_letters()
    assert "nests deeper" in letter.reason and letter.size == 20_000


async def test_an_invalid_call_writes_nothing_and_a_cancel_ends_the_workflow(core: Core) -> None:
    invalid = await core.service.call("steps", {"count": "three"}, caller=CALLER)
    assert invalid.kind is OutcomeKind.INVALID_ARGUMENTS and await core.store.list() == []
    held = await core.service.call("guarded", {"note": "hold"}, caller=CALLER, wait=False)  # held for approval
    assert held.workflow_id is not None
    cancelled = await core.workflows.cancel(held.workflow_id, ADMIN, "cancelled by an admin")
    assert cancelled.status is Status.CANCELLED
    kinds = [e.kind for e in await core.store.events(held.workflow_id)]
    assert kinds == ["created", "cancelled"]  # the held command never went out
