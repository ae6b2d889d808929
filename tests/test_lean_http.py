"""The lean path of POST /mcp (`mcp_gateway/server/_lean.py`) answers exactly as the SDK's transport does.

Every request is sent byte for byte the same to two HTTP apps of one gateway, one with the lean route and one
without; status, headers and body must be the same (workflow ids aside), and the lean route must have answered
the hot cases (2026-07-28 `tools/call` and `tools/list` that pass every check) itself and handed every other
request to the SDK.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp.server._streamable_http_modern as sdk_modern
import pytest
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner

from mcp_gateway.app import Gateway
from mcp_gateway.core.states import Status
from mcp_gateway.server import _lean
from mcp_gateway.server._lean import LeanRoute
from tests import workers
from tests.conftest import http_server

WIRE = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": WIRE,
    "io.modelcontextprotocol/clientInfo": {"name": "lean-test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
ACCEPT = "Accept: application/json, text/event-stream"
HEX_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def comparable(self) -> tuple[int, list[tuple[str, str]], Any]:
        """Status, headers (but the date) and the body (JSON when it is), workflow ids replaced."""
        headers = [(k, HEX_ID.sub("<id>", v)) for k, v in self.headers if k != "date"]
        text = HEX_ID.sub("<id>", self.body.decode())
        body: Any = json.loads(text) if self.header("content-type") == "application/json" and text else text
        return self.status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out


async def post(
    url: str, lines: Sequence[str], body: bytes, *, method: str = "POST"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Sends one raw HTTP/1.1 request to /mcp (`Connection: close`); its connection, to read the answer from."""
    authority = url.removeprefix("http://").split("/")[0]
    host, port = authority.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = [
        f"{method} /mcp HTTP/1.1",
        f"Host: {authority}",
        *lines,
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    return reader, writer


def parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines if h)]
    return int(status_line.split(" ")[1]), headers


async def exchange(url: str, lines: Sequence[str], body: bytes) -> Reply:
    """One raw HTTP/1.1 request (`Connection: close`) and its whole response."""
    reader, writer = await post(url, lines, body)
    try:
        async with asyncio.timeout(30):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if ("transfer-encoding", "chunked") in headers:
        rest = _dechunk(rest)
    return Reply(status, headers, rest)


def rpc(method: str, params: dict[str, Any] | None = None, *, request_id: Any = 1, meta: Any = META) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None or meta is not None:
        message["params"] = {**(params or {}), **({"_meta": meta} if meta is not None else {})}
    return json.dumps(message).encode()


def routing(method: str, name: str | None = None, *, version: str = WIRE) -> list[str]:
    return ["Content-Type: application/json", ACCEPT, f"MCP-Protocol-Version: {version}", f"Mcp-Method: {method}"] + (
        [f"Mcp-Name: {name}"] if name is not None else []
    )


def call(tool: str, arguments: dict[str, Any], *, meta: Any = META) -> tuple[list[str], bytes]:
    return routing("tools/call", tool), rpc("tools/call", {"name": tool, "arguments": arguments}, meta=meta)


