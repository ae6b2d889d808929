"""The lean path's part on the 2025-11-25 wire: calls inside a stateful session (`Mcp-Session-Id`), answered
without the SDK's per-request SSE stream and its event store writes, as the session's own kernel would.

The SDK serves a session's POST through its transport: an SSE response per request, a priming event and the
reply stored in the event store (two writes to PostgreSQL per call here), the request queued to the session's
message loop and its reply routed back. `SessionCalls` lets the lean route serve a session's hot request itself,
on the session's own `Connection` (its negotiated version, capabilities, per-connection state and standalone
channel), so handlers see what they would behind the SDK; and keeps what the session's loop would keep:

- a session is found exactly as the SDK's manager finds it (known id, the same credential as the one that opened
  it, not terminated, not idle-expired, initialized), else the SDK answers (its 404, 400);
- a lean request holds the session's idle countdown as the SDK's transport does while it serves one (until the
  call ends, though the client left: the SDK's restarts the countdown when the client leaves);
- `notifications/cancelled` for a lean request cancels it and sets its `cancel_requested`; it is answered
  `REQUEST_CANCELLED`, an SSE event, whatever its handler then does, as the SDK's dispatcher and 2025 transport
  answer a cancelled request; the session ending (DELETE, idle timeout, shutdown) cancels its lean requests, whose
  streams then end without a reply (a priming event only, if nothing was sent yet), as the SDK's terminated
  transport ends them;
- a client that disconnects does not cancel the call (2025-11-25: only `notifications/cancelled` does);
- a handler's questions to the client (elicitation, sampling: requests tied to the call) go on the request's
  stream as the SDK's dispatcher sends them, and the client's POSTed response settles them (`ask`, `answered`).

`SessionReply` writes the reply: JSON when the handler answers silently within the SDK's window (the 2025 wire
lets the server answer a POST with JSON or SSE, and the client must take both); SSE from the first notification
or question a handler sends (a worker's log line, an elicitation) or once the window passes silent, then as the
SDK's transport writes it: a priming event, every event stored in the event store under the request's stream, so
a client that loses the stream resumes it with `GET` and `Last-Event-ID` (the events stored since, then the rest
as they come). What differs from the SDK's path, by design: a call that answers within the window as JSON has no
event id, so a client whose connection drops before the answer cannot resume it (the workflow goes on; its
result stays readable: `workflow_result`, `workflow://{id}`); no OpenTelemetry span or trace context around a
question to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    REQUEST_CANCELLED,
    EventMessage,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import CallOptions, as_request_id, coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    RequestId,
)
from mcp_types.jsonrpc import REQUEST_TIMEOUT, JSONRPCMessage
from pydantic import ValidationError
from sse_starlette import ServerSentEvent
from starlette.types import Scope, Send

__all__ = ["REMEMBERED_SESSIONS", "Session", "SessionCalls", "SessionReply", "Sink", "cancelled_reply"]

REMEMBERED_SESSIONS: Final = 10_000
"""The SDK's `DEFAULT_MAX_SESSIONS`: more connections than sessions are never kept."""
_JSON_TYPE: Final = b"application/json"
_SSE_HEADERS: Final = [
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/event-stream"),
]
"""The SDK's 2025 transport's SSE response headers; then `Mcp-Session-Id`, and `X-Accel-Buffering: no` as its
`EventSourceResponse` adds."""
_ACCEL: Final = (b"x-accel-buffering", b"no")
_PING: Final = b": ping\r\n\r\n"
_COURTESY_WAIT: Final = 1.0
"""Seconds a courtesy `notifications/cancelled` for an abandoned question may take to write (the SDK's)."""

Sink = Callable[[JSONRPCMessage], Awaitable[None]]
"""Where a request's own messages go: its response stream (`SessionReply.event`)."""
Outcome = dict[str, Any] | ErrorData


@dataclass(frozen=True, slots=True)
class Session:
    """A session the lean route may serve a request of: its id, the SDK's transport and the kernel's connection."""

    session_id: str
    transport: StreamableHTTPServerTransport
    connection: Connection


@dataclass(slots=True)
class _InFlight:
    task: asyncio.Task[Any]
    request_cancel: Callable[[], None]
    """Sets the request's `DispatchContext.cancel_requested` (made only then), when the client cancels it."""
    by_peer: bool = False


