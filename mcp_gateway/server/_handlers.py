"""The MCP handlers: adapters from the SDK's request context to the transport-independent tool-call service."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import mcp.types as types
import structlog
from mcp.server import InitializationOptions, NotificationOptions, Server, ServerRequestContext
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp_gateway_worker.contract import Caller
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_gateway import __version__
from mcp_gateway.auth import Principals
from mcp_gateway.core.limits import CallLimits, LimitExceeded
from mcp_gateway.core.resources import ResourceNotFound, ResourceReader, ResourceUnavailable
from mcp_gateway.core.service import Outcome, OutcomeKind, Progress, ToolCallService
from mcp_gateway.core.states import Status
from mcp_gateway.core.telemetry import UNKNOWN_TOOL_LABEL
from mcp_gateway.core.tracing import trace_id_of, tracer
from mcp_gateway.core.workflows import AnswerRefused, Viewer, WorkflowNotFound, Workflows
from mcp_gateway.errors import BusError, StoreError
from mcp_gateway.server._input import (
    answers_from,
    can_answer,
    elicitor,
    input_required,
    parse_request_state,
    prompt_arguments,
)
from mcp_gateway.server._resources import (
    TEMPLATES,
    ResourceFeed,
    as_contents,
    connection_of,
    parse_uri,
    read_workflow_resource,
)
from mcp_gateway.server._results import error_result, outcome_to_result
from mcp_gateway.server._tasks import (
    MISSING_CAPABILITY,
    TASKS_EXTENSION,
    client_wants_tasks,
    register_tasks,
    task_handle,
)
from mcp_gateway.server._workflow_tools import BUILTIN_TOOLS, run_builtin, workflow_uri

__all__ = ["Principal", "build_server", "principal_from"]

log = structlog.get_logger(__name__)

RESOURCE_NOT_FOUND = -32002
LOG_LEVEL_KEY = "mcp-gateway/log-level"
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

INSTRUCTIONS = (
    "Tools here run as durable workflows on backend workers. Each result carries its workflow id in _meta "
    "'io.mcp-gateway/workflowId'. A call whose work outlives its wait budget hands back a workflow handle: follow "
    "it with workflow_status / workflow_result, cancel it with workflow_cancel, or read workflow://{id}."
)


def _caller(ctx: ServerRequestContext[Any], viewer: Viewer) -> Caller:
    request_id = str(ctx.request_id) if ctx.request_id is not None else None
    return Caller(subject=viewer.subject, request_id=request_id, can_answer=can_answer(ctx))


Principal = Callable[[ServerRequestContext[Any]], Viewer]
"""Who made a request: the principal of its HTTP token, else the local one (stdio, or HTTP without a token)."""


def principal_from(principals: Principals) -> Principal:
    def principal(ctx: ServerRequestContext[Any]) -> Viewer:
        return principals.of_scope(getattr(ctx.request, "scope", None))

    return principal


IDEMPOTENCY_META = "io.mcp-gateway/idempotencyKey"
IDEMPOTENCY_HEADER = "idempotency-key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _idempotency_key(ctx: ServerRequestContext[Any]) -> str | None:
    """The call's idempotency key: `_meta` `io.mcp-gateway/idempotencyKey`, else (HTTP) `Idempotency-Key`."""
    value = (ctx.meta or {}).get(IDEMPOTENCY_META)
    if value is None and ctx.request is not None:
        headers = getattr(ctx.request, "headers", None)
        value = headers.get(IDEMPOTENCY_HEADER) if headers is not None else None
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY.match(value):
        raise MCPError(
            types.INVALID_PARAMS,
            f"idempotency key {str(value)[:40]!r} refused: expected 1 to 255 visible ASCII characters "
            f"(_meta {IDEMPOTENCY_META!r} or the Idempotency-Key header)",
        )
    return value


