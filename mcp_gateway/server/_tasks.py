"""The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663, 2026-07-28 wire): the task is the workflow.

A failure the tool reports (`ToolFailure`) is a tool error: the task is `completed` and its inline result has
`isError`. A task is `failed`, with a JSON-RPC error inline, when the tool did not run as it should (a handler
crashed, a worker broke the contract: `SYSTEM_FAILURES`) or the gateway ended it (deadline passed, dead-lettered).

A client that declares the extension gets, for a tool in `async` or `task` mode, a task handle as soon as the
workflow is recorded. An `auto` tool's call waits up to the tool's timeout as for any client (the result
inline; questions as input-required rounds), and becomes a task when that time runs out: SEP-2663's
composition of input rounds, then a task. The client polls `tasks/get` (status, latest progress message, and
the result or error inline once done), answers the open questions with `tasks/update` (one at a time, or all
at once), and cancels with `tasks/cancel`. Task ids are workflow ids: unguessable, and bound to their caller
(another caller's id is "not found").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_gateway_worker.contract import SYSTEM_FAILURES

from mcp_gateway.core.service import outcome_from_state
from mcp_gateway.core.states import Status, WorkflowState
from mcp_gateway.core.workflows import AnswerRefused, Viewer, WorkflowNotFound, Workflows
from mcp_gateway.server._input import CLIENT_CAPABILITIES, answers_from, input_requests
from mcp_gateway.server._results import outcome_to_result
from mcp_gateway.store import WorkflowRecord

__all__ = ["TASKS_EXTENSION", "client_wants_tasks", "register_tasks", "task_handle"]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 500
MISSING_CAPABILITY = -32021
"""JSON-RPC error (2026-07-28) for a request that needs a capability the client did not declare."""
HEADER_MISMATCH = -32020

_TASK_STATUS = {
    Status.PENDING: "working",
    Status.DISPATCHED: "working",
    Status.RUNNING: "working",
    Status.INPUT_REQUIRED: "input_required",
    Status.COMPLETED: "completed",
    Status.FAILED: "completed",  # a tool's failure is a finished task whose result is an isError result (but
    # see SYSTEM_FAILURES)
    Status.TIMED_OUT: "failed",
    Status.DEAD_LETTERED: "failed",
    Status.CANCELLED: "cancelled",
}


class TaskParams(types.RequestParams):
    task_id: str


class TaskUpdateParams(types.RequestParams):
    task_id: str
    input_responses: dict[str, Any] | None = None


def client_wants_tasks(ctx: ServerRequestContext[Any]) -> bool:
    """Whether this request's client declared the tasks extension (2026-07-28 requests carry their capabilities)."""
    capabilities = (ctx.meta or {}).get(CLIENT_CAPABILITIES)
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


_WAITS_FOR = {"sampling": "waiting for the client's model (sampling)", "roots": "waiting for the client's roots"}


def _task_status(state: WorkflowState) -> str:
    if state.status is Status.FAILED and (state.error or {}).get("code") in SYSTEM_FAILURES:
        return "failed"
    return _TASK_STATUS[state.status]


