"""A tool no worker listens for says so: at once in the call's result (the workflow is recorded and runs when a
worker appears), in the gateway's start-up log, and in `check --live`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from mcp_gateway_worker import ToolContext, Worker
from mcp_gateway_worker.contract import Caller, subject_matches

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN
from mcp_gateway.server._results import outcome_to_result
from tests.conftest import ROOT, Connect, Env, error_detail

CALLER = Caller(subject="tester")

late = Worker("late")


@late.tool("nobody_home", subject="testing.nobody_home")
async def nobody_home(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"text": args["text"]}


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.b.c", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a", True),
        ("a.b.>", "a.b", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


async def test_callers_that_find_the_view_stale_together_ask_the_bus_once() -> None:
    """Under load every call finds the view expired at the same moment: one JetStream question serves them all,
    a failed one fails none of them (the tool is assumed served), and the next expiry asks again."""
    from mcp_gateway_worker.contract import Subjects

    from mcp_gateway.core.presence import WorkerPresence
    from mcp_gateway.errors import BusError
    from mcp_gateway.registry import load_registry
    from tests.conftest import ROOT

    class Bus:
        reconnected_for = 3600.0
        asked = 0
        fail = False

        async def listened_subjects(self) -> list[str]:
            self.asked += 1
            await asyncio.sleep(0.05)
            if self.fail:
                raise BusError("NATS is away")
            return ["mcpgw.cmd.examples.>"]

    bus = Bus()
    presence = WorkerPresence(bus, Subjects("mcpgw"), ttl=0.2)  # pyright: ignore[reportArgumentType]
    registry = load_registry(ROOT / "config" / "tools")
    tool = next(iter(registry.tools.values()))
    answers = await asyncio.gather(*(presence.served(tool) for _ in range(50)))
    assert bus.asked == 1 and len(set(answers)) == 1
    bus.fail = True
    await asyncio.sleep(0.25)
    assert await asyncio.gather(*(presence.served(tool) for _ in range(20))) == [True] * 20
    assert bus.asked == 2


async def test_a_call_to_a_tool_nobody_serves_says_so_at_once_and_runs_when_a_worker_comes(
    gateway: Gateway, env: Env
) -> None:
    started = time.monotonic()
    outcome = await gateway.service.call("nobody_home", {"text": "hello"}, caller=CALLER)
    assert time.monotonic() - started < 5  # not the tool's 20 s timeout
    assert outcome.kind is OutcomeKind.NO_WORKER and outcome.workflow_id is not None
    assert outcome.unserved == f"{env.prefix}.cmd.testing.nobody_home"
    result = outcome_to_result(outcome)
    assert result.structured_content is None
    assert error_detail(result)["error"] == "no_worker"
    text = str(result.content[0])
    assert "No worker is listening" in text and outcome.workflow_id in text and "do not call again" in text

    record = await gateway.workflows.get(outcome.workflow_id, ADMIN)
    assert record.status in (Status.PENDING, Status.DISPATCHED)  # recorded, command sent, waiting for a worker

    async with late.with_prefix(env.prefix).connect(env.nats_url):
        async with asyncio.timeout(15):
            record = await gateway.workflows.wait(outcome.workflow_id, ADMIN, 10)
            while record.status is not Status.COMPLETED:
                record = await gateway.workflows.wait(outcome.workflow_id, ADMIN, 1)
        assert record.state.result == {"text": "hello"}
        # With the worker there, calls go through as usual.
        again = await gateway.service.call("nobody_home", {"text": "again"}, caller=CALLER)
        assert again.kind is OutcomeKind.COMPLETED and again.result == {"text": "again"}


async def test_an_async_tool_nobody_serves_hands_back_a_handle_that_says_so(gateway: Gateway) -> None:
    outcome = await gateway.service.call("nobody_home_later", {"text": "x"}, caller=CALLER)
    assert outcome.kind is OutcomeKind.HANDED_BACK and outcome.unserved is not None
    result = outcome_to_result(outcome)
    assert not result.is_error and "No worker listens on" in str(result.content[0])


async def test_over_mcp_the_no_worker_result_is_an_error_every_client_accepts(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("nobody_home", {"text": "hi"})
    assert result.is_error and error_detail(result)["error"] == "no_worker"


async def test_the_gateway_and_check_live_name_every_tool_without_a_worker(gateway: Gateway, env: Env) -> None:
    unserved = await gateway.report_unserved()
    assert "nobody_home" in unserved and "nobody_home_later" in unserved
    assert "echo" not in unserved and "refund_order" not in unserved  # the example workers run

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mcp_gateway", "check", "--live", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env.env_vars()},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert "nobody_home" in report["without_worker"] and "echo" not in report["without_worker"]
    by_name = {t["name"]: t for t in report["tools"]}
    assert by_name["echo"]["worker"] is True and by_name["nobody_home"]["worker"] is False
