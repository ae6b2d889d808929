"""What the admin pages show, as plain values for the templates: workflows, their history, dead letters, the list's
filters and its paging cursor. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp_gateway.core.states import APPROVAL, REOPENABLE, TERMINAL, Status
from mcp_gateway.store import DeadLetter, EventRecord, WorkflowFilter, WorkflowRecord

__all__ = [
    "MAX_PAGE_SIZE",
    "PAGE_SIZE",
    "FilterError",
    "ListQuery",
    "actions",
    "cursor",
    "dead_letter_row",
    "history_row",
    "list_query",
    "pretty",
    "progress_text",
    "when",
    "workflow_row",
    "workflow_view",
]

PAGE_SIZE = 50
"""Workflows per page of the list (`limit` asks for another number, up to `MAX_PAGE_SIZE`)."""
MAX_PAGE_SIZE = 500
_SHOWN_DATA = 240
"""At most this many characters of an event's data in a history row (the JSON API and the CLI have it whole)."""
_MAX_FILTER = 200


class FilterError(ValueError):
    """A filter of the list that cannot be used (its message names the parameter and what was expected)."""


def when(at: datetime | None) -> str:
    """A moment as the pages show it: UTC, to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at is not None else ""


def _plain(value: Any) -> Any:
    """Whole floats as integers (`2.0` as `2`), as the page's script shows the same values from the feed."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def pretty(value: Any) -> str:
    """A JSON value, indented, for a `<pre>` (the template escapes it)."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _number(value: float) -> str:
    return f"{value:g}"


def progress_text(record: WorkflowRecord) -> str:
    """`3 / 5 · step 3`, `3 · step 3`, or empty when the worker reported none."""
    s = record.state
    if s.progress is None:
        return ""
    figures = _number(s.progress) if s.total is None else f"{_number(s.progress)} / {_number(s.total)}"
    return f"{figures} · {s.message}" if s.message else figures


def actions(record: WorkflowRecord) -> list[str]:
    """The admin's buttons that apply to the workflow now: approve and deny while an approval is open, cancel
    until it ends, retry once it ended without a result."""
    status = record.status
    shown: list[str] = []
    if status is Status.INPUT_REQUIRED and any(q.get("id") == APPROVAL for q in record.state.questions):
        shown += ["approve", "deny"]
    if status not in TERMINAL:
        shown.append("cancel")
    if status in REOPENABLE:
        shown.append("retry")
    return shown


def workflow_row(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow as a row of the list."""
    s = record.state
    return {
        "id": record.id,
        "tool": record.tool,
        "status": s.status.value,
        "progress": progress_text(record),
        "value": s.progress,
        "max": s.total,
        "caller": record.caller,
        "created": when(record.created_at),
        "created_iso": record.created_at.isoformat(),
    }


def workflow_view(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow as its detail page shows it. The arguments are as the store keeps them (x-sensitive values
    already redacted)."""
    s = record.state
    return {
        **workflow_row(record),
        "tool_version": record.tool_version,
        "updated": when(record.updated_at),
        "deadline": when(record.deadline),
        "attempt": s.attempt,
        "trace_id": record.trace_id,
        "request_id": record.request_id,
        "terminal": s.status in TERMINAL,
        "arguments": pretty(record.arguments),
        "result": pretty(s.result) if s.result is not None else None,
        "content_blocks": len(s.content or []),
        "error": pretty(s.error) if s.error is not None else None,
        "questions": [
            {"id": q.get("id"), "kind": q.get("kind"), "by": q.get("by"), "message": q.get("message")}
            for q in s.questions
        ],
        "actions": actions(record),
    }


def history_row(event: EventRecord) -> dict[str, Any]:
    """One history event as a row (its data shortened)."""
    data = json.dumps(_plain(event.data), ensure_ascii=False, sort_keys=True, default=str) if event.data else ""
    return {
        "id": event.id,
        "at": when(event.at),
        "kind": event.kind,
        "status": event.status or "",
        "note": event.note or "",
        "data": data if len(data) <= _SHOWN_DATA else data[: _SHOWN_DATA - 1] + "…",
    }


def dead_letter_row(letter: DeadLetter, status: Status | None) -> dict[str, Any]:
    """A dead letter as a row, with its workflow's status now (None: no workflow, or no longer known)."""
    preview = letter.head[:120].decode("utf-8", errors="replace")
    return {
        "id": letter.id,
        "at": when(letter.at),
        "source": letter.source,
        "subject": letter.subject,
        "workflow_id": letter.workflow_id,
        "status": status.value if status is not None else None,
        "redrive": status is not None and status in REOPENABLE,
        "reason": letter.reason,
        "delivered": letter.delivered,
        "size": letter.size,
        "preview": preview + ("…" if letter.size > 120 else ""),
    }


def cursor(record: WorkflowRecord) -> str:
    """The `before` cursor of the page after this (the list's last) workflow: `<created_at ISO>,<id>`."""
    return f"{record.created_at.isoformat()},{record.id}"


def _moment(raw: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(
            f"{name}: {raw[:40]!r} is not a date or time; expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list's filters as the form holds them, the page size, and the store's filter they make (one more than
    a page, to know whether an older page follows)."""

    form: dict[str, str]
    page_size: int
    filter: WorkflowFilter

    def kept(self) -> dict[str, str]:
        """The query parameters that the list's other pages keep (the filters given, and the page size)."""
        kept = {k: v for k, v in self.form.items() if v}
        return kept | ({"limit": str(self.page_size)} if self.page_size != PAGE_SIZE else {})


def list_query(params: Mapping[str, str]) -> ListQuery:
    """The list's query parameters (`status`, `tool`, `caller`, `since`, `before`, `limit`) checked; FilterError
    names the first one that cannot be used."""
    form = {k: params.get(k, "").strip() for k in ("status", "tool", "caller", "since")}
    for name, value in form.items():
        if len(value) > _MAX_FILTER:
            raise FilterError(f"{name}: at most {_MAX_FILTER} characters, got {len(value)}")
    status: Status | None = None
    if form["status"]:
        try:
            status = Status(form["status"])
        except ValueError:
            known = ", ".join(s.value for s in Status)
            raise FilterError(f"status: {form['status'][:40]!r} is not a status; expected one of {known}") from None
    since = _moment(form["since"], "since") if form["since"] else None
    raw = params.get("limit", "")
    if raw and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE_SIZE):
        raise FilterError(f"limit: a whole number from 1 to {MAX_PAGE_SIZE}, got {raw[:20]!r}")
    page_size = int(raw) if raw else PAGE_SIZE
    before: tuple[datetime, str] | None = None
    raw = params.get("before", "")
    if raw:
        at, _, workflow_id = raw.rpartition(",")
        if not at or not workflow_id or len(workflow_id) > 64:
            raise FilterError(f"before: {raw[:80]!r} is not a cursor; expected <created_at>,<workflow id>")
        before = (_moment(at, "before"), workflow_id)
    query = WorkflowFilter(
        status=status,
        tool=form["tool"] or None,
        caller=form["caller"] or None,
        since=since,
        before=before,
        limit=page_size + 1,
    )
    return ListQuery(form, page_size, query)
