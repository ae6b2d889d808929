"""The tool-call service end to end (real NATS, PostgreSQL, workers), without an MCP transport."""

from __future__ import annotations

from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind, Progress
from mcp_gateway.core.states import Status

CALLER = Caller(subject="tester", request_id="1")


async def test_echo_completes_and_is_recorded(gateway: Gateway) -> None:
    outcome = await gateway.service.call("echo", {"text": "hello"}, caller=CALLER)
    assert outcome.kind is OutcomeKind.COMPLETED, outcome
    assert outcome.result == {"text": "hello", "workflow_id": outcome.workflow_id}
    assert outcome.workflow_id is not None
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None
    assert record.status is Status.COMPLETED
    assert record.caller == "tester"
    assert record.arguments == {"text": "hello"}
    kinds = [e.kind for e in await gateway.store.events(outcome.workflow_id)]
    assert kinds[0] == "created"
    assert kinds.count("completed") == 1
    assert "started" not in kinds  # a quick handler reports only its result


async def test_progress_arrives_in_order(gateway: Gateway) -> None:
    seen: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        seen.append(p)

    outcome = await gateway.service.call("steps", {"count": 5}, caller=CALLER, on_progress=on_progress)
    assert outcome.kind is OutcomeKind.COMPLETED
    values = [p.progress for p in seen]
    assert values == sorted(values)
    assert values and values[-1] == 5
    assert all(p.total == 5 for p in seen)


async def test_invalid_arguments_write_nothing(gateway: Gateway) -> None:
    outcome = await gateway.service.call("lookup_order", {"order_id": "nope", "extra": 1}, caller=CALLER)
    assert outcome.kind is OutcomeKind.INVALID_ARGUMENTS
    paths = sorted(v.path for v in outcome.violations)
    assert paths == ["", "/order_id"]
    assert await gateway.store.list() == []


async def test_worker_failure_and_bad_output(gateway: Gateway) -> None:
    failed = await gateway.service.call("explode", {}, caller=CALLER)
    assert failed.kind is OutcomeKind.FAILED
    assert failed.error is not None and failed.error["code"] == "out_of_stock"
    crashed = await gateway.service.call("explode", {"crash": True}, caller=CALLER)
    assert crashed.error is not None and crashed.error["code"] == "worker_error"
    assert "crashed" in crashed.error["message"]
    bad = await gateway.service.call("bad_output", {}, caller=CALLER)
    assert bad.kind is OutcomeKind.FAILED
    assert bad.error is not None and bad.error["code"] == "invalid_output"
    assert any("/answer" in v for v in bad.error["details"]["violations"])


async def test_timeout_reports_still_running(gateway: Gateway) -> None:
    outcome = await gateway.service.call("slow", {"seconds": 1.5}, caller=CALLER)
    assert outcome.kind is OutcomeKind.STILL_RUNNING
    assert outcome.workflow_id is not None
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.status in (Status.DISPATCHED, Status.RUNNING)
