"""The on-call views of the CLI: workflows listed by filter and page, one followed live, the stats."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from mcp_gateway_worker.contract import Subjects

from mcp_gateway import oncall
from mcp_gateway.app import Gateway
from mcp_gateway.bus import events_consumer_at
from mcp_gateway.core.service import Caller
from mcp_gateway.core.states import Status
from mcp_gateway.store import WorkflowFilter
from tests.conftest import Env
from tests.test_long_running import gate_for


def test_since_takes_a_span_or_a_time_and_names_what_it_expected() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert oncall.parse_since("15m", now) == now - timedelta(minutes=15)
    assert oncall.parse_since("2h", now) == now - timedelta(hours=2)
    assert oncall.parse_since("1w", now) == now - timedelta(weeks=1)
    assert oncall.parse_since("2026-12-01T09:30") == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert oncall.parse_since("2026-12-01T09:30+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(argparse.ArgumentTypeError, match=r"'yesterday' is neither a span .* nor an ISO 8601 time"):
        oncall.parse_since("yesterday")


async def test_list_filters_by_status_tool_caller_and_time_and_pages_on(gateway: Gateway) -> None:
    for _ in range(3):
        await gateway.service.call("steps", {"count": 0}, caller=Caller(subject="alice"))
    await gateway.service.call("explode", {}, caller=Caller(subject="bob"))

    async def ids(query: WorkflowFilter) -> list[str]:
        out = io.StringIO()
        assert await oncall.list_workflows(gateway.store, query, as_json=True, out=out) == 0
        return [w["id"] for w in json.loads(out.getvalue())]

    everyone = await gateway.store.find(WorkflowFilter())
    assert len(everyone) == 4
    assert len(await ids(WorkflowFilter(caller="alice"))) == 3
    assert len(await ids(WorkflowFilter(tool="explode"))) == 1
    failed = await gateway.store.find(WorkflowFilter(status=Status.FAILED))
    assert [r.tool for r in failed] == ["explode"]
    assert await ids(WorkflowFilter(since=datetime.now(UTC) + timedelta(minutes=1))) == []
    # Keyset paging: two pages of two, no workflow twice, none left out, newest first.
    first = await gateway.store.find(WorkflowFilter(limit=2))
    second = await gateway.store.find(WorkflowFilter(limit=2, before=(first[-1].created_at, first[-1].id)))
    assert [r.id for r in first + second] == [r.id for r in everyone]
    text = io.StringIO()
    await oncall.list_workflows(gateway.store, WorkflowFilter(tool="nothing-here"), as_json=False, out=text)
    assert text.getvalue() == "no workflows match\n"


async def test_follow_prints_the_history_then_each_event_until_the_end(gateway: Gateway, env: Env) -> None:
    gate_name, gate = gate_for(env)
    call = asyncio.create_task(
        gateway.service.call("steps", {"count": 3, "gate": gate_name}, caller=Caller(subject="alice"))
    )
    async with asyncio.timeout(10):
        while not (records := await gateway.store.find(WorkflowFilter(tool="steps"))):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    out = io.StringIO()
    follow = asyncio.create_task(oncall.follow_workflow(gateway.store, records[0].id, as_json=True, out=out))
    async with asyncio.timeout(10):
        while '"progress"' not in out.getvalue():  # noqa: ASYNC110 - the first progress, before the gate opens
            await asyncio.sleep(0.02)
    assert not follow.done()  # still following: the workflow waits on the gate
    gate.set()
    async with asyncio.timeout(10):
        assert await follow == 0
    await call
    kinds = [json.loads(line)["kind"] for line in out.getvalue().splitlines()]
    assert kinds[0] == "created" and kinds.count("progress") == 3 and "completed" in kinds
    assert len(set(json.loads(line)["id"] for line in out.getvalue().splitlines())) == len(kinds)  # none twice
    missing = io.StringIO()
    assert await oncall.follow_workflow(gateway.store, "no-such-workflow", as_json=True, out=missing) == 1


async def test_stats_count_by_status_and_tool(gateway: Gateway, env: Env) -> None:
    await gateway.service.call("steps", {"count": 1}, caller=Caller(subject="alice"))
    await gateway.service.call("steps", {"count": 1}, caller=Caller(subject="alice"))
    await gateway.service.call("explode", {}, caller=Caller(subject="bob"))
    async with asyncio.timeout(10):  # the dispatcher marks what it published in batches, a moment later
        while (await gateway.store.counts()).outbox:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    out = io.StringIO()
    backlog = await events_consumer_at(env.nats_url, Subjects(env.prefix))
    assert await oncall.show_stats(gateway.store, since=None, as_json=True, out=out, backlog=backlog) == 0
    stats = json.loads(out.getvalue())
    assert stats["events"] == {"pending": 0, "ack_pending": 0, "redelivered": 0, "waiting": stats["events"]["waiting"]}
    assert stats["by_status"] == {"completed": 2, "failed": 1}
    assert stats["by_tool"] == {"explode": {"failed": 1}, "steps": {"completed": 2}}
    assert stats["outbox"]["depth"] == 0 and stats["dead_letters"] == 0
    later = io.StringIO()
    await oncall.show_stats(gateway.store, since=datetime.now(UTC) + timedelta(hours=1), as_json=True, out=later)
    assert json.loads(later.getvalue())["by_status"] == {}
    table = io.StringIO()
    await oncall.show_stats(gateway.store, since=None, as_json=False, out=table, backlog="NATS away")
    lines = table.getvalue().splitlines()
    assert lines[-1] == "events for the fold: unknown (NATS away)"
    assert lines[1].split() == ["tool", "completed", "failed", "total"]
    assert lines[2].split() == ["explode", "0", "1", "1"] and lines[4].split() == ["all", "2", "1", "3"]


def test_the_cli_refuses_a_bad_since_with_what_it_expected(env: Env) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "workflows", "list", "--since", "soon"],
        env={**os.environ, **env.env_vars()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--since 'soon' is neither a span back from now" in run.stderr
