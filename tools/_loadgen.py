"""A cheap MCP load client for tools/bench.py: keep-alive HTTP/1.1 over raw asyncio streams, on uvloop.

One process drives N connections; each connection sends one `tools/call` at a time and times it from the
first byte written to the last byte read. tools/bench.py starts one or more of these processes as
`python tools/_loadgen.py SPEC_JSON RESULT_PATH`; each writes one JSON object (the latencies of the calls
that finished inside the measuring window, the errors) to its file, and the parent merges them.

Two wires, the requests byte for byte what the SDK's own client sends (captured from mcp 2.3.0):
- 2026-07-28 (`mcp.Client(url)`, mode auto): every call is a self-contained POST carrying the headers
  `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method: tools/call`, `Mcp-Name: <tool>` and, in `params._meta`,
  the protocol version, client info and client capabilities. No handshake, no session. (The server rejects
  a call whose `Mcp-Method`/`Mcp-Name` headers are missing or disagree with the body: -32020, HTTP 400.)
- 2025-11-25 (`mcp.Client(url, mode="legacy")`): per connection, `initialize` and
  `notifications/initialized` once, then every call carries `Mcp-Session-Id` and `MCP-Protocol-Version`;
  the session is deleted when the connection closes. No GET stream is opened: nothing here needs one.

Parsing is minimal but complete for what these servers send: status line, headers, a Content-Length or a
chunked body, JSON or SSE (`data:` lines; empty ones skipped). A call counts as successful only if the HTTP
status is 200 and the body holds the JSON-RPC response with our id, without `error`, with `isError` not true,
and with the echoed text in `structuredContent`.

The scale run's client (tools/_bench_stream.py) uses the same connection for calls of any tool, reading the
answer as it arrives (`McpConnection.stream_call`: an SSE stream of progress notifications, then the reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

__all__ = [
    "GRACE_SECONDS",
    "WIRES",
    "CallError",
    "LoadResult",
    "LoadSpec",
    "McpConnection",
    "call_once",
    "http_status",
    "run_load",
    "successful_result",
]

WIRES = {"2026": "2026-07-28", "2025": "2025-11-25"}
"""`--wire` choices and the protocol revision each one speaks."""

TOOL = "echo"
CLIENT_INFO = {"name": "mcp-bench", "version": "1"}
GRACE_SECONDS = 15.0
"""How long calls still in flight when the window closes may take to finish before they count as errors."""
RECONNECT_PAUSE = 0.05
MAX_ERROR_SAMPLES = 5


class CallError(Exception):
    """A reply that is not a successful echo; `reset` when the connection should be opened again."""

    def __init__(self, message: str, *, reset: bool = False) -> None:
        super().__init__(message)
        self.reset = reset


# --- HTTP/1.1, just enough ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """A response's status and headers (names in lower case), up to the blank line."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response: status line, headers, then a Content-Length or chunked body."""
    status, headers = await read_head(reader)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        parts.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any, up to the empty line
        pass
    return b"".join(parts)


async def body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """A response body as it arrives (a chunk at a time when chunked): for a stream read while it is written."""
    if headers.get("transfer-encoding", "").lower() != "chunked":
        yield await reader.readexactly(int(headers.get("content-length", "0")))
        return
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        yield (await reader.readexactly(size + 2))[:-2]
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass


def request_head(method: str, authority: str, path: str, headers: dict[str, str]) -> bytes:
    """Request line and header lines, each ending in CRLF; the blank line that ends the head is not included."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}", *(f"{k}: {v}" for k, v in headers.items())]
    return "".join(line + "\r\n" for line in lines).encode("latin-1")


def encode_request(method: str, authority: str, path: str, headers: dict[str, str], body: bytes | None = None) -> bytes:
    head = request_head(method, authority, path, headers)
    if body is None:
        return head + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def http_status(host: str, port: int, path: str) -> int | None:
    """The status of `GET path` on a fresh connection, or None if nothing answers (yet)."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return None
    try:
        writer.write(encode_request("GET", f"{host}:{port}", path, {"Connection": "close"}))
        async with asyncio.timeout(5):
            return (await read_response(reader)).status
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        writer.close()


