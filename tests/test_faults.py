"""Faults: a gateway stopped between commit and publish, or between publish and result, loses nothing;
bad worker events are refused with a reason and break nothing."""

from __future__ import annotations

import asyncio

import nats
from mcp_gateway_worker.contract import Caller, Subjects
from structlog.testing import capture_logs

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import TERMINAL, Status
from mcp_gateway.core.workflows import Viewer
from mcp_gateway.store import OutboxMessage
from tests import workers as test_workers
from tests.conftest import Env, running_workers

CALLER = Caller(subject="tester")


async def reach(gateway: Gateway, workflow_id: str, wanted: Status, seconds: float = 15) -> Status:
    """Wait until the workflow is in `wanted` (or ended); watch first, then look, so no change slips between."""
    with gateway.waiters.watch(workflow_id) as watch:
        record = await gateway.store.get(workflow_id)
        assert record is not None
        if record.status is wanted or record.status in TERMINAL:
            return record.status
        async with asyncio.timeout(seconds):
            async for change, _ in watch.changes():
                if change.state.status is wanted or change.terminal:
                    return change.state.status
    raise AssertionError("the watch ended without reaching the status")


async def first_workflow_id(gateway: Gateway) -> str:
    async with asyncio.timeout(10):
        while not (records := await gateway.store.list(limit=1)):  # noqa: ASYNC110 - polling the database: no event to await
            await asyncio.sleep(0.01)
    return records[0].id


async def test_restart_between_commit_and_publish(env: Env) -> None:
    async with open_gateway(env.settings()) as first:
        stuck = asyncio.Event()

        async def die_before_publishing(message: OutboxMessage) -> bool:
            stuck.set()
            await asyncio.Event().wait()  # the process "dies" here: the command is committed, never published
            return False

        first.dispatcher.send = die_before_publishing  # type: ignore[method-assign]
        call = asyncio.create_task(first.service.call("steps", {"count": 2}, caller=CALLER))
        async with asyncio.timeout(10):
            await stuck.wait()
        first.service.stopping = True  # the process dies: its calls end, their workflows must not
        call.cancel()
        workflow_id = await first_workflow_id(first)
        record = await first.store.get(workflow_id)
        assert record is not None and record.status is Status.PENDING
        assert len(await first.store.unpublished(0, 10)) == 1

    async with open_gateway(env.settings()) as second:
        async with running_workers(env):  # the relay publishes the leftover; a worker runs it
            assert await reach(second, workflow_id, Status.COMPLETED) is Status.COMPLETED
        assert test_workers.executions[workflow_id] == 1
        assert await second.store.unpublished(0, 10) == []
        kinds = [e.kind for e in await second.store.events(workflow_id)]
        assert kinds.count("created") == 1 and kinds.count("completed") == 1 and kinds.count("dispatched") == 1


async def test_restart_between_publish_and_result(env: Env) -> None:
    gate = test_workers.gates.setdefault(env.prefix, asyncio.Event())
    async with running_workers(env):
        async with open_gateway(env.settings()) as first:
            call = asyncio.create_task(first.service.call("slow", {"seconds": 0, "gate": env.prefix}, caller=CALLER))
            workflow_id = await first_workflow_id(first)
            assert await reach(first, workflow_id, Status.RUNNING) is Status.RUNNING
            outcome = await call  # the call's wait budget (0.5 s) runs out: the work continues
            assert outcome.kind is OutcomeKind.STILL_RUNNING
        # No gateway runs now; the worker finishes and its result waits in JetStream.
        gate.set()
        async with open_gateway(env.settings()) as second:
            assert await reach(second, workflow_id, Status.COMPLETED) is Status.COMPLETED
            record = await second.store.get(workflow_id)
            assert record is not None and record.state.result == {"slept": 0}
            kinds = [e.kind for e in await second.store.events(workflow_id)]
    assert test_workers.executions[workflow_id] == 1
    assert kinds.count("completed") == 1


