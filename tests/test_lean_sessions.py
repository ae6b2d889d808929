"""The lean path inside 2025-11-25 sessions (`mcp_gateway/server/_lean_sessions.py`): the same JSON-RPC answers
as the SDK's transport, the SDK's session rules (who may use a session, cancellation, the session's end, its idle
countdown), and the SDK's SSE with stored events once a call sends a notification or runs silent.

Each test opens sessions by raw HTTP on two apps of one gateway, one with the lean route and one without.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mcp_gateway.app import Gateway
from mcp_gateway.core.states import Status
from mcp_gateway.server import _lean
from mcp_gateway.server._lean import LeanRoute
from tests import workers
from tests.test_lean_http import ACCEPT, HEX_ID, Reply, exchange, lean_routes, on_and_off, parse_head, post

__all__ = ["lean_routes"]  # the fixture, shared with test_lean_http

WIRE = "2025-11-25"
JSON_LINES = ["Content-Type: application/json", ACCEPT]


def rpc(method: str, params: dict[str, Any] | None = None, *, request_id: Any = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def notification(method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode()


def in_session(session: str, *extra: str) -> list[str]:
    return [*JSON_LINES, f"MCP-Protocol-Version: {WIRE}", f"Mcp-Session-Id: {session}", *extra]


async def open_session(url: str, capabilities: dict[str, Any] | None = None, *extra: str) -> str:
    """initialize and notifications/initialized, as the SDK's client in legacy mode sends them: the session id."""
    init = rpc(
        "initialize",
        {"protocolVersion": WIRE, "capabilities": capabilities or {}, "clientInfo": {"name": "lean", "version": "1"}},
        request_id=0,
    )
    opened = await exchange(url, [*JSON_LINES, *extra], init)
    session = opened.header("mcp-session-id")
    assert opened.status == 200 and session is not None, opened
    ready = await exchange(url, in_session(session, *extra), notification("notifications/initialized", {}))
    assert ready.status == 202, ready
    return session


def events(body: bytes) -> list[dict[str, str]]:
    """The SSE events of a body (pings left out): their fields."""
    out: list[dict[str, str]] = []
    for frame in body.decode().split("\r\n\r\n"):
        fields: dict[str, str] = {}
        for line in frame.split("\r\n"):
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if fields:
            out.append(fields)
    return out


def messages(reply: Reply) -> list[Any]:
    """The JSON-RPC messages of a reply, JSON or SSE (a priming event, with no data, left out); ids replaced."""
    text = HEX_ID.sub("<id>", reply.body.decode())
    if reply.header("content-type") == "application/json":
        return [json.loads(text)] if text else []
    return [json.loads(e["data"]) for e in events(text.encode()) if e.get("data")]


def call(tool: str, arguments: dict[str, Any], *, request_id: Any = 1, meta: Any = None) -> bytes:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return rpc("tools/call", params, request_id=request_id)


HOT: list[tuple[str, bytes]] = [
    ("echo", call("echo", {"text": "hello"})),
    ("lookup_order", call("lookup_order", {"order_id": "ORD-1001"})),
    ("a failing tool", call("explode", {})),
    ("a crashing tool", call("explode", {"crash": True})),
    ("invalid arguments", call("echo", {"text": 42})),
    ("an unknown tool", call("no_such_tool", {})),
    ("a tool out of the caller's scopes", call("ledger", {"note": "x"})),
    ("a task-only tool without the tasks capability", call("failing_job", {})),
    ("params without a name", rpc("tools/call", {"arguments": {}})),
    ("tools/list", rpc("tools/list", {})),
    ("tools/list without params", rpc("tools/list")),
    ("a string id", rpc("tools/list", {}, request_id="abc")),
]
COLD: list[tuple[str, bytes]] = [
    ("a progress token", call("echo", {"text": "hello"}, meta={"progressToken": "p1"})),
    ("another method", rpc("prompts/list", {})),
    ("a notification", notification("notifications/cancelled", {"requestId": 99})),
    ("a batch", b"[" + rpc("tools/list", {}) + b"]"),
    ("bad JSON", b'{"jsonrpc": "2.0", "id": 1,'),
    ("a null id", rpc("tools/list", {}, request_id=None)),
]