def _cases() -> list[tuple[str, list[str], bytes, bool]]:
    """(name, header lines, body, taken by the lean route)."""
    hot: list[tuple[str, list[str], bytes, bool]] = [
        ("echo", *call("echo", {"text": "hello"}), True),
        ("lookup_order", *call("lookup_order", {"order_id": "ORD-1001"}), True),
        ("a failing tool", *call("explode", {}), True),
        ("a crashing tool", *call("explode", {"crash": True}), True),
        ("invalid arguments", *call("echo", {"text": 42}), True),
        ("an unknown tool", *call("no_such_tool", {}), True),
        ("a tool out of the caller's scopes", *call("ledger", {"note": "x"}), True),
        (
            "a tool out of the caller's scopes, its Mcp-Param header disagreeing",
            [*call("ledger", {"note": "x"})[0], "Mcp-Param-Note: y"],
            call("ledger", {"note": "x"})[1],
            True,
        ),
        ("a task-only tool without the tasks extension", *call("failing_job", {}), True),
        ("params without a name", routing("tools/call"), rpc("tools/call", {"arguments": {}}), True),
        (
            "Mcp-Param headers that agree",
            [
                *call("test_custom_headers", {"region": "eu", "priority": 3})[0],
                "Mcp-Param-Region: eu",
                "Mcp-Param-Priority: 3",
            ],
            call("test_custom_headers", {"region": "eu", "priority": 3})[1],
            True,
        ),
        ("tools/list", routing("tools/list"), rpc("tools/list", {}), True),
        ("a string id", routing("tools/list"), rpc("tools/list", {}, request_id="abc"), True),
    ]
    echo_lines, echo_body = call("echo", {"text": "hello"})
    cold: list[tuple[str, list[str], bytes, bool]] = [
        ("a wrong Mcp-Name", routing("tools/call", "lookup_order"), echo_body, False),
        ("a duplicated routing header", [*echo_lines, "Mcp-Method: tools/call"], echo_body, False),
        ("a missing Mcp-Param header", *call("test_custom_headers", {"region": "eu"}), False),
        (
            "a wrong Mcp-Param header",
            [*call("test_custom_headers", {"region": "eu"})[0], "Mcp-Param-Region: us"],
            call("test_custom_headers", {"region": "eu"})[1],
            False,
        ),
        (
            "Accept without JSON",
            [*routing("tools/call", "echo")[:1], "Accept: text/event-stream", *routing("tools/call", "echo")[2:]],
            echo_body,
            False,
        ),
        (
            "Accept without SSE",
            [*routing("tools/call", "echo")[:1], "Accept: application/json", *routing("tools/call", "echo")[2:]],
            echo_body,
            False,
        ),
        ("a Content-Type that is not JSON", ["Content-Type: text/plain", *echo_lines[1:]], echo_body, False),
        (
            "a notification",
            routing("notifications/cancelled"),
            json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}).encode(),
            False,
        ),
        ("a batch", routing("tools/list"), b"[" + rpc("tools/list", {}) + b"]", False),
        ("bad JSON", routing("tools/list"), b'{"jsonrpc": "2.0", "id": 1,', False),
        ("a null id", routing("tools/list"), rpc("tools/list", {}, request_id=None), False),
        ("a boolean id", routing("tools/list"), rpc("tools/list", {}, request_id=True), False),
        ("no envelope", *call("echo", {"text": "hello"}, meta=None), False),
        (
            "an envelope of another version",
            routing("tools/list", version="2099-01-01"),
            rpc("tools/list", {}, meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}),
            False,
        ),
        ("a progress token", *call("echo", {"text": "hello"}, meta={**META, "progressToken": "p1"}), False),
        (
            "a log level opt-in",
            *call("echo", {"text": "hello"}, meta={**META, "io.modelcontextprotocol/logLevel": "debug"}),
            False,
        ),
        ("another method", routing("prompts/list"), rpc("prompts/list", {}), False),
        (
            "2025-11-25 without a session",
            routing("tools/list", version="2025-11-25"),
            rpc("tools/list", {}, meta=None),
            False,
        ),
    ]
    return hot + cold


