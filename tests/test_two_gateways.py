"""Several gateway processes on one NATS and one PostgreSQL: the fold, the relay and the deadline reaper stay
correct with two (no work done twice, none left), and a call's progress reaches it whichever process folded."""

from __future__ import annotations

import asyncio

from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.service import OutcomeKind, Progress
from mcp_gateway.core.states import Status
from mcp_gateway.store import OutboxMessage
from tests import workers as test_workers
from tests.conftest import Env, running_workers

CALLER = Caller(subject="tester")


async def test_two_gateways_share_the_work_and_do_none_of_it_twice(env: Env) -> None:
    async with (
        open_gateway(env.settings()) as a,
        open_gateway(env.settings()) as b,
        running_workers(env),
    ):
        seen: dict[str, list[float]] = {}

        async def call(gateway: Gateway, i: int) -> str:
            steps: list[float] = []

            async def progress(p: Progress) -> None:
                steps.append(p.progress)

            outcome = await gateway.service.call("steps", {"count": 3}, caller=CALLER, on_progress=progress)
            assert outcome.kind is OutcomeKind.COMPLETED and outcome.workflow_id is not None, outcome
            seen[outcome.workflow_id] = steps
            return outcome.workflow_id

        async with asyncio.timeout(60):
            ids = await asyncio.gather(*(call(a if i % 2 else b, i) for i in range(40)))
        assert len(set(ids)) == 40
        for workflow_id in ids:
            assert test_workers.executions[workflow_id] == 1  # each command ran once
            history = await a.store.events(workflow_id)
            progress = [e for e in history if e.kind == "progress"]
            assert len(progress) == 3 and all(e.note is None for e in progress)  # each event folded once, in order
            assert seen[workflow_id] == sorted(seen[workflow_id])  # progress increased, whoever folded it
        assert await a.store.unpublished(0, 10) == []


async def test_two_relays_and_two_reapers_publish_and_end_each_workflow_once(env: Env) -> None:
    async with open_gateway(env.settings()) as a, open_gateway(env.settings()) as b:

        async def never(message: OutboxMessage) -> bool:  # both calls leave their command to the relays
            return False

        a.dispatcher.send = never  # type: ignore[method-assign]
        held = await a.service.call("steps", {"count": 1}, caller=CALLER, wait=False)
        short = await b.service.call("slow", {"seconds": 0}, caller=CALLER, wait=False)  # no worker: times out
        assert held.workflow_id is not None and short.workflow_id is not None
        del a.dispatcher.send  # a's relay uses the real send again
        async with running_workers(env):
            record = await a.workflows.wait(held.workflow_id, CALLER_ADMIN, 20)
        assert record.status is Status.COMPLETED and test_workers.executions[held.workflow_id] == 1
        kinds = [e.kind for e in await a.store.events(held.workflow_id)]
        assert kinds.count("dispatched") == 1 and kinds.count("completed") == 1


from mcp_gateway.core.workflows import ADMIN as CALLER_ADMIN  # noqa: E402
