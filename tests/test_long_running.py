"""Long work through the SDK's real Client (stdio and HTTP, both revisions): handles, the built-in workflow
tools, workflow resources and their update notifications, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError
from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway
from mcp_gateway.core.states import TERMINAL, Status
from mcp_gateway.core.workflows import ADMIN, Viewer, WorkflowNotFound
from tests import workers as test_workers
from tests.conftest import Connect, Env


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


async def reach(gateway: Gateway, workflow_id: str, wanted: set[Status], seconds: float = 15) -> Status:
    record = await gateway.workflows.wait(workflow_id, ADMIN, 0)
    async with asyncio.timeout(seconds):
        while record.status not in wanted:
            if record.status in TERMINAL:
                break
            record = await gateway.workflows.wait(workflow_id, ADMIN, 1)
    return record.status


def gate_for(env: Env) -> tuple[str, asyncio.Event]:
    return env.prefix, test_workers.gates.setdefault(env.prefix, asyncio.Event())


async def test_handle_then_status_result_and_resources(connect: Connect, env: Env) -> None:
    gate_name, gate = gate_for(env)
    async with connect() as client:
        handed = await client.call_tool("long", {"seconds": 0, "gate": gate_name})
        assert not handed.is_error
        handle = structured(handed)["workflow"]
        workflow_id, uri = handle["id"], handle["uri"]
        assert uri == f"workflow://{workflow_id}"
        assert any(isinstance(c, types.ResourceLink) and c.uri == uri for c in handed.content)

        status = structured(await client.call_tool("workflow_status", {"workflow_id": workflow_id}))
        assert status["workflow"]["status"] in ("dispatched", "running")
        listed = structured(await client.call_tool("workflow_list", {}))
        assert workflow_id in [w["id"] for w in listed["workflows"]]

        gate.set()
        done = await client.call_tool("workflow_result", {"workflow_id": workflow_id, "wait_seconds": 10})
        assert not done.is_error
        assert structured(done)["result"] == {"slept": 0}
        assert structured(done)["workflow"]["status"] == "completed"

        read = await client.read_resource(uri)
        content = read.contents[0]
        assert isinstance(content, types.TextResourceContents)
        assert json.loads(content.text)["result"] == {"slept": 0}
        history = await client.read_resource(uri + "/events")
        history_content = history.contents[0]
        assert isinstance(history_content, types.TextResourceContents)
        kinds = [e["kind"] for e in json.loads(history_content.text)["events"] if e["kind"] != "dispatched"]
        assert kinds[0] == "created" and kinds[-1] == "completed"  # the relay's batched mark lands when it lands

        templates = await client.list_resource_templates()
        assert {"workflow://{id}", "workflow://{id}/events"} <= {t.uri_template for t in templates.resource_templates}


async def test_async_mode_hands_back_at_once(connect: Connect, gateway: Gateway, env: Env) -> None:
    gate_name, gate = gate_for(env)
    async with connect() as client:
        handed = await client.call_tool("background", {"seconds": 0, "gate": gate_name})
    workflow_id = structured(handed)["workflow"]["id"]
    assert structured(handed)["workflow"]["status"] in ("pending", "dispatched")
    gate.set()
    assert await reach(gateway, workflow_id, {Status.COMPLETED}) is Status.COMPLETED


async def test_cancel_with_the_tool_reaches_the_worker(connect: Connect, gateway: Gateway, env: Env) -> None:
    gate_name, _ = gate_for(env)
    async with connect() as client:
        workflow_id = structured(await client.call_tool("long", {"seconds": 0, "gate": gate_name}))["workflow"]["id"]
        assert await reach(gateway, workflow_id, {Status.RUNNING}) is Status.RUNNING
        cancelled = structured(await client.call_tool("workflow_cancel", {"workflow_id": workflow_id}))
        assert cancelled["workflow"]["status"] == "cancelled"
    async with asyncio.timeout(10):
        while workflow_id not in test_workers.stopped:  # noqa: ASYNC110 - the worker's handler records it
            await asyncio.sleep(0.01)
    async with asyncio.timeout(10):  # the worker's late "failed" event is kept, and changes nothing
        while "failed" not in [e.kind for e in await gateway.store.events(workflow_id)]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    history = await gateway.store.events(workflow_id)
    assert [e.kind for e in history].count("cancelled") == 1
    assert any(e.kind == "failed" and e.note == "ignored: workflow already cancelled" for e in history)
    assert (await gateway.workflows.get(workflow_id, ADMIN)).status is Status.CANCELLED


async def test_client_cancellation_cancels_the_workflow(connect: Connect, gateway: Gateway, env: Env) -> None:
    gate_name, _ = gate_for(env)
    async with connect() as client:
        call = asyncio.create_task(client.call_tool("slow", {"seconds": 0, "gate": gate_name}, read_timeout_seconds=30))
        async with asyncio.timeout(10):
            while not (running := await gateway.store.list(status=Status.RUNNING)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await reach(gateway, running[0].id, {Status.CANCELLED}) is Status.CANCELLED


async def test_deadline_times_out_and_stops_the_worker(connect: Connect, gateway: Gateway, env: Env) -> None:
    gate_name, _ = gate_for(env)
    async with connect() as client:
        handed = await client.call_tool("background", {"seconds": 0, "gate": gate_name})
        workflow_id = structured(handed)["workflow"]["id"]
        assert await reach(gateway, workflow_id, {Status.TIMED_OUT}) is Status.TIMED_OUT
        result = await client.call_tool("workflow_result", {"workflow_id": workflow_id})
    assert result.is_error
    assert structured(result)["workflow"]["error"]["code"] == "deadline_exceeded"
    async with asyncio.timeout(10):
        while workflow_id not in test_workers.stopped:  # noqa: ASYNC110 - the worker's handler records it
            await asyncio.sleep(0.01)


async def test_unknown_and_foreign_workflows_are_not_found(connect: Connect, gateway: Gateway) -> None:
    async with connect() as client:
        mine = structured(await client.call_tool("echo", {"text": "x"}))["workflow_id"]
    async with connect() as client:
        for bad in ("0" * 32, "not a valid id!", "x" * 100):
            answer = await client.call_tool("workflow_status", {"workflow_id": bad})
            assert answer.is_error
            assert structured(answer)["error"] in ("not_found", "invalid_arguments")
        with pytest.raises(MCPError) as info:
            await client.read_resource("workflow://" + "0" * 32)
        assert info.value.error.code == (-32002 if client.protocol_version == "2025-11-25" else -32602)
        assert info.value.error.data == {"uri": "workflow://" + "0" * 32}
        with pytest.raises(MCPError):
            await client.read_resource("https://example.com/x")
    assert (await gateway.workflows.get(mine, ADMIN)).status is Status.COMPLETED
    with pytest.raises(WorkflowNotFound):  # the same workflow, seen by another caller, does not exist
        await gateway.workflows.get(mine, Viewer("somebody-else"))


async def test_subscribers_hear_every_change(connect: Connect, env: Env) -> None:
    gate_name, gate = gate_for(env)
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message.params.uri)

    async with connect(message_handler=on_message) as client:
        workflow_id = structured(await client.call_tool("long", {"seconds": 0, "gate": gate_name}))["workflow"]["id"]
        uri = f"workflow://{workflow_id}"
        if client.protocol_version == "2025-11-25":
            await client.subscribe_resource(uri)  # pyright: ignore[reportDeprecated]
            gate.set()
            async with asyncio.timeout(10):
                while uri not in updates:  # noqa: ASYNC110 - notifications arrive through the callback
                    await asyncio.sleep(0.01)
        else:
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                gate.set()
                async with asyncio.timeout(10):
                    async for event in subscription:
                        if getattr(event, "uri", None) == uri:
                            break
        result = await client.call_tool("workflow_result", {"workflow_id": workflow_id, "wait_seconds": 10})
        assert structured(result)["workflow"]["status"] == "completed"


async def test_sse_feed_replays_then_follows_then_ends(gateway: Gateway, env: Env) -> None:
    """GET /workflows/{id}/events: history after Last-Event-ID, then live events, ending with the workflow."""
    import httpx2

    from tests.conftest import http_server

    gate_name, gate = gate_for(env)
    outcome = await gateway.service.call(
        "long", {"seconds": 0, "gate": gate_name}, caller=Caller(subject="local"), wait=False
    )
    workflow_id = outcome.workflow_id
    assert workflow_id is not None
    assert await reach(gateway, workflow_id, {Status.RUNNING}) is Status.RUNNING
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=15) as http:
        base = url.removesuffix("/mcp")
        seen: list[tuple[str, str]] = []
        async with http.stream("GET", f"{base}/workflows/{workflow_id}/events") as response:
            assert response.status_code == 200
            event_id = kind = ""
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    event_id = line.split(":", 1)[1].strip()
                elif line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line == "" and event_id:
                    seen.append((event_id, kind))
                    event_id = ""
                    if kind == "started":
                        gate.set()  # live from here on
        kinds = [k for _, k in seen]
        assert kinds[0] == "created" and kinds[-1] == "completed"
        assert "dispatched" in kinds and "started" in kinds

        # Resume after the second event: only what came after it.
        replay = await http.get(f"{base}/workflows/{workflow_id}/events", headers={"Last-Event-ID": seen[1][0]})
        replayed = [line.split(":", 1)[1].strip() for line in replay.text.splitlines() if line.startswith("id:")]
        assert replayed == [i for i, _ in seen[2:]]

        missing = await http.get(f"{base}/workflows/{'0' * 32}/events")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        for wrong in ("abc", "9" * 40, "-1"):
            bad = await http.get(f"{base}/workflows/{workflow_id}/events", headers={"Last-Event-ID": wrong})
            assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["message"], wrong
        superscript = await http.get(f"{base}/workflows/{workflow_id}/events", params={"after": "²"})
        assert superscript.status_code == 400  # a digit to str.isdigit, not to int()


async def test_broken_stream_resumes_from_the_event_store(gateway: Gateway, env: Env) -> None:
    """2025-11-25 wire: the client's SSE stream breaks mid-call; it reconnects with Last-Event-ID (GET) and
    gets the progress and the result it missed, from the event store in PostgreSQL."""
    import httpx2

    from tests.conftest import http_server

    gate_name, gate = gate_for(env)
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "steps", "arguments": {"count": 3, "gate": gate_name}, "_meta": {"progressToken": "p"}},
    }
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=15) as http:
        first = await http.post(url, json=init, headers=headers)
        session = {**headers, "Mcp-Session-Id": first.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)

        last_id = ""
        async with http.stream("POST", url, json=call, headers=session) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    last_id = line.split(":", 1)[1].strip()
                if line.startswith("data:") and '"progress":1' in line.replace(" ", ""):
                    break  # the stream breaks here, after the first progress report
        assert last_id
        gate.set()
        async with asyncio.timeout(15):
            while not await gateway.store.list(status=Status.COMPLETED):  # noqa: ASYNC110 - polling the db
                await asyncio.sleep(0.02)

        replay: list[dict[str, Any]] = []
        get_headers = {**session, "Accept": "text/event-stream", "Last-Event-ID": last_id}
        async with http.stream("GET", url, headers=get_headers) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    replay.append(json.loads(line[5:]))
                    if replay[-1].get("id") == 2:
                        break
    progress = [m["params"]["progress"] for m in replay if m.get("method") == "notifications/progress"]
    assert progress == [2, 3]
    assert replay[-1]["result"]["structuredContent"] == {"count": 3}
