"""Built-in tools for following long work without the tasks extension: status, result, cancel, list.

They act only on the caller's own workflows (`Workflows` enforces it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp.types as types

from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import AnswerRefused, Viewer, WorkflowNotFound, Workflows
from mcp_gateway.errors import BusError, StoreError
from mcp_gateway.registry._schema import CompiledSchema
from mcp_gateway.store import WorkflowRecord

__all__ = ["BUILTIN_TOOLS", "BuiltinTool", "run_builtin", "summary", "workflow_uri"]

_ID = {"type": "string", "minLength": 1, "maxLength": 64, "description": "the workflow id a call handed back"}


def workflow_uri(workflow_id: str) -> str:
    return f"workflow://{workflow_id}"


def summary(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow as the built-in tools and the `workflow://{id}` resource show it."""
    s = record.state
    out: dict[str, Any] = {
        "id": record.id,
        "tool": record.tool,
        "status": s.status.value,
        "uri": workflow_uri(record.id),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "deadline": record.deadline.isoformat(),
    }
    if s.progress is not None:
        out["progress"] = {"progress": s.progress, "total": s.total, "message": s.message}
    if s.error is not None:
        out["error"] = s.error
    if s.questions:
        out["questions"] = s.questions
    return out


Handler = Callable[[Workflows, Viewer, dict[str, Any]], Awaitable[types.CallToolResult]]
READ_ONLY = frozenset({"workflow_status", "workflow_result", "workflow_list"})


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    listing: types.Tool
    input: CompiledSchema
    run: Handler


def _result(data: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(data, ensure_ascii=False))], structured_content=data, is_error=error
    )


async def _status(workflows: Workflows, viewer: Viewer, args: dict[str, Any]) -> types.CallToolResult:
    return _result({"workflow": summary(await workflows.get(args["workflow_id"], viewer))})


async def _result_of(workflows: Workflows, viewer: Viewer, args: dict[str, Any]) -> types.CallToolResult:
    record = await workflows.wait(args["workflow_id"], viewer, float(args.get("wait_seconds", 0)))
    data: dict[str, Any] = {"workflow": summary(record)}
    if record.status is Status.COMPLETED:
        data["result"] = record.state.result
    return _result(data, error=record.state.error is not None)


async def _cancel(workflows: Workflows, viewer: Viewer, args: dict[str, Any]) -> types.CallToolResult:
    return _result({"workflow": summary(await workflows.cancel(args["workflow_id"], viewer))})


async def _respond(workflows: Workflows, viewer: Viewer, args: dict[str, Any]) -> types.CallToolResult:
    record = await workflows.answer(
        args["workflow_id"], viewer, args["request_id"], args["action"], args.get("content")
    )
    return _result({"workflow": summary(record)})


async def _list(workflows: Workflows, viewer: Viewer, args: dict[str, Any]) -> types.CallToolResult:
    status = Status(args["status"]) if "status" in args else None
    records = await workflows.list(viewer, status=status, limit=int(args.get("limit", 20)))
    return _result({"workflows": [summary(r) for r in records]})


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str], run: Handler) -> BuiltinTool:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    hints = types.ToolAnnotations(read_only_hint=name in READ_ONLY, open_world_hint=False)
    listing = types.Tool(name=name, description=description, input_schema=schema, annotations=hints)
    return BuiltinTool(listing, CompiledSchema(schema), run)


BUILTIN_TOOLS: dict[str, BuiltinTool] = {
    t.listing.name: t
    for t in (
        _tool(
            "workflow_status",
            "Status and latest progress of one of your workflows.",
            {"workflow_id": _ID},
            ["workflow_id"],
            _status,
        ),
        _tool(
            "workflow_result",
            "The result of one of your workflows; waits up to wait_seconds for it to finish.",
            {"workflow_id": _ID, "wait_seconds": {"type": "number", "minimum": 0, "maximum": 60}},
            ["workflow_id"],
            _result_of,
        ),
        _tool(
            "workflow_cancel",
            "Cancel one of your workflows (a result that arrived first is kept).",
            {"workflow_id": _ID},
            ["workflow_id"],
            _cancel,
        ),
        _tool(
            "workflow_respond",
            "Answer a question one of your workflows asks (see workflow_status): accept with content, or decline.",
            {
                "workflow_id": _ID,
                "request_id": {"type": "string", "minLength": 1, "maxLength": 64},
                "action": {"type": "string", "enum": ["accept", "decline", "cancel"]},
                "content": {"type": "object"},
            },
            ["workflow_id", "request_id", "action"],
            _respond,
        ),
        _tool(
            "workflow_list",
            "Your most recent workflows, newest first.",
            {
                "status": {"type": "string", "enum": [s.value for s in Status]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            [],
            _list,
        ),
    )
}


async def run_builtin(
    tool: BuiltinTool, workflows: Workflows, viewer: Viewer, args: dict[str, Any]
) -> types.CallToolResult:
    violations = tool.input.violations(args)
    if violations:
        return _result(
            {
                "error": "invalid_arguments",
                "violations": [{"path": v.path or "/", "message": v.message} for v in violations],
            },
            error=True,
        )
    try:
        return await tool.run(workflows, viewer, args)
    except WorkflowNotFound as exc:
        return _result({"error": "not_found", "message": str(exc)}, error=True)
    except AnswerRefused as exc:
        return _result({"error": "answer_refused", "message": str(exc)}, error=True)
    except (StoreError, BusError) as exc:  # PostgreSQL or NATS away: say so, and that trying again is fine
        return _result({"error": "unavailable", "message": f"{exc}; try again shortly"}, error=True)
