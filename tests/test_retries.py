"""Retries with backoff, dead letters and redrive: a tool's retry policy runs failed attempts again (JetStream's
delayed redelivery, every attempt in the history); when they run out, or JetStream stops redelivering a command
(max_deliver), the workflow is dead-lettered, kept for an admin and announced; an admin redrives it."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx2
import nats
import pytest
from mcp_gateway_worker.contract import Caller, Subjects
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind, RetryRefused
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN
from tests.conftest import Env, admin_token, http_server
from tests.test_faults import reach

CALLER = Caller(subject="tester")


async def test_a_crash_is_retried_with_backoff_and_every_attempt_is_in_the_history(gateway: Gateway) -> None:
    key = uuid.uuid4().hex
    outcome = await gateway.service.call("shaky", {"crashes": 2, "key": key}, caller=CALLER)
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.result == {"attempts": 3}
    assert outcome.workflow_id is not None
    history = await gateway.store.events(outcome.workflow_id)
    retrying = [e for e in history if e.kind == "retrying"]
    assert len(retrying) == 2 and [e.data["attempt"] for e in retrying] == [1, 2]
    assert retrying[0].data["error"]["code"] == "worker_error" and retrying[0].data["retry_in"] == 0.1
    assert retrying[1].data["retry_in"] == 0.2  # the backoff doubles


async def test_when_the_attempts_run_out_the_workflow_is_dead_lettered_then_redriven(
    gateway: Gateway, env: Env
) -> None:
    key = uuid.uuid4().hex
    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        subjects = Subjects(env.prefix)
        dlq = await js.pull_subscribe(subjects.all_dead_letters, stream=subjects.dead_letter_stream)
        outcome = await gateway.service.call("shaky", {"crashes": 5, "key": key}, caller=CALLER)
        assert outcome.kind is OutcomeKind.FAILED and outcome.status is Status.DEAD_LETTERED
        assert outcome.workflow_id is not None and outcome.error is not None
        assert outcome.error["code"] == "worker_error" and outcome.error["retryable"] is True
        (announced,) = await dlq.fetch(1, timeout=5)
        assert json.loads(announced.data)["workflow_id"] == outcome.workflow_id
    finally:
        await nc.close()
    (letter,) = [d for d in await gateway.store.dead_letters() if d.workflow_id == outcome.workflow_id]
    assert letter.source == "command" and "worker_error" in letter.reason

    # The admin redrives it with arguments that let it succeed (over the admin API), keeping its history.
    async with http_server(gateway) as url, httpx2.AsyncClient() as http:
        base = url.removesuffix("/mcp")
        headers = {"Authorization": f"Bearer {await admin_token(gateway)}"}
        listed = await http.get(f"{base}/admin/dead-letters", headers=headers)
        assert listed.status_code == 200 and any(
            d["workflow_id"] == outcome.workflow_id for d in listed.json()["dead_letters"]
        )
        redriven = await http.post(
            f"{base}/admin/workflows/{outcome.workflow_id}/retry",
            headers=headers,
            json={"arguments": {"crashes": 0, "key": key + "-fixed"}},
        )
        assert redriven.status_code == 200, redriven.text
        assert (await http.post(f"{base}/admin/workflows/{outcome.workflow_id}/retry")).status_code == 401
    assert await reach(gateway, outcome.workflow_id, Status.COMPLETED) is Status.COMPLETED
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.state.result == {"attempts": 1} and record.state.attempt > 3
    kinds = [e.kind for e in await gateway.store.events(outcome.workflow_id) if e.kind != "dispatched"]
    assert kinds.count("retrying") == 2 and "retried" in kinds and kinds[-1] == "completed"
    with pytest.raises(RetryRefused, match="completed"):  # a completed workflow is not run again
        await gateway.service.retry(outcome.workflow_id, ADMIN)


async def test_a_command_jetstream_stops_redelivering_dead_letters_its_workflow(gateway: Gateway, env: Env) -> None:
    """A worker that dies on a command every time (here: a consumer that never acknowledges): after max_deliver,
    JetStream's MAX_DELIVERIES advisory ends the workflow dead-lettered instead of leaving it running."""
    subjects = Subjects(env.prefix)
    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            subjects.command("testing.abandoned"),
            durable="mcpgw-worker-testing_abandoned",
            stream=subjects.command_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=0.5, max_deliver=2),
        )
        outcome = await gateway.service.call("abandoned", {}, caller=CALLER)
        assert outcome.workflow_id is not None
        async with asyncio.timeout(15):
            for _ in range(2):  # delivered twice, never acknowledged
                (msg,) = await sub.fetch(1, timeout=5)
                assert msg.headers is not None and msg.headers["Mcpgw-Workflow-Id"] == outcome.workflow_id
            with pytest.raises(NatsTimeoutError):  # the worker asks again: JetStream gives up on it
                await sub.fetch(1, timeout=1.5)
        assert await reach(gateway, outcome.workflow_id, Status.DEAD_LETTERED) is Status.DEAD_LETTERED
    finally:
        await nc.close()
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.state.error is not None and record.state.error["code"] == "max_deliveries"
    assert any(d.workflow_id == outcome.workflow_id for d in await gateway.store.dead_letters())