def _traceparent(ctx: ServerRequestContext[Any]) -> str | None:
    value = (ctx.meta or {}).get("traceparent")
    if value is None and ctx.request is not None:
        headers = getattr(ctx.request, "headers", None)
        value = headers.get("traceparent") if headers is not None else None
    return value if isinstance(value, str) else None


async def _close_stream_after(seconds: float, close: Callable[[], Awaitable[None]]) -> None:
    """SEP-1699 polling: end the request's SSE stream; the client comes back with Last-Event-ID."""
    await asyncio.sleep(seconds)
    await close()


async def _ask_again(
    workflows: Workflows, viewer: Viewer, workflow_id: str | None, refused: AnswerRefused
) -> types.CallToolResult | None:
    if workflow_id is None:
        return None
    state = (await workflows.get(workflow_id, viewer)).state
    questions = [q for q in state.questions if q.get("by") != "admin"]
    if state.status is not Status.INPUT_REQUIRED or not questions:
        return None
    noted = [{**q, "message": f"{refused}. {q['message']}"} if q["id"] == refused.request_id else q for q in questions]
    return cast(types.CallToolResult, input_required(workflow_id, noted))


class _GatewayServer(Server[Any]):
    """The SDK's low-level server, advertising list-changed notifications on 2025-11-25 too: the lists change
    when the config is reloaded (2026-07-28 derives the flags from `subscriptions/listen`). `streamed(name)`:
    whether a tool's 2025-11-25 calls need the SDK's own SSE stream (its `poll_after` closes it mid-call), for the
    lean HTTP route."""

    streamed: Callable[[str], bool] = staticmethod(lambda name: False)  # pyright: ignore[reportUnknownLambdaType]

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        every = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(
            notification_options or every, experimental_capabilities, extensions
        )


MAX_LISTENED_URIS = 256
"""Resource URIs one `subscriptions/listen` may name (each is checked against the caller's rights)."""