async def test_bad_worker_events_are_refused_and_nothing_breaks(gateway: Gateway, env: Env) -> None:
    subjects = Subjects(env.prefix)
    nc = await nats.connect(env.nats_url)
    js = nc.jetstream()
    bad: list[tuple[str, bytes]] = [
        ("abc", b"not json at all"),
        ("abc", b'{"workflow_id": "abc", "seq": 0, "kind": "exploded", "at": "2026-01-01T00:00:00Z"}'),
        ("abc", b'{"workflow_id": "abc", "seq": 1, "kind": "completed", "at": "2026-01-01T00:00:00Z"}'),
        (
            "nosuchworkflow",
            b'{"workflow_id": "nosuchworkflow", "seq": 0, "kind": "started", "at": "2026-01-01T00:00:00Z"}',
        ),
        ("abc", b"[" * 100_000 + b"]" * 100_000),  # RecursionError in the decoder, once
        ("other", b'{"workflow_id": "abc", "seq": 0, "kind": "started", "at": "2026-01-01T00:00:00Z"}'),
    ]
    with capture_logs() as logs:
        for workflow_id, body in bad:
            await js.publish(subjects.event("diagnostics.echo", workflow_id), body)
        outcome = await gateway.service.call("echo", {"text": "still fine"}, caller=CALLER)
        async with asyncio.timeout(10):
            while len([e for e in logs if e["event"] == "fold.dead_lettered"]) < len(bad):  # noqa: ASYNC110 - polling the database: no event to await
                await asyncio.sleep(0.01)
    await nc.close()
    assert outcome.kind is OutcomeKind.COMPLETED
    reasons = [str(e["reason"]) for e in logs if e["event"] == "fold.dead_lettered"]
    assert any("body is not JSON" in r for r in reasons)
    assert any("kind: Input should be" in r for r in reasons)
    assert any("needs 'result'" in r for r in reasons)
    assert any("no such workflow" in r for r in reasons)
    assert any("nests deeper than 64 levels" in r for r in reasons)
    assert any(f"came on {subjects.event('diagnostics.echo', 'other')}" in r for r in reasons)
    assert [r.id for r in await gateway.store.list()] == [outcome.workflow_id]
    letters = await gateway.store.dead_letters()
    assert len(letters) == len(bad) and all(letter.source == "event" and letter.reason for letter in letters)
    deepest = next(letter for letter in letters if "nests deeper" in letter.reason)
    assert deepest.size == 200_000 and deepest.head == b"[" * 1024  # the first bytes, for an admin to see
    assert all(v == "ok" for v in (await gateway.ready()).values())  # the fold is alive and well


async def test_an_answer_given_while_no_worker_runs_reaches_the_rerun(env: Env) -> None:
    """A worker stops while its handler waits for an answer (the command goes back to JetStream); the user answers
    meanwhile (nobody hears it); the redelivered command asks again, as a new attempt, and is re-sent the answer."""
    async with open_gateway(env.settings()) as gateway:
        async with running_workers(env):
            outcome = await gateway.service.call("quiz", {}, caller=CALLER)
            assert outcome.workflow_id is not None
            workflow_id = outcome.workflow_id
            assert await reach(gateway, workflow_id, Status.INPUT_REQUIRED) is Status.INPUT_REQUIRED
        answered = await gateway.workflows.answer(
            workflow_id, Viewer(CALLER.subject), "q1", "accept", {"colour": "red"}
        )
        assert answered.status is Status.RUNNING  # recorded; no worker listens now
        async with running_workers(env):
            assert await reach(gateway, workflow_id, Status.COMPLETED) is Status.COMPLETED
        record = await gateway.store.get(workflow_id)
        kinds = [e.kind for e in await gateway.store.events(workflow_id)]
    assert record is not None and record.state.result == {"colour": "red"} and record.state.attempt == 2
    assert test_workers.executions[workflow_id] == 2  # asked twice, answered once
    assert kinds.count("input_required") == 2 and kinds.count("input_answered") == 1
