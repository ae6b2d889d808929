"""Client-visible idempotency: the same caller, tool and key within the window are the same workflow (its result,
or the running call joined); the same key with other arguments is refused; a client's retry never runs twice."""

from __future__ import annotations

import asyncio

import pytest
from mcp.shared.exceptions import MCPError
from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.server._results import outcome_to_result
from tests import workers as test_workers
from tests.conftest import Connect, Env, error_detail

ALICE, BOB = Caller(subject="alice"), Caller(subject="bob")


async def test_a_retry_with_the_same_key_is_the_same_workflow_and_runs_once(gateway: Gateway) -> None:
    first = await gateway.service.call("steps", {"count": 2}, caller=ALICE, idempotency_key="order-42")
    again = await gateway.service.call("steps", {"count": 2}, caller=ALICE, idempotency_key="order-42")
    assert first.kind is again.kind is OutcomeKind.COMPLETED
    assert first.workflow_id == again.workflow_id and again.result == {"count": 2}
    assert first.workflow_id is not None and test_workers.executions[first.workflow_id] == 1
    other_caller = await gateway.service.call("steps", {"count": 2}, caller=BOB, idempotency_key="order-42")
    assert other_caller.workflow_id != first.workflow_id  # keys are the caller's own
    assert len(await gateway.store.list()) == 2


async def test_the_same_key_with_other_arguments_is_refused(gateway: Gateway) -> None:
    first = await gateway.service.call("steps", {"count": 1}, caller=ALICE, idempotency_key="k1")
    clash = await gateway.service.call("steps", {"count": 3}, caller=ALICE, idempotency_key="k1")
    assert clash.kind is OutcomeKind.IDEMPOTENCY_CONFLICT and clash.workflow_id == first.workflow_id
    result = outcome_to_result(clash)
    assert error_detail(result)["error"] == "idempotency_conflict" and "other arguments" in str(result.content[0])
    assert len(await gateway.store.list()) == 1


async def test_a_retry_while_the_first_call_still_runs_joins_it(gateway: Gateway, env: Env) -> None:
    gate = test_workers.gates.setdefault(env.prefix, asyncio.Event())
    args = {"count": 2, "gate": env.prefix}
    first = asyncio.create_task(gateway.service.call("steps", args, caller=ALICE, idempotency_key="slow-1"))
    second = asyncio.create_task(gateway.service.call("steps", args, caller=ALICE, idempotency_key="slow-1"))
    await asyncio.sleep(0.3)
    gate.set()
    async with asyncio.timeout(20):
        a, b = await asyncio.gather(first, second)
    assert a.kind is b.kind is OutcomeKind.COMPLETED and a.workflow_id == b.workflow_id
    assert a.workflow_id is not None and test_workers.executions[a.workflow_id] == 1


async def test_a_key_older_than_the_window_names_a_new_workflow(gateway: Gateway) -> None:
    gateway.service.idempotency_window = 0.2
    first = await gateway.service.call("steps", {"count": 1}, caller=ALICE, idempotency_key="k")
    await asyncio.sleep(0.3)
    later = await gateway.service.call("steps", {"count": 1}, caller=ALICE, idempotency_key="k")
    assert later.kind is OutcomeKind.COMPLETED and later.workflow_id != first.workflow_id


async def test_over_mcp_the_key_travels_in_meta_and_a_bad_one_is_refused(connect: Connect, gateway: Gateway) -> None:
    meta = {"io.mcp-gateway/idempotencyKey": "mcp-1"}
    async with connect() as client:
        first = await client.call_tool("echo", {"text": "once"}, meta=meta)  # type: ignore[arg-type]
        again = await client.call_tool("echo", {"text": "once"}, meta=meta)  # type: ignore[arg-type]
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": "x"}, meta={"io.mcp-gateway/idempotencyKey": "has space"})  # type: ignore[arg-type]
    assert first.structured_content == again.structured_content
    assert refused.value.error.code == -32602 and "idempotency key" in refused.value.error.message
    assert len(await gateway.store.list()) == 1
