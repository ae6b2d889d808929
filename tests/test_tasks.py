"""The tasks extension (2026-07-28): a task-capable client gets a task handle (at once, or after input rounds),
polls tasks/get for status and the inline result, cancels with tasks/cancel. A small client-side extension plays
the client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import mcp.types as types
import pytest
from mcp import Client
from mcp.client import ClientExtension, ResultClaim
from mcp.client.extension import ClaimContext
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from pydantic import ConfigDict

from mcp_gateway.app import Gateway
from mcp_gateway.core.states import Status
from tests import workers as test_workers
from tests.conftest import Env, http_server


class TaskHandle(types.Result):
    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int
    poll_interval_ms: int


class TaskState(types.Result):
    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskAck(types.Result):
    model_config = ConfigDict(extra="allow")


class TaskParams(types.RequestParams):
    task_id: str
    input_responses: dict[str, Any] | None = None


class TaskRequest(types.Request[TaskParams, str]):
    name_param: ClassVar[str | None] = "taskId"


async def task_ack(session: ClientSession, method: str, task_id: str, **extra: Any) -> None:
    """tasks/cancel and tasks/update answer with an empty acknowledgement."""
    params = TaskParams(task_id=task_id, **extra)
    ack = await session.send_request(TaskRequest(method=method, params=params), TaskAck)
    assert (ack.model_extra or {}) == {"resultType": "complete"}  # no task envelope (taskId, status)


async def task_call(session: ClientSession, method: str, task_id: str, **extra: Any) -> TaskState:
    params = TaskParams(task_id=task_id, **extra)
    return await session.send_request(TaskRequest(method=method, params=params), TaskState)


class Tasks(ClientExtension):
    """Declares the extension; its claim polls tasks/get until the task ends."""

    identifier = "io.modelcontextprotocol/tasks"

    def __init__(self) -> None:
        self.handles: list[TaskHandle] = []
        self.polls = 0

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self.resolve)]

    async def resolve(self, handle: TaskHandle, ctx: ClaimContext) -> types.CallToolResult:
        self.handles.append(handle)
        async with asyncio.timeout(20):
            while True:
                state = await task_call(ctx.session, "tasks/get", handle.task_id)
                self.polls += 1
                if state.result is not None:
                    return types.CallToolResult.model_validate(state.result)
                if state.status in ("cancelled", "failed"):
                    text = types.TextContent(text=str(state.error))
                    return types.CallToolResult(content=[text], is_error=True)
                await asyncio.sleep(handle.poll_interval_ms / 1000 / 10)


async def test_task_handle_then_poll_to_the_result(gateway: Gateway, env: Env) -> None:
    tasks = Tasks()
    gate = test_workers.gates.setdefault(env.prefix, asyncio.Event())
    async with http_server(gateway) as url, Client(url, extensions=[tasks]) as client:
        assert client.protocol_version == "2026-07-28"
        call = asyncio.create_task(client.call_tool("long", {"seconds": 0, "gate": env.prefix}))
        async with asyncio.timeout(10):
            while not tasks.handles:  # noqa: ASYNC110 - the claim records the handle as it arrives
                await asyncio.sleep(0.01)
        handle = tasks.handles[0]
        assert handle.status == "working"
        record = await gateway.store.get(handle.task_id)
        assert record is not None  # stored durably before the handle was returned
        gate.set()
        result = await call
    assert not result.is_error
    assert result.structured_content == {"slept": 0}
    assert tasks.polls >= 1


async def test_tasks_cancel_and_foreign_ids(gateway: Gateway, env: Env) -> None:
    tasks = Tasks()
    test_workers.gates.setdefault(env.prefix, asyncio.Event())  # never set: the work waits until cancelled
    async with http_server(gateway) as url, Client(url, extensions=[tasks]) as client:
        handed = await client.session.call_tool(
            "long", {"seconds": 0, "gate": env.prefix}, allow_claimed=True, allow_input_required=True
        )
        assert isinstance(handed, TaskHandle)
        await task_ack(client.session, "tasks/cancel", handed.task_id)
        state = await task_call(client.session, "tasks/get", handed.task_id)
        assert state.status == "cancelled" and state.error is None and state.result is None
        assert state.status_message == "cancelled through tasks/cancel"
        with pytest.raises(MCPError, match="unknown task"):
            await task_call(client.session, "tasks/get", "0" * 32)
        with pytest.raises(MCPError, match="asks for no input"):
            await task_ack(client.session, "tasks/update", handed.task_id, input_responses={})
    record = await gateway.store.get(handed.task_id)
    assert record is not None and record.status is Status.CANCELLED


async def test_sync_tools_answer_directly_even_to_task_clients(gateway: Gateway) -> None:
    tasks = Tasks()
    async with http_server(gateway) as url, Client(url, extensions=[tasks]) as client:
        result = await client.call_tool("echo", {"text": "now"})
    assert result.structured_content is not None, result
    assert result.structured_content["text"] == "now", result
    assert tasks.handles == []


async def test_tasks_update_answers_a_question(gateway: Gateway) -> None:
    async with http_server(gateway) as url, Client(url, extensions=[Tasks()]) as client:
        handed = await client.session.call_tool("quiz", {}, allow_claimed=True, allow_input_required=True)
        assert isinstance(handed, TaskHandle)
        async with asyncio.timeout(10):
            while (state := await task_call(client.session, "tasks/get", handed.task_id)).status != "input_required":  # noqa: ASYNC110 - polling is how tasks work
                await asyncio.sleep(0.05)
        requests = (state.model_extra or {})["inputRequests"]
        assert requests["q1"]["params"]["message"] == "Which colour?"
        bad = {"q1": {"action": "accept", "content": {"colour": "blue"}}}
        with pytest.raises(MCPError, match="does not match"):
            await task_ack(client.session, "tasks/update", handed.task_id, input_responses=bad)
        good = {"q1": {"action": "accept", "content": {"colour": "red"}}}
        await task_ack(client.session, "tasks/update", handed.task_id, input_responses=good)
        async with asyncio.timeout(10):
            while (state := await task_call(client.session, "tasks/get", handed.task_id)).result is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert state.status == "completed"
    assert state.result["structuredContent"] == {"colour": "red"}


async def test_tasks_methods_need_the_extension(gateway: Gateway) -> None:
    async with http_server(gateway) as url, Client(url) as client:  # no tasks extension declared
        with pytest.raises(MCPError) as info:
            await task_call(client.session, "tasks/get", "0" * 32)
    assert info.value.error.code == -32021


async def poll(session: ClientSession, task_id: str, until: Callable[[TaskState], bool]) -> TaskState:
    async with asyncio.timeout(10):
        while not until(state := await task_call(session, "tasks/get", task_id)):  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.05)
    return state


async def test_tasks_update_answers_open_questions_one_at_a_time(gateway: Gateway) -> None:
    async with http_server(gateway) as url, Client(url, extensions=[Tasks()]) as client:
        handed = await client.session.call_tool("multi_input", {}, allow_claimed=True, allow_input_required=True)
        assert isinstance(handed, TaskHandle)
        state = await poll(client.session, handed.task_id, lambda s: s.status == "input_required")
        assert set((state.model_extra or {})["inputRequests"]) == {"name", "confirm"}
        name = {"name": {"action": "accept", "content": {"name": "Ada"}}}
        await task_ack(client.session, "tasks/update", handed.task_id, input_responses=name)
        state = await task_call(client.session, "tasks/get", handed.task_id)
        assert state.status == "input_required" and set((state.model_extra or {})["inputRequests"]) == {"confirm"}
        ignored = {"name": {"action": "accept", "content": {"name": "Bob"}}}  # answered already: ignored
        await task_ack(client.session, "tasks/update", handed.task_id, input_responses=ignored)
        confirm = {"confirm": {"action": "accept", "content": {"confirm": True}}}
        await task_ack(client.session, "tasks/update", handed.task_id, input_responses=confirm)
        state = await poll(client.session, handed.task_id, lambda s: s.result is not None)
    assert state.status == "completed"
    assert (
        state.result is not None and state.result["content"][0]["text"] == 'Got {"name": "Ada"} and {"confirm": true}'
    )


async def test_a_crashed_handler_is_a_failed_task_and_a_tool_failure_a_completed_one(gateway: Gateway) -> None:
    """A handler that crashes (not a ToolFailure) is a protocol-level error: the task is `failed` with a JSON-RPC
    error inline and no result; a ToolFailure is a tool error: `completed`, with an isError result."""
    async with http_server(gateway) as url, Client(url, extensions=[Tasks()]) as client:
        crashed = await client.session.call_tool("protocol_error_job", {}, allow_claimed=True)
        failed = await client.session.call_tool("failing_job", {}, allow_claimed=True)
        assert isinstance(crashed, TaskHandle) and isinstance(failed, TaskHandle)
        crash = await poll(client.session, crashed.task_id, lambda s: s.status not in ("working", "input_required"))
        tool_error = await poll(client.session, failed.task_id, lambda s: s.status not in ("working",))
    assert crash.status == "failed" and crash.result is None and crash.error is not None
    assert crash.error["code"] == types.INTERNAL_ERROR and crash.error["data"]["code"] == "worker_error"
    assert "the handler crashed" in crash.error["message"]
    assert tool_error.status == "completed" and tool_error.error is None
    assert tool_error.result is not None and tool_error.result["isError"] is True


async def test_input_rounds_then_a_task(gateway: Gateway, env: Env) -> None:
    """SEP-2663's composition: an auto tool's question comes back as an input-required round (no task yet); the
    retried call, once the work outlasts the tool's timeout, hands back a task whose result has the answer."""
    gate = test_workers.gates.setdefault(env.prefix, asyncio.Event())
    async with http_server(gateway) as url, Client(url, extensions=[Tasks()]) as client:
        first = await client.session.call_tool(
            "interview", {"gate": env.prefix}, allow_claimed=True, allow_input_required=True
        )
        assert isinstance(first, types.InputRequiredResult) and first.request_state is not None
        (key,) = first.input_requests or {}
        answer: Any = {key: {"action": "accept", "content": {"name": "Ada"}}}
        second = await client.session.call_tool(
            "interview",
            {"gate": env.prefix},
            request_state=first.request_state,
            input_responses=answer,
            allow_claimed=True,
            allow_input_required=True,
        )
        assert isinstance(second, TaskHandle) and second.status == "working"
        assert "requestState" not in (second.model_extra or {})
        gate.set()
        state = await poll(client.session, second.task_id, lambda s: s.result is not None)
    assert state.status == "completed" and state.result is not None
    assert state.result["structuredContent"] == {"name": "Ada"}


async def test_tasks_over_stdio(gateway: Gateway, env: Env) -> None:
    """The tasks extension on a stdio gateway (a subprocess, as Claude Desktop runs it): a task at once, its
    question answered with tasks/update, its result polled with tasks/get."""
    import os
    import sys

    from mcp import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_gateway", "serve", "--transport", "stdio"],
        env={**os.environ, **env.env_vars()},
    )
    async with Client(params, extensions=[Tasks()], read_timeout_seconds=30) as client:
        assert client.protocol_version == "2026-07-28"
        handed = await client.session.call_tool("quiz", {}, allow_claimed=True, allow_input_required=True)
        assert isinstance(handed, TaskHandle)
        await poll(client.session, handed.task_id, lambda s: s.status == "input_required")
        answer = {"q1": {"action": "accept", "content": {"colour": "green"}}}
        await task_ack(client.session, "tasks/update", handed.task_id, input_responses=answer)
        state = await poll(client.session, handed.task_id, lambda s: s.result is not None)
    assert state.status == "completed" and state.result is not None
    assert state.result["structuredContent"] == {"colour": "green"}
    record = await gateway.store.get(handed.task_id)
    assert record is not None and record.caller == "local"  # stdio callers are "local"