# --- MCP over that ------------------------------------------------------------------------------------------


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def find_reply(response: Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC message answering `request_id`, from a JSON body or from an SSE stream's `data:` lines (an
    empty one is skipped: a resumable stream, the gateway's on 2025-11-25, opens with a priming event, an id and no
    data)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = response.body.split(b"\n")
        candidates = [line[5:] for line in lines if line.startswith(b"data:") and line[5:].strip()]
    else:
        candidates = [response.body]
    for raw in candidates:
        message: Any = json.loads(raw)
        if isinstance(message, dict) and cast(dict[str, Any], message).get("id") == request_id:
            return cast(dict[str, Any], message)
    raise CallError(f"no reply with id {request_id} in the body: {response.body[:160]!r}")


def successful_result(reply: dict[str, Any]) -> dict[str, Any]:
    """The `result` of a JSON-RPC reply to a tool call, or CallError unless the call succeeded."""
    if "error" in reply:
        raise CallError(f"JSON-RPC error: {json.dumps(reply['error'])[:160]}")
    result = reply.get("result")
    if not isinstance(result, dict):
        raise CallError(f"no result object: {json.dumps(reply)[:160]}")
    result = cast(dict[str, Any], result)
    if result.get("isError") is True:
        raise CallError(f"isError: {json.dumps(result.get('content'))[:160]}")
    return result


def check_echo(response: Response, request_id: int, text: str) -> dict[str, Any]:
    """The reply to an echo call, or CallError unless it is a successful echo of `text`."""
    if response.status != 200:
        raise CallError(f"HTTP {response.status}: {response.body[:160]!r}", reset=True)
    reply = find_reply(response, request_id)
    result = successful_result(reply)
    structured = result.get("structuredContent")
    if not isinstance(structured, dict) or cast(dict[str, Any], structured).get("text") != text:
        raise CallError(f"unexpected result: {json.dumps(result)[:160]}")
    return reply