def _jsonrpc_error(state: WorkflowState) -> dict[str, Any]:
    """A failed task's error, in JSON-RPC shape: the gateway's error (`{code, message, ...}`) goes in `data`."""
    error = state.error or {"code": state.status.value, "message": f"the workflow ended {state.status.value}"}
    code = types.REQUEST_TIMEOUT if error.get("code") in ("timed_out", "deadline_exceeded") else types.INTERNAL_ERROR
    return {"code": code, "message": str(error.get("message") or error.get("code")), "data": error}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def task_handle(record: WorkflowRecord, *, inline: bool = False) -> dict[str, Any]:
    """The wire form of a workflow as a task; with `inline`, the result or error of an ended one."""
    s = record.state
    ttl_ms = max(int((record.deadline - record.created_at).total_seconds() * 1000), 0)
    task: dict[str, Any] = {
        "resultType": "task",
        "taskId": record.id,
        "status": _task_status(s),
        "createdAt": _iso(record.created_at),
        "lastUpdatedAt": _iso(record.updated_at),
        "ttlMs": ttl_ms,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if s.message:
        task["statusMessage"] = s.message
    if s.status is Status.CANCELLED and s.error is not None:
        task["statusMessage"] = s.error.get("message") or s.error.get("code")
    asked = [q for q in s.questions if q.get("by") != "admin"]
    if s.status is Status.INPUT_REQUIRED and asked:
        task["statusMessage"] = "; ".join(_WAITS_FOR.get(str(q.get("kind")), str(q["message"])) for q in asked)
        task["inputRequests"] = input_requests(asked)
    if inline and task["status"] == "completed":
        result = outcome_to_result(outcome_from_state(record.tool, record.id, s, "sync"))
        task["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    elif inline and task["status"] == "failed":
        task["error"] = _jsonrpc_error(s)
    return task


def register_tasks(
    server: Server[Any], workflows: Workflows, principal: Callable[[ServerRequestContext[Any]], Viewer]
) -> None:
    """Serve `tasks/get`, `tasks/update`, `tasks/cancel` (each on the requester's own tasks), and advertise the
    extension."""

    def require_extension(ctx: ServerRequestContext[Any]) -> None:
        if not client_wants_tasks(ctx):
            raise MCPError(
                MISSING_CAPABILITY,
                f"tasks/* needs the {TASKS_EXTENSION} extension in the client's capabilities",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )

    def require_matching_name(ctx: ServerRequestContext[Any], task_id: str) -> None:
        """SEP-2243: on HTTP, the `Mcp-Name` header of tasks/* must name the task of the body."""
        headers = getattr(ctx.request, "headers", None)
        named = headers.get("mcp-name") if headers is not None else None
        if named is not None and named.strip() != task_id:
            raise MCPError(HEADER_MISMATCH, "Mcp-Name header does not match the request body's taskId")

    async def lookup(task_id: str, viewer: Viewer) -> WorkflowRecord:
        try:
            return await workflows.get(task_id, viewer)
        except WorkflowNotFound as exc:
            raise MCPError(types.INVALID_PARAMS, f"unknown task {task_id!r} (or another caller's)") from exc

    async def get(ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
        require_extension(ctx)
        require_matching_name(ctx, params.task_id)
        return {**task_handle(await lookup(params.task_id, principal(ctx)), inline=True), "resultType": "complete"}

    async def cancel(ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
        require_extension(ctx)
        require_matching_name(ctx, params.task_id)
        viewer = principal(ctx)
        await lookup(params.task_id, viewer)
        await workflows.cancel(params.task_id, viewer, "cancelled through tasks/cancel")
        return {"resultType": "complete"}  # an acknowledgement: tasks/get tells the outcome

    async def update(ctx: ServerRequestContext[Any], params: TaskUpdateParams) -> dict[str, Any]:
        require_extension(ctx)
        require_matching_name(ctx, params.task_id)
        viewer = principal(ctx)
        record = await lookup(params.task_id, viewer)
        open_ids = [q["id"] for q in record.state.questions if q.get("by") != "admin"]
        if record.status is not Status.INPUT_REQUIRED or not open_ids:
            raise MCPError(
                types.INVALID_PARAMS, f"task {params.task_id!r} is {record.status.value}; it asks for no input"
            )
        given = answers_from(params.input_responses)
        matched = [key for key in given if key in open_ids]  # others are ignored (SEP-2322): the task shows
        try:  # what it still asks on the next tasks/get
            await workflows.answer_all(params.task_id, viewer, {key: given[key].pair for key in matched})
        except AnswerRefused as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from exc
        return {"resultType": "complete"}

    server.add_request_handler("tasks/get", TaskParams, get)
    server.add_request_handler("tasks/cancel", TaskParams, cancel)
    server.add_request_handler("tasks/update", TaskUpdateParams, update)
    server.extensions[TASKS_EXTENSION] = {}
