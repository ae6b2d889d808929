"""The MCP surface through the SDK's real `Client`: stdio and streamable HTTP, both protocol revisions.

The stdio gateway runs in a subprocess (as Claude Desktop runs it) beside the in-process gateway of the
`gateway` fixture: two gateway processes on one NATS and one PostgreSQL, like a real deployment.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from mcp_gateway.app import Gateway
from mcp_gateway.core.states import Status
from tests.conftest import MODES, Connect, error_detail


async def raw_post(url: str, headers: dict[str, str], body: dict[str, Any]) -> str:
    """POST a JSON-RPC body with exactly these headers (HTTP clients refuse some we send on purpose); the whole
    response, status line first."""
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [
        "POST /mcp HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    async with asyncio.timeout(10):
        response = (await reader.read()).decode()
    writer.close()
    return response


def workflow_id(result: types.CallToolResult) -> str:
    assert result.meta is not None
    value = result.meta["io.mcp-gateway/workflowId"]
    assert isinstance(value, str)
    return value


async def test_list_tools_with_schemas(connect: Connect) -> None:
    async with connect() as client:
        assert client.protocol_version in MODES.values()
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"echo", "classify_ticket", "lookup_order", "refund_order", "steps"} <= tools.keys()
    lookup = tools["lookup_order"]
    assert lookup.input_schema["required"] == ["order_id"]
    assert lookup.input_schema["additionalProperties"] is False  # closed by default
    assert lookup.output_schema is not None and "items" in lookup.output_schema["properties"]
    assert lookup.annotations is not None and lookup.annotations.read_only_hint is True
    refund = tools["refund_order"].output_schema  # mode auto: the result, or a workflow handle
    assert refund is not None and refund["anyOf"][0]["properties"]["status"] == {"type": "string", "const": "refunded"}
    assert refund["anyOf"][1]["required"] == ["workflow"]
    assert {"workflow_status", "workflow_result", "workflow_cancel", "workflow_list"} <= tools.keys()


async def test_call_end_to_end_with_progress(connect: Connect, gateway: Gateway) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect() as client:
        result = await client.call_tool(
            "refund_order",
            {"order_id": "ORD-1002", "amount_cents": 100, "reason": "late delivery", "step_delay": 0.01},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert result.structured_content["status"] == "refunded"
    assert result.structured_content["amount_cents"] == 100
    text = result.content[0]
    assert isinstance(text, types.TextContent) and '"refunded"' in text.text
    assert [p for p, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1] == (4, 4, "done")

    wid = workflow_id(result)
    record = await gateway.store.get(wid)
    assert record is not None and record.status is Status.COMPLETED
    assert record.state.result == result.structured_content
    history = await gateway.store.events(wid)
    kinds = [e.kind for e in history]
    assert kinds[0] == "created"
    assert kinds.count("progress") == 4 and kinds.count("completed") == 1
    assert history[-1].status == "completed"


async def test_error_paths(connect: Connect, gateway: Gateway) -> None:
    async with connect() as client:
        invalid = await client.call_tool("lookup_order", {"order_id": 7, "colour": "red"})
        failed = await client.call_tool("lookup_order", {"order_id": "ORD-9999"})
        bad_output = await client.call_tool("bad_output", {})
        timeout = await client.call_tool("slow", {"seconds": 2})

    for result in (invalid, failed, bad_output, timeout):  # TypeScript clients refuse one off the output schema
        assert result.is_error and result.structured_content is None, result
    violations = error_detail(invalid)["violations"]
    assert {v["path"] for v in violations} == {"/", "/order_id"}
    assert "io.mcp-gateway/workflowId" not in (invalid.meta or {})  # nothing was recorded
    assert "/order_id" in str(invalid.content[0])

    assert error_detail(failed)["error"] == "order_not_found"
    assert "ORD-9999" in str(failed.content[0]) and "order_not_found" in str(failed.content[0])

    assert error_detail(bad_output)["error"] == "invalid_output"

    assert error_detail(timeout)["error"] == "still_running"
    assert workflow_id(timeout) in str(timeout.content[0])

    records = await gateway.store.list(limit=10)
    assert sorted(r.tool for r in records) == ["bad_output", "lookup_order", "slow"]  # not the invalid call
    statuses = {r.tool: r.status for r in records}
    assert statuses["lookup_order"] is Status.FAILED
    assert statuses["bad_output"] is Status.FAILED


async def test_content_blocks_from_the_worker(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("media", {})
        broken = await client.call_tool("media", {"broken": True})
    assert not result.is_error, result.content
    kinds = [type(block).__name__ for block in result.content]
    assert kinds == ["TextContent", "ImageContent", "AudioContent", "EmbeddedResource", "ResourceLink"]
    image = result.content[1]
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png" and image.data
    embedded = result.content[3]
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(embedded.resource, types.TextResourceContents) and embedded.resource.text == "embedded text"
    assert broken.is_error and broken.structured_content is None
    assert error_detail(broken)["error"] == "invalid_content"
    assert "content[0]" in str(error_detail(broken)["details"])


async def test_prompts_and_completion(connect: Connect) -> None:
    async with connect() as client:
        listed = {p.name for p in (await client.list_prompts()).prompts}
        simple = await client.get_prompt("test_simple_prompt")
        with_args = await client.get_prompt("test_prompt_with_arguments", {"arg1": "one", "arg2": "two"})
        embedded = await client.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://x"})
        completion = await client.complete(
            types.PromptReference(name="test_prompt_with_arguments"), {"name": "arg1", "value": "te"}
        )
        with pytest.raises(MCPError, match="needs argument"):
            await client.get_prompt("test_prompt_with_arguments", {"arg1": "one"})
        with pytest.raises(MCPError, match="unknown prompt"):
            await client.get_prompt("no_such_prompt")
    assert {"test_simple_prompt", "test_prompt_with_image"} <= listed
    assert isinstance(simple.messages[0].content, types.TextContent)
    assert "arg1='one', arg2='two'" in str(with_args.messages[0].content)
    resource = embedded.messages[0].content
    assert isinstance(resource, types.EmbeddedResource) and str(resource.resource.uri) == "test://x"
    assert completion.completion.values == ["test", "testValue1"]


async def test_resources_from_config_and_from_a_worker(connect: Connect) -> None:
    async with connect() as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        text = (await client.read_resource("test://static-text")).contents[0]
        binary = (await client.read_resource("test://static-binary")).contents[0]
        templated = (await client.read_resource("test://template/123/data")).contents[0]  # a worker answers
        with pytest.raises(MCPError) as info:
            await client.read_resource("test://nonexistent")
    assert {"test://static-text", "test://static-binary"} <= listed
    assert "test://template/{id}/data" in templates
    assert isinstance(text, types.TextResourceContents) and text.text.startswith("This is the content")
    assert isinstance(binary, types.BlobResourceContents) and binary.mime_type == "image/png"
    assert isinstance(templated, types.TextResourceContents) and '"id": "123"' in templated.text
    assert info.value.error.data == {"uri": "test://nonexistent"}


async def test_worker_log_lines_reach_the_client(connect: Connect) -> None:
    lines: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        lines.append(str(params.data))

    async with connect(logging_callback=on_log, log_level="debug") as client:
        result = await client.call_tool("test_tool_with_logging", {})
    assert not result.is_error
    assert lines == ["Tool execution started", "Tool processing data", "Tool execution completed"]


async def test_header_values_are_trimmed(gateway: Any) -> None:
    """2026-07-28: `Mcp-Name: "  echo  "` names the tool echo (HTTP field values exclude surrounding whitespace)."""
    from tests.conftest import http_server

    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "echo",
            "arguments": {"text": "x"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "  echo  ",
    }
    async with http_server(gateway) as url:
        response = await raw_post(url, headers, body)
    assert response.startswith("HTTP/1.1 200"), response[:300]
    assert '"structuredContent"' in response and '"text": "x"' in response.replace('"text":"x"', '"text": "x"')


async def test_a_tool_that_needs_a_capability_refuses_clients_without_it(connect: Connect, gateway: Gateway) -> None:
    """`requires: [sampling]`: a client that did not declare sampling is refused (-32021, naming it) before
    anything is recorded; one that did is served."""
    async with connect() as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("test_missing_capability", {})
    assert info.value.error.code == -32021
    assert info.value.error.data == {"requiredCapabilities": {"sampling": {}}}
    assert await gateway.store.list() == []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="Hi there"), model="m")

    async with connect(sampling_callback=sample) as client:
        result = await client.call_tool("test_missing_capability", {})
    assert not result.is_error and isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "Hi there"


async def test_a_prompt_asks_for_the_arguments_left_out(connect: Connect) -> None:
    """An argument with `ask`: elicited on 2025-11-25, an input-required round on 2026-07-28."""
    shown: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        shown.append(params.message)
        return types.ElicitResult(action="accept", content={"context": "the weather"})

    async with connect(elicitation_callback=answer) as client:
        asked = await client.get_prompt("test_input_required_result_prompt")
        given = await client.get_prompt("test_input_required_result_prompt", {"context": "tides"})
    assert shown == ["What context should the prompt use?"]
    for result, context in ((asked, "the weather"), (given, "tides")):
        assert isinstance(result.messages[0].content, types.TextContent)
        assert result.messages[0].content.text == f"Answer with this context in mind: {context}"


async def test_param_headers_are_checked(gateway: Gateway) -> None:
    """SEP-2243 over HTTP: the SDK client mirrors `x-mcp-header` arguments and is served; a request whose
    Mcp-Param header disagrees with its body, or lacks it, is refused (HTTP 400, -32020) and records nothing."""
    from mcp import Client

    from tests.conftest import http_server

    async with http_server(gateway) as url:
        async with Client(url) as client:
            result = await client.call_tool("test_custom_headers", {"region": "eu-west", "priority": 2})
        assert not result.is_error, result.content
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "test_custom_headers", "arguments": {"region": "eu-west"}, "_meta": meta},
        }
        base = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "test_custom_headers",
        }
        for extra in ({"Mcp-Param-Region": "us-east"}, {}):
            response = await raw_post(url, {**base, **extra}, body)
            assert response.startswith("HTTP/1.1 400"), response[:300]
            assert '"code":-32020' in response.replace(" ", "") and "Mcp-Param-Region" in response
    assert len(await gateway.store.list()) == 1  # the SDK client's call only


async def test_the_chosen_log_level_filters_worker_lines(connect: Connect) -> None:
    """`logging/setLevel warning` (2025-11-25, kept per connection) or a per-request warning level (2026-07-28):
    the worker's info lines are not relayed."""
    lines: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        lines.append(str(params.data))

    async with connect(logging_callback=on_log, log_level="warning") as client:
        if client.protocol_version == "2025-11-25":
            await client.session.set_logging_level("warning")  # pyright: ignore[reportDeprecated]
        result = await client.call_tool("test_tool_with_logging", {})
        assert not result.is_error
    assert lines == []