class _OwnSubscriptions:
    """`subscriptions/listen` (2026-07-28) honoring only the resource URIs the caller may subscribe to: another
    caller's workflow or a resource out of its scopes is left out of the acknowledged filter, exactly like a URI
    that names nothing (so the ack does not tell which exist)."""

    def __init__(
        self,
        inner: ListenHandler,
        principal: Principal,
        may_subscribe: Callable[[Viewer, str], Awaitable[bool]],
    ) -> None:
        self.inner = inner
        self.principal = principal
        self.may_subscribe = may_subscribe

    async def __call__(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        wanted = params.notifications.resource_subscriptions
        if wanted:
            if len(wanted) > MAX_LISTENED_URIS:
                raise MCPError(
                    types.INVALID_PARAMS,
                    f"subscriptions/listen names {len(wanted)} resource URIs: at most {MAX_LISTENED_URIS} per stream",
                )
            viewer = self.principal(ctx)
            kept = [uri for uri in dict.fromkeys(wanted) if await self.may_subscribe(viewer, uri)]
            notifications = params.notifications.model_copy(update={"resource_subscriptions": kept})
            params = params.model_copy(update={"notifications": notifications})
        return await self.inner(ctx, params)


def build_server(
    service: ToolCallService,
    workflows: Workflows,
    feed: ResourceFeed,
    reader: ResourceReader,
    *,
    principal: Principal,
    current: Callable[[], Viewer],
    limits: CallLimits | None = None,
) -> Server[Any]:
    """The low-level MCP server: tools from the registry plus the built-in workflow tools, calls through the
    service, workflow resources with update notifications on both protocol revisions.

    Each request acts as its `principal`: it sees only the tools, prompts and resources whose scopes it holds
    (anything else answers as if it did not exist) and only its own workflows. `current` is the principal of the
    request in hand where the SDK asks without a context (the `Mcp-Param-*` schema lookup)."""

    def track_lister(ctx: ServerRequestContext[Any]) -> None:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:  # 2026-07-28 clients listen instead
            feed.listed(ctx.session)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        track_lister(ctx)
        viewer = principal(ctx)
        mine = [t.listing for t in service.registry.values() if viewer.may(t.config.scopes)]
        return types.ListToolsResult(tools=[*mine, *(t.listing for t in BUILTIN_TOOLS.values())])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        """One tools/call, in the client's trace (its traceparent: `_meta`, else the HTTP header): traced, the
        request is a span (`gateway.request`, kind server), a child of it, else of a new trace."""
        client_trace = _traceparent(ctx)
        if not tracer().enabled:
            trace_id = trace_id_of(client_trace)
            if trace_id is None:
                return await handle_call(ctx, params)
            with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                return await handle_call(ctx, params)
        attributes = {"mcp.method.name": "tools/call", "gen_ai.tool.name": params.name}
        with (
            tracer().span("gateway.request", parent=client_trace, kind="server", attributes=attributes) as span,
            structlog.contextvars.bound_contextvars(trace_id=trace_id_of(tracer().traceparent())),
        ):
            result = await handle_call(ctx, params)
            span.set_attribute("mcp_gateway.is_error", bool(result.is_error))
            return result

    async def handle_call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        viewer = principal(ctx)
        builtin = BUILTIN_TOOLS.get(params.name)
        if builtin is not None:
            return await run_builtin(builtin, workflows, viewer, params.arguments or {})
        tool = service.registry.get(params.name)
        if tool is not None and not viewer.may(tool.config.scopes):  # the same answer as a tool that is not there
            log.info("call.forbidden", tool=params.name, subject=viewer.subject, needs=tool.config.scopes)
            service.telemetry.call_refused(tool.name, "forbidden")
            return outcome_to_result(Outcome(OutcomeKind.UNKNOWN_TOOL, params.name))

        async def progress(p: Progress) -> None:
            await ctx.session.report_progress(p.progress, p.total, p.message)

        async def relay_log(line: dict[str, Any]) -> None:
            level = line.get("level") or "info"
            threshold = getattr(connection_of(ctx.session), "state", {}).get(LOG_LEVEL_KEY, "debug")
            if LEVELS.index(level) >= LEVELS.index(threshold):
                await ctx.session.send_log_message(  # pyright: ignore[reportDeprecated] - both wires still serve it
                    level, line.get("message"), line.get("logger"), related_request_id=ctx.request_id
                )

        as_task = tool is not None and tool.config.mode != "sync" and client_wants_tasks(ctx)
        if tool is not None and tool.config.mode == "task" and not as_task:
            raise MCPError(
                MISSING_CAPABILITY,
                f"tool {params.name!r} runs only as a task: declare the {TASKS_EXTENSION} extension",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        caller = _caller(ctx, viewer)
        missing = [need for need in tool.config.requires if need not in (caller.can_answer or [])] if tool else []
        if missing:
            raise MCPError(
                MISSING_CAPABILITY,
                f"tool {params.name!r} needs the client capabilities {', '.join(missing)}; declare them",
                {"requiredCapabilities": {need: {} for need in missing}},
            )

        async def invoke() -> Outcome:
            if params.request_state is not None:  # 2026-07-28: the retry that carries the user's answers
                workflow_id, asked = parse_request_state(params.request_state)
                return await service.resume(
                    params.name,
                    workflow_id,
                    asked,
                    answers_from(params.input_responses),
                    caller=caller,
                    on_progress=progress,
                )
            return await service.call(
                params.name,
                params.arguments,
                caller=caller,
                idempotency_key=_idempotency_key(ctx),
                traceparent=_traceparent(ctx),
                on_progress=progress,
                on_input=elicitor(ctx),
                on_log=relay_log,
            )

        structlog.contextvars.bind_contextvars(request_id=str(ctx.request_id))
        slot = limits.slot(viewer.subject) if limits is not None else contextlib.nullcontext()
        poll = None
        try:
            async with slot:  # the caller's share of calls in flight (LimitExceeded on entry)
                if tool is not None and tool.config.poll_after and ctx.close_sse_stream is not None:
                    poll = asyncio.create_task(_close_stream_after(tool.config.poll_after, ctx.close_sse_stream))
                outcome = await invoke()
        except LimitExceeded as exc:
            log.warning("call.limited", tool=params.name, subject=viewer.subject, limit=exc.limit)
            service.telemetry.call_refused(tool.name if tool is not None else UNKNOWN_TOOL_LABEL, "limited")
            detail = {"error": "limit_exceeded", "message": str(exc), "limit": exc.limit, "maximum": exc.maximum}
            return error_result(f"{exc}. Try again when a call of yours has ended.", detail)
        except AnswerRefused as exc:  # a retried call whose answer breaks the question: ask again, saying why
            state = params.request_state
            again = await _ask_again(workflows, viewer, parse_request_state(state)[0] if state else None, exc)
            return again or types.CallToolResult(content=[types.TextContent(text=str(exc))], is_error=True)
        except WorkflowNotFound as exc:  # a requestState that names no workflow of this caller and tool
            raise MCPError(types.INVALID_PARAMS, f"requestState refused: {exc}") from None
        except (StoreError, BusError) as exc:  # PostgreSQL or NATS away mid-way: an answer, never a bare -32603
            log.warning("call.unavailable", tool=params.name, error=str(exc))
            text = f"The gateway could not finish this call to {params.name!r} now: {exc}. Try again shortly."
            return error_result(text, {"error": "unavailable", "message": str(exc)})
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
            if poll is not None:
                poll.cancel()
        log.info("call.finished", tool=params.name, outcome=outcome.kind.value, workflow_id=outcome.workflow_id)
        with tracer().span("gateway.reply", attributes={"mcp_gateway.outcome": outcome.kind.value}):
            handed_back = outcome.kind in (OutcomeKind.HANDED_BACK, OutcomeKind.NO_WORKER)
            if as_task and handed_back and outcome.workflow_id is not None:
                # The task is the workflow, already recorded: at once for async and task tools, past the wait
                # budget for auto ones (whose questions before that were input-required rounds).
                return cast(types.CallToolResult, task_handle(await workflows.get(outcome.workflow_id, viewer)))
            modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
            if modern and outcome.kind is OutcomeKind.INPUT_REQUIRED and outcome.questions and outcome.workflow_id:
                return cast(types.CallToolResult, input_required(outcome.workflow_id, outcome.questions))
            return outcome_to_result(outcome)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        track_lister(ctx)
        viewer = principal(ctx)
        records = await workflows.list(viewer, limit=20)
        configured = [r.listing for r in service.registry.resources.values() if viewer.may(r.config.scopes)]
        return types.ListResourcesResult(
            resources=configured
            + [
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
        viewer = principal(ctx)
        configured = [t.listing for t in service.registry.templates if viewer.may(t.config.scopes)]
        return types.ListResourceTemplatesResult(resource_templates=[*TEMPLATES, *configured])

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        # 2025-11-25: -32002; 2026-07-28 (SEP-2164): invalid params, naming the URI in `data`.
        code = types.INVALID_PARAMS if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS else RESOURCE_NOT_FOUND
        viewer = principal(ctx)
        try:
            data = await read_workflow_resource(workflows, viewer, uri)
            if data is not None:
                return as_contents(uri, data)
            request_id = str(ctx.request_id) if ctx.request_id is not None else None
            needs = reader.scopes_of(uri)
            if needs is not None and not viewer.may(needs):  # as if config declared no such URI
                raise MCPError(code, f"unknown resource {uri!r}", {"uri": uri})
            contents = await reader.read(uri, Caller(subject=viewer.subject, request_id=request_id))
        except (WorkflowNotFound, ResourceNotFound) as exc:
            raise MCPError(code, str(exc), {"uri": uri}) from None
        except ResourceUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc), {"uri": uri}) from None
        if contents is None:
            raise MCPError(code, f"unknown resource {uri!r}", {"uri": uri})
        return types.ReadResourceResult.model_validate({"contents": contents})

    async def may_subscribe(viewer: Viewer, uri: str) -> bool:
        """Only to one's own workflows, and to resources one may read."""
        parsed = parse_uri(uri)
        if parsed is not None:
            try:
                await workflows.get(parsed[0], viewer)
            except WorkflowNotFound:
                return False
            return True
        needs = reader.scopes_of(uri)
        return needs is not None and viewer.may(needs)

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        if not await may_subscribe(principal(ctx), uri):
            raise MCPError(types.INVALID_PARAMS, f"cannot subscribe to {uri!r}: no such resource", {"uri": uri})
        feed.subscribe(ctx.session, uri)
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        feed.unsubscribe(ctx.session, str(params.uri))
        return types.EmptyResult()

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        track_lister(ctx)
        viewer = principal(ctx)
        mine = [p.listing for p in service.registry.prompts.values() if viewer.may(p.config.scopes)]
        return types.ListPromptsResult(prompts=mine)

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
        prompt = service.registry.prompts.get(params.name)
        if prompt is None or not principal(ctx).may(prompt.config.scopes):
            raise MCPError(types.INVALID_PARAMS, f"unknown prompt {params.name!r}")
        try:
            arguments = await prompt_arguments(ctx, prompt, params)
            if isinstance(arguments, types.InputRequiredResult):
                return cast(types.GetPromptResult, arguments)
            return prompt.render(arguments)
        except ValueError as exc:  # a PromptError, or an answer refused
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None

    async def complete(ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
        values: list[str] = []
        prompt = (
            service.registry.prompts.get(params.ref.name) if isinstance(params.ref, types.PromptReference) else None
        )
        if prompt is not None and principal(ctx).may(prompt.config.scopes):
            values = prompt.complete(params.argument.name, params.argument.value)
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))

    async def set_level(ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
        connection_of(ctx.session).state[LOG_LEVEL_KEY] = params.level  # 2025-11-25: the connection's threshold
        return types.EmptyResult()

    def input_schema(name: str) -> dict[str, Any] | None:
        # Lets the SDK check 2026-07-28 `Mcp-Param-*` headers without running tools/list on every call. A tool
        # the caller may not use has no schema to check against (no header mismatch tells that it exists): the
        # call then answers as an unknown tool.
        tool = service.registry.get(name)
        if tool is not None:
            return tool.listing.input_schema if current().may(tool.config.scopes) else None
        builtin = BUILTIN_TOOLS.get(name)
        return builtin.listing.input_schema if builtin is not None else None

    server = _GatewayServer(
        "mcp-gateway",
        get_tool_input_schema=input_schema,
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
        on_subscriptions_listen=_OwnSubscriptions(ListenHandler(feed.bus), principal, may_subscribe),
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )
    # logging/setLevel is a 2025-11-25 method (the 2026 wire opts in per request): registered directly, because
    # the constructor argument is deprecated.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)

    def streamed(name: str) -> bool:
        tool = service.registry.get(name)
        return tool is not None and tool.config.poll_after is not None

    server.streamed = streamed
    register_tasks(server, workflows, principal)
    # The SDK's own middleware (its OpenTelemetry span per request) runs only while tracing is on: off, it costs
    # a no-op span and its attributes on every request.
    server.middleware = [_WhileTracing(middleware) for middleware in server.middleware]
    return server


class _WhileTracing:
    """A context-tier middleware of the SDK's, skipped while the gateway does not trace."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: Callable[..., Awaitable[Any]]) -> Any:
        if tracer().enabled:
            return await self.inner(ctx, call_next)
        return await call_next(ctx)