@dataclass
class SessionCalls:
    """The sessions of `manager` and their lean requests. Its `remember` is a server middleware (the first of
    `Server.middleware`): it notes each session's `Connection` as the session's messages pass through the kernel;
    `ended` is called with a session id when the manager discards it."""

    manager: StreamableHTTPSessionManager
    _connections: weakref.WeakValueDictionary[str, Connection] = field(default_factory=weakref.WeakValueDictionary)
    _in_flight: dict[str, dict[RequestId, _InFlight]] = field(default_factory=dict)
    """Per session, its lean requests in flight, by `coerce_request_id` of their ids (as the SDK correlates)."""
    _asked: dict[str, dict[str, asyncio.Future[Outcome]]] = field(default_factory=dict)
    """Per session, the questions its lean requests asked the client (by request id) and await answers to."""
    _ids: Iterator[int] = field(default_factory=itertools.count)

    async def remember(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        connection = getattr(ctx.session, "_connection", None)
        session_id = getattr(connection, "session_id", None)
        if (
            isinstance(connection, Connection)
            and isinstance(session_id, str)
            and session_id not in self._connections
            and len(self._connections) < REMEMBERED_SESSIONS
        ):
            self._connections[session_id] = connection
        return await call_next(ctx)

    def find(self, scope: Scope, session_id: str) -> Session | None:
        """The session as the SDK's manager and transport would serve it, or None (the SDK then answers)."""
        transport = self.manager._server_instances.get(session_id)  # pyright: ignore[reportPrivateUsage]
        if transport is None or transport.is_terminated:
            return None
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if requestor != self.manager._session_owners.get(session_id):  # pyright: ignore[reportPrivateUsage]
            return None
        if transport.idle_scope is not None and transport.idle_scope.cancel_called:
            return None
        connection = self._connections.get(session_id)
        if connection is None or connection.session_id != session_id or not connection.initialize_accepted:
            return None
        return Session(session_id, transport, connection)

    @contextlib.contextmanager
    def serving(
        self, session: Session, request_id: RequestId, task: asyncio.Task[Any], request_cancel: Callable[[], None]
    ) -> Generator[_InFlight]:
        """While a lean request of `session` is served: the session's idle countdown suspended (the SDK
        transport's `handle_request`), the request cancellable by the peer or by the session's end."""
        transport = session.transport
        idle, timeout = transport.idle_scope, transport._idle_timeout  # pyright: ignore[reportPrivateUsage]
        entry, key = _InFlight(task, request_cancel), coerce_request_id(request_id)
        calls = self._in_flight.setdefault(session.session_id, {})
        calls[key] = entry
        if idle is not None and timeout is not None:
            transport._requests_in_flight += 1  # pyright: ignore[reportPrivateUsage]
            idle.deadline = math.inf
        try:
            yield entry
        finally:
            if calls.get(key) is entry:
                del calls[key]
            if not calls and self._in_flight.get(session.session_id) is calls:
                del self._in_flight[session.session_id]
            if idle is not None and timeout is not None:
                transport._requests_in_flight -= 1  # pyright: ignore[reportPrivateUsage]
                if not transport._requests_in_flight:  # pyright: ignore[reportPrivateUsage]
                    idle.deadline = anyio.current_time() + timeout

    def cancel(self, session_id: str, request_id: Any) -> bool:
        """A `notifications/cancelled` of the session: cancels the lean request it names (True), if any, and sets
        its `cancel_requested`; the request is then answered `REQUEST_CANCELLED` whatever its handler does, as the
        SDK's dispatcher and 2025 transport answer. Ids correlate as the SDK's (`coerce_request_id`)."""
        rid = as_request_id(request_id)
        entry = self._in_flight.get(session_id, {}).get(coerce_request_id(rid)) if rid is not None else None
        if entry is None:
            return False
        entry.by_peer = True
        entry.request_cancel()
        entry.task.cancel()
        return True

    def ended(self, session_id: str) -> None:
        """The manager discarded the session: its lean requests are cancelled, its connection forgotten."""
        self._connections.pop(session_id, None)
        for entry in list(self._in_flight.pop(session_id, {}).values()):
            entry.task.cancel()

    async def ask(
        self, session_id: str, sink: Sink, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None
    ) -> dict[str, Any]:
        """A request to the client on a lean request's stream (an elicitation or a sampling request: the SDK's
        `send_raw_request` of the request's dispatch context), and its result; the client POSTs its response in
        the session (`answered`). Ids are `lean-N`, a string the session's own dispatcher never mints. As the
        SDK's: an error response raises `MCPError`; past `opts["timeout"]`, `REQUEST_TIMEOUT`; abandoned (timed out
        or cancelled), a courtesy `notifications/cancelled` tells the client."""
        timeout = (opts or {}).get("timeout")
        request_id = f"lean-{next(self._ids)}"
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        asked = self._asked.setdefault(session_id, {})
        asked[request_id] = future
        message = (
            JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method, params=dict(params))
            if params
            else JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method)
        )
        try:
            await sink(message)
            try:
                async with asyncio.timeout(timeout):
                    outcome = await future
            except TimeoutError:
                await _courtesy_cancel(sink, request_id, f"timed out after {timeout}s")
                raise MCPError(code=REQUEST_TIMEOUT, message=f"Request {method!r} timed out") from None
            except asyncio.CancelledError:
                await _courtesy_cancel(sink, request_id, "caller cancelled")
                raise
        finally:
            if asked.get(request_id) is future:
                del asked[request_id]
            if not asked and self._asked.get(session_id) is asked:
                del self._asked[session_id]
        if isinstance(outcome, ErrorData):
            raise MCPError(code=outcome.code, message=outcome.message, data=outcome.data)
        return outcome

    def answered(self, session_id: str, message: Mapping[str, Any]) -> bool:
        """A JSON-RPC response the client POSTed in the session: settles the question it answers (True), if one
        of the session's lean requests asked it and still waits. A response the SDK's transport would refuse as
        malformed (its 400: no `"jsonrpc": "2.0"`, an error that is no error object, a result that is no object)
        settles nothing, as there it reaches no waiter."""
        request_id = message.get("id")
        future = self._asked.get(session_id, {}).get(request_id) if isinstance(request_id, str) else None
        if future is None or future.done() or message.get("jsonrpc") != "2.0":
            return False
        if "error" in message and "result" not in message:
            try:
                future.set_result(ErrorData.model_validate(message["error"]))
            except ValidationError:
                return False
        elif "result" in message and "error" not in message and isinstance(result := message["result"], dict):
            future.set_result(cast(dict[str, Any], result))
        else:
            return False
        return True


