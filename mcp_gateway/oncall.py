"""What the CLI shows an on-call person: workflows listed by filter, one workflow's history (followed live), and
the counts by status and tool with the outbox's and the fold's lag. Plain text on a terminal, JSON with `--json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from mcp_gateway.bus import ConsumerState
from mcp_gateway.core.changes import Waiters
from mcp_gateway.core.ports import EventRecord, WorkflowFilter, WorkflowRecord
from mcp_gateway.core.states import TERMINAL, Status
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.store import PostgresStore

__all__ = ["follow_workflow", "list_workflows", "parse_since", "show_stats", "show_workflow", "summary"]

_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`--since`: a span back from now (`90s`, `15m`, `2h`, `3d`, `1w`) or an ISO 8601 time (UTC unless it says)."""
    text = value.strip()
    if match := _SPAN.match(text):
        span = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - span
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {value!r} is neither a span back from now (90s, 15m, 2h, 3d, 1w) nor an ISO 8601 time "
            "(2026-12-01T09:30 or 2026-12-01T09:30:00+01:00)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def summary(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tool": record.tool,
        "status": record.status.value,
        "progress": record.state.progress,
        "total": record.state.total,
        "caller": record.caller,
        "created_at": record.created_at.isoformat(),
    }


def _event_view(e: EventRecord) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "status": e.status, "data": e.data, "note": e.note}


def _event_line(e: EventRecord) -> str:
    return f"  {e.at:%H:%M:%S.%f}  {e.kind:<11} {e.status or '':<14} {json.dumps(e.data)} {e.note or ''}".rstrip()


async def list_workflows(store: PostgresStore, query: WorkflowFilter, *, as_json: bool, out: TextIO) -> int:
    records = await store.find(query)
    if as_json:
        print(json.dumps([summary(r) for r in records], indent=2), file=out)
        return 0
    for r in records:
        s = r.state
        progress = f"{s.progress:g}/{s.total:g}" if s.progress is not None and s.total else ""
        print(
            f"{r.id}  {r.status.value:<14} {r.tool:<20} {r.caller:<16} {r.created_at:%Y-%m-%d %H:%M:%S}  {progress}",
            file=out,
        )
    if not records:
        print("no workflows match", file=out)
    return 0


async def show_workflow(store: PostgresStore, workflow_id: str, *, as_json: bool, out: TextIO) -> int:
    """One workflow and its history; 1 if there is no such workflow."""
    record = await store.get(workflow_id)
    if record is None:
        return 1
    s = record.state
    shown = {
        **summary(record),
        "arguments": record.arguments,
        "message": s.message,
        "result": s.result,
        "error": s.error,
        "trace_id": record.trace_id,
        "deadline": record.deadline.isoformat(),
    }
    events = await store.events(record.id)
    if as_json:
        print(json.dumps({**shown, "events": [_event_view(e) for e in events]}, indent=2), file=out)
        return 0
    print(json.dumps(shown, indent=2), file=out)
    for e in events:
        print(_event_line(e), file=out)
    return 0


async def follow_workflow(store: PostgresStore, workflow_id: str, *, as_json: bool, out: TextIO) -> int:
    """The history so far, then each event as it is recorded (by any gateway process), until the workflow ends.
    As JSON: one object per line. 1 if there is no such workflow."""
    record = await store.get(workflow_id)
    if record is None:
        return 1
    if not as_json:
        print(f"{record.id}  {record.tool}  by {record.caller}  (following; Ctrl-C to stop)", file=out)
    waiters = Waiters()
    async with Supervisor() as supervisor:
        await store.subscribe_changes(waiters.on_message, supervisor)
        with waiters.watch(workflow_id) as watch:
            after = 0
            ended = False
            while True:
                current = await store.get(workflow_id)  # before the events: the history then holds its ending
                ended = current is None or current.status in TERMINAL
                for event in await store.events(workflow_id, after):
                    after = event.id
                    print(json.dumps(_event_view(event)) if as_json else _event_line(event), file=out, flush=True)
                if ended:
                    break
                try:  # a change wakes us at once; the timeout covers a missed notification (a reconnect)
                    async with asyncio.timeout(2):
                        await watch.next()
                except TimeoutError:
                    pass
    if not as_json and current is not None:
        print(f"ended: {current.status.value}", file=out)
    return 0


async def show_stats(
    store: PostgresStore,
    *,
    since: datetime | None,
    as_json: bool,
    out: TextIO,
    backlog: ConsumerState | str | None = None,
) -> int:
    """Workflows by status and by tool (created since `since`, else all), the outbox's depth and age, dead letters,
    and the fold's backlog in JetStream (`backlog`: what JetStream said, or why it could not say)."""
    counts = await store.counts(since=since)
    by_status = {s.value: n for s, n in sorted(counts.by_status().items(), key=lambda kv: list(Status).index(kv[0]))}
    tools: dict[str, dict[str, int]] = {}
    for (tool, status), n in sorted(counts.by_tool_status.items()):
        tools.setdefault(tool, {})[status.value] = n
    view = {
        "since": since.isoformat() if since else None,
        "by_status": by_status,
        "by_tool": tools,
        "outbox": {"depth": counts.outbox, "oldest_seconds": counts.outbox_oldest_seconds},
        "dead_letters": counts.dead_letters,
        "events": asdict(backlog) if isinstance(backlog, ConsumerState) else {"unknown": backlog},
    }
    if as_json:
        print(json.dumps(view, indent=2), file=out)
        return 0
    print(f"workflows{f' created since {since:%Y-%m-%d %H:%M:%S} UTC' if since else ''}:", file=out)
    columns = [s.value for s in Status if s.value in by_status]
    print(f"  {'tool':<24}" + "".join(f"{c:>15}" for c in columns) + f"{'total':>9}", file=out)
    for tool, row in tools.items():
        cells = "".join(f"{row.get(c, 0):>15}" for c in columns)
        print(f"  {tool:<24}{cells}{sum(row.values()):>9}", file=out)
    print(
        f"  {'all':<24}" + "".join(f"{by_status[c]:>15}" for c in columns) + f"{sum(by_status.values()):>9}", file=out
    )
    age = counts.outbox_oldest_seconds
    print(f"outbox: {counts.outbox} waiting" + (f", oldest {age:.1f} s" if age is not None else ""), file=out)
    print(f"dead letters: {counts.dead_letters}", file=out)
    if isinstance(backlog, ConsumerState):
        print(
            f"events for the fold: {backlog.pending} waiting, {backlog.ack_pending} being folded, "
            f"{backlog.redelivered} redelivered",
            file=out,
        )
    elif backlog is not None:
        print(f"events for the fold: unknown ({backlog})", file=out)
    return 0