async def test_subscriptions_belong_to_the_connection_not_the_request() -> None:
    """The SDK hands each request a new session proxy: a subscription made through one is ended through
    another, and list changes reach each listing connection once."""
    from mcp_gateway.core.changes import Change, Waiters
    from mcp_gateway.core.states import WorkflowState
    from mcp_gateway.core.supervisor import Supervisor
    from mcp_gateway.registry import Registry, load_registry
    from mcp_gateway.server._resources import ResourceFeed
    from tests.conftest import ROOT

    class Connection:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send_resource_updated(self, uri: str) -> None:
            self.sent.append(uri)

        async def send_tool_list_changed(self) -> None:
            self.sent.append("tools")

    class Proxy:  # what a request's ctx.session is: a new object each time, over the same connection
        def __init__(self, connection: Connection) -> None:
            self._connection = connection

    kept, ended = Connection(), Connection()
    waiters = Waiters()
    async with Supervisor() as supervisor, ResourceFeed(waiters, supervisor) as feed:
        feed.subscribe(Proxy(kept), "workflow://w1")  # type: ignore[arg-type]
        feed.subscribe(Proxy(ended), "workflow://w1")  # type: ignore[arg-type]
        feed.unsubscribe(Proxy(ended), "workflow://w1")  # type: ignore[arg-type]
        for _ in range(2):
            feed.listed(Proxy(kept))  # type: ignore[arg-type]
        waiters.deliver(Change("w1", WorkflowState(Status.RUNNING, version=1)))
        await feed.lists_changed(Registry(), load_registry(ROOT / "config" / "tools"))
        async with asyncio.timeout(5):
            while "workflow://w1" not in kept.sent:  # noqa: ASYNC110 - the feed sends from its own task
                await asyncio.sleep(0.01)
    assert kept.sent.count("workflow://w1") == 1 and kept.sent.count("tools") == 1
    assert ended.sent == []