async def _courtesy_cancel(sink: Sink, request_id: str, reason: str) -> None:
    """Tells the client a question is abandoned (best effort, bounded, not cut short by the caller's own
    cancellation), as the SDK's dispatcher does."""
    note = JSONRPCNotification(
        jsonrpc="2.0", method="notifications/cancelled", params={"requestId": request_id, "reason": reason}
    )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(sink(note)), _COURTESY_WAIT)


def cancelled_reply(request_id: RequestId) -> JSONRPCError:
    """The reply to a request the client cancelled, as the SDK's 2025 transport answers it."""
    return JSONRPCError(
        jsonrpc="2.0", id=request_id, error=ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
    )


class SessionReply:
    """The HTTP response of one lean session request: JSON, or SSE once committed (`event` or `ping`). `close()`
    when the handler is done: what it still sends after is dropped, as the SDK's closed dispatch context drops it."""

    def __init__(self, send: Send, session: Session, request_id: RequestId, version_header: str | None) -> None:
        self._send = send
        self._transport = session.transport
        self._session_header = session.session_id.encode("latin-1")
        self._stream_id = str(request_id)
        self._version = version_header or DEFAULT_NEGOTIATED_VERSION
        self._lock = asyncio.Lock()
        self._closed = False
        self.committed = False
        """Whether the SSE response has started."""

    def close(self) -> None:
        self._closed = True

    async def event(self, message: JSONRPCMessage) -> None:
        """One message on the request's stream (committing SSE first), unless closed."""
        async with self._lock:
            if not self._closed:
                await self._event(message)

    async def ping(self) -> None:
        """A keepalive while the handler is silent (committing SSE first)."""
        async with self._lock:
            await self._commit()
            await self._write(_PING)

    async def answer(self, message: JSONRPCMessage, *, streamed: bool = False) -> None:
        """The reply: the SSE stream's last event, or the whole JSON response. `streamed`: as an SSE event even if
        nothing was streamed yet: the answer to a request the client cancelled, which the SDK writes on the
        request's stream (a client that stopped waiting drops such an event, where the SDK's own Python client
        fails on a JSON body arriving after its session closed)."""
        async with self._lock:
            self._closed = True
            if self.committed or streamed:
                await self._event(message)
                await self._write(b"", more=False)
                return
            body = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
            headers = [
                (b"content-type", _JSON_TYPE),
                (MCP_SESSION_ID_HEADER.lower().encode(), self._session_header),
                (b"content-length", str(len(body)).encode()),
            ]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._send({"type": "http.response.body", "body": body})

    async def abandon(self) -> None:
        """The session ended before the reply: the stream ends without one (after its priming event, if nothing
        was sent yet), as the SDK's terminated transport ends a request's stream."""
        async with self._lock:
            self._closed = True
            await self._commit()
            await self._write(b"", more=False)

    async def _event(self, message: JSONRPCMessage) -> None:
        """Stored in the event store, written, and handed to a resumed stream (`GET` with `Last-Event-ID`) if the
        client opened one meanwhile. Under the lock."""
        await self._commit()
        store = self._transport._event_store  # pyright: ignore[reportPrivateUsage]
        event_id = await store.store_event(self._stream_id, message) if store is not None else None
        event = EventMessage(message, event_id)
        data = self._transport._create_event_data(event)  # pyright: ignore[reportPrivateUsage]
        await self._write(ServerSentEvent(**data).encode())
        resumed = self._transport._request_streams.get(self._stream_id)  # pyright: ignore[reportPrivateUsage]
        if resumed is not None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await resumed[0].send(event)

    async def _commit(self) -> None:
        if self.committed:
            return
        self.committed = True
        headers = [*_SSE_HEADERS, (MCP_SESSION_ID_HEADER.lower().encode(), self._session_header), _ACCEL]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        priming = await self._transport._mint_priming_event(self._stream_id, self._version)  # pyright: ignore[reportPrivateUsage]
        if priming is not None:
            await self._write(ServerSentEvent(**priming).encode())

    async def _write(self, body: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more})


def version_header(scope: Scope) -> str | None:
    """The first `MCP-Protocol-Version` header (the one the SDK reads), if any."""
    name = MCP_PROTOCOL_VERSION_HEADER.lower().encode()
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)
