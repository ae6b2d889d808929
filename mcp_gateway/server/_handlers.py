"""The MCP handlers: adapters from the SDK's request context to the transport-independent tool-call service."""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
import structlog
from mcp.server import Server, ServerRequestContext
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError

from mcp_gateway import __version__
from mcp_gateway.contract import Caller
from mcp_gateway.core.service import Outcome, OutcomeKind, Progress, ToolCallService
from mcp_gateway.core.workflows import Viewer, WorkflowNotFound, Workflows
from mcp_gateway.server._resources import TEMPLATES, ResourceFeed, as_contents, parse_uri, read_workflow_resource
from mcp_gateway.server._workflow_tools import BUILTIN_TOOLS, run_builtin, workflow_uri

__all__ = ["build_server", "outcome_to_result"]

log = structlog.get_logger(__name__)

RESOURCE_NOT_FOUND = -32002

INSTRUCTIONS = (
    "Tools here run as durable workflows on backend workers. Each result carries its workflow id in _meta "
    "'io.mcp-gateway/workflowId'. A call whose work outlives its wait budget hands back a workflow handle: follow "
    "it with workflow_status / workflow_result, cancel it with workflow_cancel, or read workflow://{id}."
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
        case OutcomeKind.HANDED_BACK:
            assert outcome.workflow_id is not None
            uri = workflow_uri(outcome.workflow_id)
            status = outcome.status.value if outcome.status else "pending"
            text = (
                f"The work continues as workflow {outcome.workflow_id} (status: {status}). Follow it with "
                f"workflow_status or workflow_result (workflow_id={outcome.workflow_id!r}), cancel it with "
                f"workflow_cancel, or read {uri}."
            )
            handle = {"workflow": {"id": outcome.workflow_id, "status": status, "uri": uri, "message": text}}
            link = types.ResourceLink(uri=uri, name=f"workflow {outcome.workflow_id}", mime_type="application/json")
            return types.CallToolResult(content=[*_text(text), link], structured_content=handle, _meta=meta)
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


def build_server(
    service: ToolCallService, workflows: Workflows, feed: ResourceFeed, *, caller_subject: str = "anonymous"
) -> Server[Any]:
    """The low-level MCP server: tools from the registry plus the built-in workflow tools, calls through the
    service, workflow resources with update notifications on both protocol revisions."""
    viewer = Viewer(caller_subject)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[*service.registry.listing, *(t.listing for t in BUILTIN_TOOLS.values())])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        builtin = BUILTIN_TOOLS.get(params.name)
        if builtin is not None:
            return await run_builtin(builtin, workflows, viewer, params.arguments or {})

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

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        records = await workflows.list(viewer, limit=20)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=workflow_uri(r.id),
                    name=f"workflow {r.id}",
                    title=f"{r.tool} ({r.status.value})",
                    mime_type="application/json",
                )
                for r in records
            ]
        )

    async def list_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            data = await read_workflow_resource(workflows, viewer, uri)
        except WorkflowNotFound as exc:
            raise MCPError(RESOURCE_NOT_FOUND, str(exc)) from None
        if data is None:
            raise MCPError(RESOURCE_NOT_FOUND, f"unknown resource {uri!r}; expected workflow://{{id}}[/events]")
        return as_contents(uri, data)

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        if parse_uri(uri) is None:
            raise MCPError(types.INVALID_PARAMS, f"cannot subscribe to {uri!r}; expected workflow://{{id}}[/events]")
        feed.subscribe(ctx.session, uri)
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        feed.unsubscribe(ctx.session, str(params.uri))
        return types.EmptyResult()

    return Server(
        "mcp-gateway",
        version=__version__,
        title="MCP Gateway",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_subscriptions_listen=ListenHandler(feed.bus),
    )