async def test_session_calls_answer_as_the_sdk_does(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """The same status and JSON-RPC messages on both apps; the hot cases answered by the lean route as JSON (the
    SDK writes SSE), the rest handed over and answered by the SDK."""
    token, _ = await gateway.tokens.create("session-tester", ("support",))
    auth = f"Authorization: Bearer {token}"
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        sessions = {url: await open_session(url, None, auth) for url in (lean_url, sdk_url)}
        for name, body, hot in [*((n, b, True) for n, b in HOT), *((n, b, False) for n, b in COLD)]:
            served, handed = route.served, route.handed_over
            lean = await exchange(lean_url, in_session(sessions[lean_url], auth), body)
            sdk = await exchange(sdk_url, in_session(sessions[sdk_url], auth), body)
            assert (route.served - served, route.handed_over - handed) == ((1, 0) if hot else (0, 1)), name
            if hot:
                assert lean.status == sdk.status == 200, name
                assert lean.header("content-type") == "application/json", name
                assert sdk.header("content-type") == "text/event-stream", name
                assert lean.header("mcp-session-id") == sessions[lean_url], name
                assert messages(lean) == messages(sdk) and len(messages(lean)) == 1, name
            else:  # the same but the event store's ids
                assert (lean.status, lean.header("content-type"), messages(lean)) == (
                    sdk.status,
                    sdk.header("content-type"),
                    messages(sdk),
                ), name
        echo = messages(await exchange(lean_url, in_session(sessions[lean_url], auth), call("echo", {"text": "x"})))
        assert echo[0]["result"]["structuredContent"]["text"] == "x"
        assert "serverInfo" not in json.dumps(echo)  # no 2026-07-28 stamp on the 2025 wire


async def test_what_the_sdk_must_answer_is_handed_over(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """An unknown session, another caller's session, no session id: the SDK answers, the same on both apps. A session
    whose client sent `initialize` but not yet `notifications/initialized` is served, by the SDK's kernel as by the
    SDK (its gate is `initialize`), and so is one whose client can be asked (its questions go on the call's own
    stream when there are any)."""
    alice, _ = await gateway.tokens.create("alice", ("support",))
    bob, _ = await gateway.tokens.create("bob", ("support",))
    body = call("echo", {"text": "hello"})
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        replies: dict[str, list[Reply]] = {}
        for url in (lean_url, sdk_url):
            mine = await open_session(url, None, f"Authorization: Bearer {alice}")
            asking = await open_session(url, {"elicitation": {}}, f"Authorization: Bearer {alice}")
            opened = await exchange(
                url,
                JSON_LINES,
                rpc(
                    "initialize",
                    {"protocolVersion": WIRE, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}},
                ),
            )
            uninitialized = opened.header("mcp-session-id")
            assert uninitialized is not None
            handed, served = route.handed_over, route.served
            replies[url] = [
                await exchange(url, in_session("0" * 32, f"Authorization: Bearer {alice}"), body),
                await exchange(url, in_session(mine, f"Authorization: Bearer {bob}"), body),
                await exchange(url, in_session(uninitialized), body),
                await exchange(url, in_session(asking, f"Authorization: Bearer {alice}"), body),
                await exchange(url, [*JSON_LINES, f"MCP-Protocol-Version: {WIRE}"], body),
            ]
            if url == lean_url:
                assert (route.handed_over - handed, route.served - served) == (3, 2)
        lean, sdk = replies[lean_url], replies[sdk_url]
        assert [r.status for r in lean] == [404, 404, 200, 200, 400]
        assert [r.comparable() for r in lean[:2]] == [r.comparable() for r in sdk[:2]]
        assert [messages(r) for r in lean[2:]] == [messages(r) for r in sdk[2:]]
        assert [r.header("content-type") for r in lean[2:4]] == ["application/json"] * 2


async def test_a_call_that_logs_turns_sse_with_the_sdks_events(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """A worker's log line is relayed as it comes: the lean reply commits SSE as the SDK's does, a priming event
    (with the retry interval) and every event with an id from the event store."""
    body = call("steps", {"count": 2, "log": "half way"})
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        shapes = []
        for url in (lean_url, sdk_url):
            session = await open_session(url)
            reply = await exchange(url, in_session(session), body)
            assert reply.status == 200 and reply.header("content-type") == "text/event-stream"
            assert reply.header("mcp-session-id") == session
            sent = events(reply.body)
            assert all(e.get("id") for e in sent), sent
            headers = [(k, v) for k, v in reply.headers if k not in ("date", "mcp-session-id")]
            shapes.append((headers, [sorted(e) for e in sent], [e.get("retry") for e in sent], messages(reply)))
        assert shapes[0] == shapes[1]
        log, result = shapes[0][3]
        assert log["method"] == "notifications/message" and log["params"]["data"] == "half way"
        assert result["result"]["structuredContent"] == {"count": 2}
        assert route.served == 1


async def test_a_silent_session_call_past_the_window_pings_then_answers(
    gateway: Gateway, lean_routes: list[LeanRoute], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler silent past the window (a tenth of a second here) commits SSE: the priming event, pings, the
    result."""
    monkeypatch.setattr(_lean, "SSE_DEFERRAL", 0.1)
    workers.gates["session-silent"] = asyncio.Event()
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        session = await open_session(lean_url)
        reader, writer = await post(
            lean_url, in_session(session), call("steps", {"count": 1, "gate": "session-silent"})
        )
        try:
            async with asyncio.timeout(30):
                status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readuntil(b": ping")
                workers.gates["session-silent"].set()
                body = await reader.read()  # chunked: `events` passes over the chunk sizes
        finally:
            writer.close()
        assert status == 200 and ("content-type", "text/event-stream") in headers
        assert messages(Reply(status, headers, body))[-1]["result"]["structuredContent"] == {"count": 1}
        assert route.served == 1


async def _started(before: set[str]) -> str:
    async with asyncio.timeout(30):
        while not set(workers.executions) - before:  # noqa: ASYNC110 - the worker has started
            await asyncio.sleep(0.02)
    (workflow_id,) = set(workers.executions) - before
    return workflow_id


async def _ends(gateway: Gateway, workflow_id: str, status: Status) -> None:
    async with asyncio.timeout(30):
        while (await gateway.workflows.get(workflow_id, gateway.principals.local)).status is not status:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _cancelled_or_ended(
    gateway: Gateway, url: str, gate: str, end: Callable[[str, str], Awaitable[None]]
) -> tuple[list[tuple[str, str]], list[Any]]:
    """A gated `steps` call (id 7) in a new session of `url`, `end(session, workflow)` once it runs: the reply's
    headers (but the date and the session id) and messages, once its workflow is cancelled."""
    workers.gates[gate] = asyncio.Event()
    before = set(workers.executions)
    session = await open_session(url)
    reader, writer = await post(url, in_session(session), call("steps", {"count": 2, "gate": gate}, request_id=7))
    try:
        workflow_id = await _started(before)
        await end(session, workflow_id)
        async with asyncio.timeout(30):
            raw = await reader.read()
    finally:
        writer.close()
        workers.gates[gate].set()
    await _ends(gateway, workflow_id, Status.CANCELLED)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    assert status == 200
    kept = [(k, v) for k, v in headers if k not in ("date", "mcp-session-id")]
    return kept, messages(Reply(status, headers, body))


async def test_notifications_cancelled_cancels_a_lean_call(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """The client's `notifications/cancelled` (a string id names an int one, as the SDK correlates them) cancels
    the call and its workflow; the reply is the SDK's 2025 answer to a cancelled request, as the SDK writes it. A
    malformed one (with an id: a request to the SDK) cancels nothing."""
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        replies = []
        for url in (lean_url, sdk_url):

            async def cancel(session: str, workflow_id: str, url: str = url) -> None:
                bad = json.loads(notification("notifications/cancelled", {"requestId": 7})) | {"id": 99}
                await exchange(url, in_session(session), json.dumps(bad).encode())
                await asyncio.sleep(0.2)
                still = await gateway.workflows.get(workflow_id, gateway.principals.local)
                assert still.status is Status.RUNNING
                cancelled = notification("notifications/cancelled", {"requestId": "7", "reason": "changed my mind"})
                assert (await exchange(url, in_session(session), cancelled)).status == 202

            replies.append(await _cancelled_or_ended(gateway, url, f"cancel-{len(replies)}", cancel))
        assert replies[0] == replies[1]
        headers, reply = replies[0]
        assert ("content-type", "text/event-stream") in headers
        assert reply == [{"jsonrpc": "2.0", "id": 7, "error": {"code": -32800, "message": "Request cancelled"}}]
        assert route.served == 1


async def _delete(url: str, session: str) -> int:
    reader, writer = await post(
        url, [f"Mcp-Session-Id: {session}", f"MCP-Protocol-Version: {WIRE}"], b"", method="DELETE"
    )
    try:
        async with asyncio.timeout(30):
            return parse_head((await reader.read()).partition(b"\r\n\r\n")[0])[0]
    finally:
        writer.close()


async def test_the_sessions_end_cancels_its_lean_calls(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """DELETE of the session cancels its calls in flight, as the end of the SDK's session loop does; their streams
    end without a reply, as the SDK's do; the session is gone."""
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        replies = []
        for url in (lean_url, sdk_url):

            async def delete(session: str, workflow_id: str, url: str = url) -> None:
                assert await _delete(url, session) == 200

            replies.append(await _cancelled_or_ended(gateway, url, f"delete-{len(replies)}", delete))
        assert replies[0] == replies[1]
        headers, reply = replies[0]
        assert ("content-type", "text/event-stream") in headers and reply == []
        assert route.served == 1
        assert route.sessions is not None
        assert not route.sessions._in_flight and not route.sessions._asked  # pyright: ignore[reportPrivateUsage]


async def test_a_client_that_leaves_does_not_cancel_a_session_call(
    gateway: Gateway, lean_routes: list[LeanRoute]
) -> None:
    """2025-11-25: closing the connection is no cancellation; the call, and the session's idle countdown held
    meanwhile, run on to the end."""
    workers.gates["session-leave"] = asyncio.Event()
    before = set(workers.executions)
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        session = await open_session(lean_url)
        assert route.sessions is not None
        transport = route.sessions.manager._server_instances[session]  # pyright: ignore[reportPrivateUsage]
        assert transport.idle_scope is not None and transport.idle_scope.deadline != math.inf
        _, writer = await post(lean_url, in_session(session), call("steps", {"count": 2, "gate": "session-leave"}))
        workflow_id = await _started(before)
        assert transport.idle_scope.deadline == math.inf  # held while the lean call is served
        writer.close()
        await asyncio.sleep(0.2)
        assert (await gateway.workflows.get(workflow_id, gateway.principals.local)).status is Status.RUNNING
        workers.gates["session-leave"].set()
        await _ends(gateway, workflow_id, Status.COMPLETED)
        async with asyncio.timeout(10):
            while transport.idle_scope.deadline == math.inf:  # noqa: ASYNC110 - released when the call ends
                await asyncio.sleep(0.02)


async def test_a_lost_stream_resumes_with_last_event_id(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """A committed lean stream is resumable as the SDK's is: the client that lost it after the log line reopens it
    with GET and Last-Event-ID, and gets the result as it comes."""
    workers.gates["session-resume"] = asyncio.Event()
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        session = await open_session(lean_url)
        body = call("steps", {"count": 2, "gate": "session-resume", "log": "before the gate"}, request_id=5)
        reader, writer = await post(lean_url, in_session(session), body)
        async with asyncio.timeout(30):
            await reader.readuntil(b"\r\n\r\n")  # the head
            seen = b""
            while b"notifications/message" not in seen:
                seen += await reader.read(4096)
        writer.close()
        log_event = next(e for e in events(seen) if "notifications/message" in e.get("data", ""))
        resume = ["Accept: text/event-stream", *in_session(session)[2:], f"Last-Event-ID: {log_event['id']}"]
        reader, writer = await post(lean_url, resume, b"", method="GET")
        try:
            async with asyncio.timeout(30):
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.3)  # the resumed stream is registered
                workers.gates["session-resume"].set()
                resumed = b""
                while b'"structuredContent"' not in resumed:
                    resumed += await reader.read(4096)
        finally:
            writer.close()
        result = next(json.loads(e["data"]) for e in events(resumed) if '"result"' in e.get("data", ""))
        assert result["id"] == 5 and result["result"]["structuredContent"] == {"count": 2}
        assert route.served == 1


async def _answer_questions(url: str, session: str, reader: asyncio.StreamReader, answer: dict[str, Any]) -> bytes:
    """Reads the call's stream, answering each elicitation request on it with `answer` (a POST in the session),
    until the call's result: everything read."""
    seen = b""
    answered: set[str] = set()
    async with asyncio.timeout(30):
        while b'"result":{"' not in seen or b'"structuredContent"' not in seen:
            chunk = await reader.read(4096)
            assert chunk, seen
            seen += chunk
            for event in events(seen):
                data = json.loads(event["data"]) if event.get("data") else {}
                if data.get("method") == "elicitation/create" and str(data["id"]) not in answered:
                    answered.add(str(data["id"]))
                    response = json.dumps({"jsonrpc": "2.0", "id": data["id"], "result": answer}).encode()
                    assert (await exchange(url, in_session(session), response)).status == 202
    return seen


async def test_a_question_goes_on_the_calls_stream_and_the_answer_settles_it(
    gateway: Gateway, lean_routes: list[LeanRoute]
) -> None:
    """A worker's question to a client that can elicit: the elicitation request on the call's stream (SSE from
    then on), the client's POSTed response settles it, the result follows: the same messages as the SDK's, but
    the request's id (the lean route's `lean-N`, never one the session's own dispatcher mints)."""
    answer = {"action": "accept", "content": {"colour": "green"}}
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        seen: dict[str, list[Any]] = {}
        for url in (lean_url, sdk_url):
            session = await open_session(url, {"elicitation": {}})
            reader, writer = await post(url, in_session(session), call("survey", {}, request_id=3))
            try:
                head = parse_head(await reader.readuntil(b"\r\n\r\n"))
                body = await _answer_questions(url, session, reader, answer)
            finally:
                writer.close()
            assert ("content-type", "text/event-stream") in head[1]
            found = [json.loads(HEX_ID.sub("<id>", e["data"])) for e in events(body) if e.get("data")]
            for message in found:
                if message.get("method") == "elicitation/create":
                    message["id"] = "<question>"
            seen[url] = found
        assert seen[lean_url] == seen[sdk_url]
        question, result = seen[lean_url]
        assert question["params"]["message"] == "Which colour?"
        assert result["id"] == 3 and result["result"]["structuredContent"] == {"colour": "green"}
        assert route.served == 1
        assert route.sessions is not None and not route.sessions._asked  # pyright: ignore[reportPrivateUsage]


def test_the_sdk_internals_the_lean_sessions_read_are_there() -> None:
    """`_lean_sessions.py` reads private parts of the SDK's session manager and transport (pinned `mcp`): a
    new SDK that renames one fails here, not in production."""
    from mcp.server.lowlevel.server import Server
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    manager = StreamableHTTPSessionManager(Server("x"))
    assert isinstance(manager._server_instances, dict)  # pyright: ignore[reportPrivateUsage]
    assert isinstance(manager._session_owners, dict)  # pyright: ignore[reportPrivateUsage]
    assert callable(manager._discard_session)  # pyright: ignore[reportPrivateUsage]
    transport = StreamableHTTPServerTransport(
        "0" * 32, is_json_response_enabled=False, event_store=None, idle_timeout=5
    )
    for name in ("_idle_timeout", "_requests_in_flight", "_event_store", "_request_streams"):
        assert hasattr(transport, name), name
    for name in ("_mint_priming_event", "_create_event_data"):
        assert callable(getattr(transport, name)), name


async def test_bad_answers_and_cancels_settle_nothing_and_crash_nothing(
    gateway: Gateway, lean_routes: list[LeanRoute]
) -> None:
    """What the lean route reads of a session's POSTs besides its hot requests: a client's answers to its questions
    and `notifications/cancelled`. Malformed ones (a bad error object, a result that is no object, deep nesting,
    an id of the wrong type), one from another session (foreign) and one sent again (replayed) settle nothing,
    cancel nothing and get the SDK's own answer; the question, then answered well, finishes the call."""
    answer = {"action": "accept", "content": {"colour": "red"}}
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        session = await open_session(lean_url, {"elicitation": {}})
        other = await open_session(lean_url, {"elicitation": {}})
        reader, writer = await post(lean_url, in_session(session), call("survey", {}, request_id=4))
        try:
            seen = b""
            async with asyncio.timeout(30):
                while b"elicitation/create" not in seen:
                    seen += await reader.read(4096)
            question = next(json.loads(e["data"]) for e in events(seen) if "elicitation/create" in e.get("data", ""))
            qid = question["id"]
            nested = b'{"jsonrpc": "2.0", "id": "' + qid.encode() + b'", "result": ' + b"[" * 100_000 + b"]" * 100_000
            bad: list[tuple[str, list[str], bytes]] = [
                ("a bad error", in_session(session), json.dumps({"jsonrpc": "2.0", "id": qid, "error": 5}).encode()),
                (
                    "a result that is no object",
                    in_session(session),
                    json.dumps({"jsonrpc": "2.0", "id": qid, "result": [1]}).encode(),
                ),
                ("deep nesting", in_session(session), nested + b"}"),
                (
                    "an id of another type",
                    in_session(session),
                    json.dumps({"jsonrpc": "2.0", "id": 4.5, "result": answer}).encode(),
                ),
                ("foreign", in_session(other), json.dumps({"jsonrpc": "2.0", "id": qid, "result": answer}).encode()),
                (
                    "a cancel from another session",
                    in_session(other),
                    notification("notifications/cancelled", {"requestId": 4}),
                ),
                (
                    "a cancel naming no request",
                    in_session(session),
                    notification("notifications/cancelled", {"requestId": [4]}),
                ),
            ]
            assert route.sessions is not None
            for name, lines, body in bad:
                reply = await exchange(lean_url, lines, body)
                assert reply.status in (202, 400), (name, reply)
                assert route.sessions._asked.get(session, {}).get(qid) is not None, name  # pyright: ignore[reportPrivateUsage]
                assert not route.sessions._asked[session][qid].done(), name  # pyright: ignore[reportPrivateUsage]
            good = json.dumps({"jsonrpc": "2.0", "id": qid, "result": answer}).encode()
            assert (await exchange(lean_url, in_session(session), good)).status == 202
            replayed = await exchange(lean_url, in_session(session), good)  # the question is settled: the SDK's 202
            assert replayed.status == 202
            async with asyncio.timeout(30):
                while b'"structuredContent"' not in seen:
                    chunk = await reader.read(4096)
                    assert chunk, seen
                    seen += chunk
        finally:
            writer.close()
        result = next(json.loads(e["data"]) for e in events(seen) if '"result"' in e.get("data", ""))
        assert result["id"] == 4 and result["result"]["structuredContent"] == {"colour": "red"}
        assert not route.sessions._asked  # pyright: ignore[reportPrivateUsage]
