"""The MCP form of a call's outcome: `structuredContent` plus a text copy, or an `isError` result with detail.

Every `structuredContent` sent is an instance of the tool's listed `outputSchema` (the result, or a workflow
handle for tools that may hand one back): TypeScript-SDK clients (Claude Desktop, the Inspector) check it, on
`isError` results too, and refuse the reply otherwise. So failures carry no `structuredContent`: they say what
went wrong in their text, and the machine-readable detail travels in `_meta` under `ERROR_META`."""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types

from mcp_gateway.core.service import Outcome, OutcomeKind
from mcp_gateway.registry._content import CONTENT_BLOCK, content_block_problem
from mcp_gateway.server._workflow_tools import workflow_uri

__all__ = ["CONTENT_BLOCK", "ERROR_META", "WORKFLOW_META", "check_content", "error_result", "outcome_to_result"]

WORKFLOW_META = "io.mcp-gateway/workflowId"
ERROR_META = "io.mcp-gateway/error"


def check_content(blocks: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a worker's content blocks, each named by its index (empty when all are MCP blocks)."""
    return [f"content[{i}]: {problem}" for i, block in enumerate(blocks) if (problem := content_block_problem(block))]


def _text(data: Any) -> list[types.ContentBlock]:
    return [types.TextContent(text=data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))]


def error_result(text: str, detail: dict[str, Any], workflow_id: str | None = None) -> types.CallToolResult:
    """An `isError` result: readable text for the model and the user, the detail in `_meta` for programs."""
    meta: dict[str, Any] = {ERROR_META: detail}
    if workflow_id:
        meta[WORKFLOW_META] = workflow_id
    return types.CallToolResult(content=_text(text), is_error=True, _meta=meta)


def outcome_to_result(outcome: Outcome) -> types.CallToolResult:
    """The MCP form of an outcome: `structuredContent` plus a text copy, or an `isError` result with detail."""
    meta = {WORKFLOW_META: outcome.workflow_id} if outcome.workflow_id else None
    match outcome.kind:
        case OutcomeKind.COMPLETED:
            if outcome.content is not None:  # the worker's own content blocks, as MCP writes them
                blocks = [CONTENT_BLOCK.validate_python(block) for block in outcome.content]
                return types.CallToolResult(content=blocks, structured_content=outcome.result, _meta=meta)
            result = outcome.result or {}
            return types.CallToolResult(content=_text(result), structured_content=result, _meta=meta)
        case OutcomeKind.INVALID_ARGUMENTS:
            detail = {
                "error": "invalid_arguments",
                "message": f"the arguments do not match the input schema of tool {outcome.tool!r}",
                "violations": [{"path": v.path or "/", "message": v.message} for v in outcome.violations],
            }
            lines = "\n".join(f"- {v}" for v in outcome.violations)
            return error_result(f"Invalid arguments for tool {outcome.tool!r}:\n{lines}", detail)
        case OutcomeKind.UNKNOWN_TOOL:
            detail = {"error": "unknown_tool", "message": f"no tool named {outcome.tool!r}"}
            return error_result(f"Unknown tool {outcome.tool!r}.", detail)
        case OutcomeKind.FAILED:
            error = outcome.error or {}
            detail = {
                "error": error.get("code", "failed"),
                "workflow_id": outcome.workflow_id,
                "status": outcome.status.value if outcome.status else None,
                **error,
            }
            message = f"Tool {outcome.tool!r} failed ({detail['error']}): {error.get('message', '')}"
            if error.get("details"):
                message += "\n" + json.dumps(error["details"], ensure_ascii=False)
            message += f"\n(workflow {outcome.workflow_id}, status {detail['status']})"
            return error_result(message, detail, outcome.workflow_id)
        case OutcomeKind.HANDED_BACK | OutcomeKind.INPUT_REQUIRED:
            assert outcome.workflow_id is not None
            uri = workflow_uri(outcome.workflow_id)
            status = outcome.status.value if outcome.status else "pending"
            text = (
                f"The work continues as workflow {outcome.workflow_id} (status: {status}). Follow it with "
                f"workflow_status or workflow_result (workflow_id={outcome.workflow_id!r}), cancel it with "
                f"workflow_cancel, or read {uri}."
            )
            for question in outcome.questions:
                text += f" It asks: {question['message']} Answer with workflow_respond (request_id={question['id']!r})."
            if outcome.unserved:
                text += f" No worker listens on {outcome.unserved} yet: the work starts when one does."
            handle = {"workflow": {"id": outcome.workflow_id, "status": status, "uri": uri, "message": text}}
            link = types.ResourceLink(uri=uri, name=f"workflow {outcome.workflow_id}", mime_type="application/json")
            return types.CallToolResult(content=[*_text(text), link], structured_content=handle, _meta=meta)
        case OutcomeKind.UNAVAILABLE:
            detail = {"error": "unavailable", "message": (outcome.error or {}).get("message", "the store is away")}
            text = (
                f"The gateway cannot record a call to {outcome.tool!r} right now (its database is unavailable). "
                "Nothing was recorded and nothing runs: call again in a few seconds."
            )
            return error_result(text, detail)
        case OutcomeKind.IDEMPOTENCY_CONFLICT:
            detail = {
                "error": "idempotency_conflict",
                "workflow_id": outcome.workflow_id,
                "message": "this idempotency key was used for this tool with other arguments",
            }
            text = (
                f"Refused: you already called {outcome.tool!r} with this idempotency key but other arguments (workflow "
                f"{outcome.workflow_id}). Use a new key for a new call, or the same arguments to get that workflow."
            )
            return error_result(text, detail, outcome.workflow_id)
        case OutcomeKind.TOO_LARGE:
            error = outcome.error or {}
            detail = {
                "error": "too_large",
                "message": f"the call's command is {error.get('size')} bytes; the bus takes at most "
                f"{error.get('limit')} bytes (NATS max_payload)",
                **error,
            }
            text = f"The arguments for tool {outcome.tool!r} are too large: {detail['message']}. Nothing was recorded."
            return error_result(text, detail)
        case OutcomeKind.NO_WORKER:
            detail = {
                "error": "no_worker",
                "workflow_id": outcome.workflow_id,
                "status": outcome.status.value if outcome.status else None,
                "subject": outcome.unserved,
                "message": f"no worker listens on {outcome.unserved}",
            }
            text = (
                f"No worker is listening for tool {outcome.tool!r} (subject {outcome.unserved}), so it cannot run "
                f"now. The call is recorded as workflow {outcome.workflow_id} and runs when a worker appears (until "
                f"its deadline): do not call again; follow it with workflow_status or workflow_result "
                f"(workflow_id={outcome.workflow_id!r}), or cancel it with workflow_cancel."
            )
            return error_result(text, detail, outcome.workflow_id)
        case OutcomeKind.STILL_RUNNING:
            detail = {
                "error": "still_running",
                "workflow_id": outcome.workflow_id,
                "status": outcome.status.value if outcome.status else None,
                "message": f"workflow {outcome.workflow_id} did not finish within the tool's timeout; it still runs",
            }
            text = (
                f"Tool {outcome.tool!r} did not finish within its timeout; the work goes on as workflow "
                f"{outcome.workflow_id}. Follow it with workflow_status or workflow_result "
                f"(workflow_id={outcome.workflow_id!r}), or read {workflow_uri(outcome.workflow_id or '')}."
            )
            return error_result(text, detail, outcome.workflow_id)