class McpConnection:
    """One keep-alive connection speaking one wire; `call` sends a `tools/call` of echo and checks the reply."""

    def __init__(self, host: str, port: int, wire: str, text: str) -> None:
        self.host, self.port, self.wire, self.text = host, port, wire, text
        self._authority = f"{host}:{port}"
        self._session: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head = b""
        self._body_parts = (b"", b"")

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        if self.wire == WIRES["2025"]:
            await self._handshake()
        self._prepare_call()

    def _base_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.wire == WIRES["2026"]:
            return headers | {"MCP-Protocol-Version": self.wire}
        if self._session is not None:
            headers |= {"Mcp-Session-Id": self._session, "MCP-Protocol-Version": self.wire}
        return headers

    async def _exchange(self, request: bytes) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        return await read_response(self._reader)

    async def _handshake(self) -> None:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": self.wire, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
        response = await self._exchange(
            encode_request("POST", self._authority, "/mcp", self._base_headers(), _json_bytes(init))
        )
        if response.status != 200 or "error" in find_reply(response, 0):
            raise CallError(f"initialize failed: HTTP {response.status} {response.body[:160]!r}", reset=True)
        self._session = response.headers.get("mcp-session-id")
        if self._session is None:
            raise CallError("initialize answered without an Mcp-Session-Id", reset=True)
        note = _json_bytes({"jsonrpc": "2.0", "method": "notifications/initialized"})
        response = await self._exchange(encode_request("POST", self._authority, "/mcp", self._base_headers(), note))
        if response.status != 202:
            raise CallError(f"notifications/initialized: HTTP {response.status}", reset=True)

    def _encode_call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None
    ) -> tuple[bytes, tuple[bytes, bytes]]:
        """A `tools/call`'s request head (without Content-Length) and its body around the id. `meta` goes into
        `params._meta` (after the 2026-07-28 envelope): a `progressToken`, say."""
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        headers = self._base_headers()
        envelope: dict[str, Any] = {}
        if self.wire == WIRES["2026"]:
            headers |= {"Mcp-Method": "tools/call", "Mcp-Name": tool}
            envelope = {
                "io.modelcontextprotocol/protocolVersion": self.wire,
                "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        if envelope or meta:
            params["_meta"] = envelope | (meta or {})
        tail = _json_bytes({"method": "tools/call", "params": params})
        return request_head("POST", self._authority, "/mcp", headers), (b'{"jsonrpc":"2.0","id":', b"," + tail[1:])

    def _prepare_call(self) -> None:
        """Pre-encode everything of an echo call but its id (and so its Content-Length)."""
        self._head, self._body_parts = self._encode_call(TOOL, {"text": self.text}, None)

    async def call(self, request_id: int) -> dict[str, Any]:
        body = self._body_parts[0] + str(request_id).encode() + self._body_parts[1]
        response = await self._exchange(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return check_echo(response, request_id, self.text)

    async def stream_call(
        self, request_id: int, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        """Send a `tools/call` of any tool; its status, headers and body as it arrives (read it to the end before
        the next request on this connection)."""
        assert self._reader is not None and self._writer is not None
        head, (before, after) = self._encode_call(tool, arguments, meta)
        body = before + str(request_id).encode() + after
        self._writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, headers = await read_head(self._reader)
        return status, headers, body_chunks(self._reader, headers)

    async def close(self) -> None:
        """Delete the session (2025 wire), then close the connection."""
        if self._session is not None and self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                async with asyncio.timeout(2):
                    await self._exchange(encode_request("DELETE", self._authority, "/mcp", self._base_headers()))
        self.abort()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._session = None


async def call_once(host: str, port: int, wire: str, text: str = "hello") -> dict[str, Any]:
    """One checked echo call on a fresh connection: the reply, or CallError/OSError."""
    conn = McpConnection(host, port, wire, text)
    try:
        await conn.open()
        return await conn.call(1)
    finally:
        await conn.close()


# --- The load ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one load process does. Times are `time.monotonic()` values, the same clock in every process."""

    host: str
    port: int
    wire: str
    connections: int
    start_at: float
    warmup: float
    duration: float
    text: str = "hello"

    @property
    def measure_from(self) -> float:
        return self.start_at + self.warmup

    @property
    def measure_until(self) -> float:
        return self.start_at + self.warmup + self.duration


@dataclass(slots=True)
class LoadResult:
    """Calls that finished inside the window: latencies of the good ones (ms), count and samples of the rest."""

    latencies_ms: list[float] = field(default_factory=list[float])
    errors: int = 0
    error_samples: list[str] = field(default_factory=list[str])

    def add_error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES and what not in self.error_samples:
            self.error_samples.append(what)

    def merge(self, other: LoadResult) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        for sample in other.error_samples:
            if len(self.error_samples) < MAX_ERROR_SAMPLES and sample not in self.error_samples:
                self.error_samples.append(sample)


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _connect(spec: LoadSpec) -> McpConnection:
    conn = McpConnection(spec.host, spec.port, spec.wire, spec.text)
    await conn.open()
    return conn


async def _drive(spec: LoadSpec, result: LoadResult, first_id: int) -> None:
    """One connection: connect (and handshake) before the start, then one call after another until the end."""
    conn: McpConnection | None = None
    with contextlib.suppress(OSError, CallError, asyncio.IncompleteReadError, ValueError):
        conn = await _connect(spec)
    await _sleep_until(spec.start_at)
    request_id = first_id
    finished_cleanly = False
    try:
        while time.monotonic() < spec.measure_until:
            error: str | None = None
            started = time.monotonic()
            try:
                if conn is None:
                    conn = await _connect(spec)
                    started = time.monotonic()
                request_id += 1
                await conn.call(request_id)
            except CallError as exc:
                error = str(exc)
                if exc.reset and conn is not None:
                    conn.abort()
                    conn = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.abort()
                    conn = None
            finished = time.monotonic()
            if spec.measure_from <= finished <= spec.measure_until:
                if error is None:
                    result.latencies_ms.append((finished - started) * 1000.0)
                else:
                    result.add_error(error)
            if conn is None:
                await asyncio.sleep(RECONNECT_PAUSE)
        finished_cleanly = True
    finally:
        if conn is not None and finished_cleanly:
            await conn.close()
        elif conn is not None:
            conn.abort()  # cancelled mid-call: the connection is in an unknown state


async def run_load(spec: LoadSpec) -> LoadResult:
    """Drive `spec.connections` connections; calls still unanswered GRACE_SECONDS after the window are errors."""
    result = LoadResult()
    tasks = [asyncio.create_task(_drive(spec, result, i * 1_000_000_000)) for i in range(spec.connections)]
    _, pending = await asyncio.wait(tasks, timeout=spec.measure_until + GRACE_SECONDS - time.monotonic())
    for task in pending:
        task.cancel()
        result.add_error(f"no reply within {GRACE_SECONDS:g} s after the window closed")
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            result.add_error(f"load task failed: {type(outcome).__name__}: {outcome}")
    return result


def main(argv: list[str]) -> int:
    """`python tools/_loadgen.py SPEC_JSON RESULT_PATH`: run the load on uvloop, write the LoadResult as JSON.

    A file, not stdout: uvloop leaves inherited pipes non-blocking, and a large unbuffered write to one is cut.
    """
    import uvloop

    spec = LoadSpec(**json.loads(argv[1]))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run_load(spec))
    Path(argv[2]).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