@pytest.fixture
def lean_routes(monkeypatch: pytest.MonkeyPatch) -> list[LeanRoute]:
    """Every `LeanRoute` built during the test (so its counters can be read)."""
    made: list[LeanRoute] = []
    init = LeanRoute.__init__

    def remember(self: LeanRoute, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(LeanRoute, "__init__", remember)
    return made


@asynccontextmanager
async def on_and_off(gateway: Gateway, lean_routes: list[LeanRoute]) -> AsyncGenerator[tuple[str, str, LeanRoute]]:
    """Two HTTP apps of `gateway`: with the lean route (its URL, then the route) and without."""
    async with http_server(gateway, lean=True) as lean_url, http_server(gateway, lean=False) as sdk_url:
        assert len(lean_routes) == 1, "only the app with lean=True has a lean route"
        yield lean_url, sdk_url, lean_routes[0]


async def test_the_lean_route_answers_as_the_sdk_does(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    token, _ = await gateway.tokens.create("lean-tester", ("support",))  # not "billing": ledger is out of scope
    auth = f"Authorization: Bearer {token}"
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        for name, lines, body, hot in _cases():
            served, handed = route.served, route.handed_over
            lean = await exchange(lean_url, [*lines, auth], body)
            sdk = await exchange(sdk_url, [*lines, auth], body)
            assert lean.comparable() == sdk.comparable(), name
            assert (route.served - served, route.handed_over - handed) == ((1, 0) if hot else (0, 1)), name
            if hot:
                assert lean.header("content-type") == "application/json", name
        # A tool the caller may not use answers as an unknown one, even when an Mcp-Param header disagrees with
        # its arguments (a 400 naming the header would tell that the tool exists), on both routes.
        lines, body = call("ledger", {"note": "x"})
        for url in (lean_url, sdk_url):
            hidden = await exchange(url, [*lines, "Mcp-Param-Note: y", auth], body)
            assert hidden.status == 200, hidden
            assert json.loads(hidden.body)["result"]["_meta"]["io.mcp-gateway/error"]["error"] == "unknown_tool"
    statuses = {name: hot for name, _, _, hot in _cases()}
    assert sum(statuses.values()) >= 10 and len(statuses) - sum(statuses.values()) >= 15


async def test_results_and_errors_of_the_lean_route(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """What the comparison above compares is the real thing: results, isError results, JSON-RPC errors with the
    SDK's HTTP status, and the SDK's own refusals for what the lean route hands over."""
    async with on_and_off(gateway, lean_routes) as (lean_url, _, _route):
        echo = json.loads((await exchange(lean_url, *call("echo", {"text": "hi"}))).body)
        assert echo["result"]["structuredContent"]["text"] == "hi" and echo["id"] == 1
        failed = json.loads((await exchange(lean_url, *call("explode", {}))).body)
        assert failed["result"]["isError"] is True
        no_name = await exchange(lean_url, routing("tools/call"), rpc("tools/call", {"arguments": {}}))
        assert no_name.status == 400 and json.loads(no_name.body)["error"]["code"] == -32602
        task_only = await exchange(lean_url, *call("failing_job", {}))
        assert task_only.status == 400 and "tasks" in json.loads(task_only.body)["error"]["message"]
        mismatch = await exchange(lean_url, routing("tools/call", "lookup_order"), call("echo", {"text": "x"})[1])
        assert mismatch.status == 400 and json.loads(mismatch.body)["error"]["code"] == -32020
        bad_header = call("test_custom_headers", {"region": "eu"})
        refused = await exchange(lean_url, [*bad_header[0], "Mcp-Param-Region: us"], bad_header[1])
        assert refused.status == 400 and "Mcp-Param-Region" in json.loads(refused.body)["error"]["message"]


def _events(body: bytes) -> list[Any]:
    """The `data:` of each SSE event but the pings, workflow ids replaced."""
    frames = [f for f in HEX_ID.sub("<id>", body.decode()).split("\r\n\r\n") if f and not f.startswith(":")]
    return [json.loads(f.split("data: ", 1)[1]) for f in frames]


async def test_a_silent_call_past_the_window_commits_sse_as_the_sdk_does(
    gateway: Gateway, lean_routes: list[LeanRoute], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler silent past the deferral window (15 s; a tenth of a second here) commits `text/event-stream`
    with keepalive pings, then the result: the same headers and events on both paths."""
    monkeypatch.setattr(_lean, "SSE_DEFERRAL", 0.1)
    monkeypatch.setattr(sdk_modern, "_SSE_PING_INTERVAL", 0.1)
    async with on_and_off(gateway, lean_routes) as (lean_url, sdk_url, route):
        replies: list[tuple[int, list[tuple[str, str]], list[Any]]] = []
        for url, gate in ((lean_url, "lean-sse"), (sdk_url, "sdk-sse")):
            workers.gates[gate] = asyncio.Event()
            reader, writer = await post(url, *call("steps", {"count": 1, "gate": gate}))
            try:
                async with asyncio.timeout(30):
                    status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))  # committed: SSE
                    workers.gates[gate].set()
                    body = _dechunk(await reader.read())
            finally:
                writer.close()
            assert ": ping" in body.decode()
            replies.append((status, [(k, v) for k, v in headers if k != "date"], _events(body)))
        assert replies[0] == replies[1]
        status, headers, events = replies[0]
        assert status == 200 and ("content-type", "text/event-stream") in headers
        assert events[-1]["result"]["structuredContent"] == {"count": 1}
        assert route.served == 1


async def test_a_client_that_leaves_cancels_its_call(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """Closing the connection while the lean route waits cancels the call, and so its workflow."""
    workers.gates["lean-leave"] = asyncio.Event()
    before = set(workers.executions)
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        _, writer = await post(lean_url, *call("steps", {"count": 2, "gate": "lean-leave"}))
        async with asyncio.timeout(30):
            while not set(workers.executions) - before:  # noqa: ASYNC110 - the worker has started
                await asyncio.sleep(0.02)
            (workflow_id,) = set(workers.executions) - before
            writer.close()
            viewer = gateway.principals.local
            while (await gateway.workflows.get(workflow_id, viewer)).status is not Status.CANCELLED:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert route.served == 1
    workers.gates["lean-leave"].set()


async def test_a_lean_call_leaves_no_cycle_for_the_collector(gateway: Gateway, lean_routes: list[LeanRoute]) -> None:
    """Each request's kernel (its `ServerRunner`, `Connection` and their parts) is freed by reference counting at
    the request's end: under load, cycles of them cost the gateway a fifth of its CPU in the cyclic collector."""
    async with on_and_off(gateway, lean_routes) as (lean_url, _, route):
        await exchange(lean_url, *call("echo", {"text": "warm"}))
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                assert (await exchange(lean_url, *call("echo", {"text": "hi"}))).status == 200
            left = [o for o in gc.get_objects() if isinstance(o, ServerRunner | Connection)]
        finally:
            gc.enable()
        assert route.served == 6
        assert left == [], f"{len(left)} kernel objects wait for the cyclic collector"


def test_the_constants_copied_from_the_sdk_still_match_it() -> None:
    assert _lean.SSE_DEFERRAL == sdk_modern._SSE_PING_INTERVAL  # pyright: ignore[reportPrivateUsage]
    assert _lean._SSE_HEADERS == sdk_modern._SSE_HEADERS  # pyright: ignore[reportPrivateUsage]
