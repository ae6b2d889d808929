"""The MCP handlers: adapters from the SDK's request context to the transport-independent tool-call service."""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
import structlog
from mcp.server import Server, ServerRequestContext

from mcp_gateway import __version__
from mcp_gateway.contract import Caller
from mcp_gateway.core.service import Outcome, OutcomeKind, Progress, ToolCallService

__all__ = ["build_server", "outcome_to_result"]

log = structlog.get_logger(__name__)

INSTRUCTIONS = (
    "Tools here run as durable workflows on backend workers. Each result carries its workflow id "
    "(structuredContent or _meta 'io.mcp-gateway/workflowId'); a call that outlives its wait budget says so."
)


def _text(data: Any) -> list[types.ContentBlock]:
    return [types.TextContent(text=data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))]


def outcome_to_result(outcome: Outcome) -> types.CallToolResult:
    """The MCP form of an outcome: `structuredContent` plus a text copy, or an `isError` result with detail."""
    meta = {"io.mcp-gateway/workflowId": outcome.workflow_id} if outcome.workflow_id else None
    match outcome.kind:
        case OutcomeKind.COMPLETED:
            result = outcome.result or {}
            return types.CallToolResult(content=_text(result), structured_content=result, _meta=meta)
        case OutcomeKind.INVALID_ARGUMENTS:
            detail = {
                "error": "invalid_arguments",
                "message": f"the arguments do not match the input schema of tool {outcome.tool!r}",
                "violations": [{"path": v.path or "/", "message": v.message} for v in outcome.violations],
            }
            lines = "\n".join(f"- {v}" for v in outcome.violations)
            text = f"Invalid arguments for tool {outcome.tool!r}:\n{lines}"
            return types.CallToolResult(content=_text(text), structured_content=detail, is_error=True)
        case OutcomeKind.UNKNOWN_TOOL:
            detail = {"error": "unknown_tool", "message": f"no tool named {outcome.tool!r}"}
            return types.CallToolResult(content=_text(detail["message"]), structured_content=detail, is_error=True)
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
            return types.CallToolResult(content=_text(message), structured_content=detail, is_error=True, _meta=meta)
        case OutcomeKind.STILL_RUNNING:
            detail = {
                "error": "still_running",
                "workflow_id": outcome.workflow_id,
                "status": outcome.status.value if outcome.status else None,
                "message": f"workflow {outcome.workflow_id} did not finish within the tool's timeout; it still runs",
            }
            return types.CallToolResult(
                content=_text(detail["message"]), structured_content=detail, is_error=True, _meta=meta
            )


def _caller(ctx: ServerRequestContext[Any], default_subject: str) -> Caller:
    request_id = str(ctx.request_id) if ctx.request_id is not None else None
    return Caller(subject=default_subject, request_id=request_id)


def _traceparent(ctx: ServerRequestContext[Any]) -> str | None:
    value = (ctx.meta or {}).get("traceparent")
    if value is None and ctx.request is not None:
        headers = getattr(ctx.request, "headers", None)
        value = headers.get("traceparent") if headers is not None else None
    return value if isinstance(value, str) else None


def build_server(service: ToolCallService, *, caller_subject: str = "anonymous") -> Server[Any]:
    """The low-level MCP server: tools from the registry, calls through the service."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(service.registry.listing))

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        async def progress(p: Progress) -> None:
            await ctx.session.report_progress(p.progress, p.total, p.message)

        structlog.contextvars.bind_contextvars(request_id=str(ctx.request_id))
        try:
            outcome = await service.call(
                params.name,
                params.arguments,
                caller=_caller(ctx, caller_subject),
                traceparent=_traceparent(ctx),
                on_progress=progress,
            )
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        log.info("call.finished", tool=params.name, outcome=outcome.kind.value, workflow_id=outcome.workflow_id)
        return outcome_to_result(outcome)

    return Server(
        "mcp-gateway",
        version=__version__,
        title="MCP Gateway",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
