"""The lean path of `POST /mcp`: a `tools/call` or `tools/list` answered without the SDK's per-request SSE
machinery, on 2026-07-28 and in 2025-11-25 sessions; every other request goes to the SDK's transport unchanged.

In SSE mode (the gateway's) the SDK's single-exchange entry (`handle_modern_request`) pays, for every request,
for an anyio task group, a memory stream, a disconnect watcher and a 15 s deferral window before it picks JSON or
SSE. A request that cannot emit a notification (no `progressToken`, no log-level opt-in: nothing else a handler
sends reaches a 2026-07-28 response stream) always ends as the JSON the SDK would have written, unless it runs
silent past the window. `LeanRoute` answers exactly those requests itself:

- taken: POST, `MCP-Protocol-Version` a 2026 revision, `Content-Type: application/json`, an `Accept` the SDK takes,
  a body that is one JSON-RPC request (`"jsonrpc": "2.0"`, an int or string id) of `tools/call` or `tools/list`
  with `params._meta` free of `progressToken` and `io.modelcontextprotocol/logLevel`, whose routing headers,
  envelope and `Mcp-Param-*` headers pass the SDK's own checks (`find_duplicated_routing_header`,
  `classify_inbound_request`, `validate_mcp_param_headers` against the schema the SDK would look up);
- taken too, on 2025-11-25 (no `MCP-Protocol-Version`, or a handshake revision, and an `Mcp-Session-Id`): such a
  request of a session the SDK would serve it in, of a tool that does not close its stream (`poll_after`), its
  notifications and questions to the client on its own response; `_lean_sessions.py` says how;
- handed over: everything else, with the body already read replayed into the SDK's `receive`, so the SDK answers
  it (its errors, its 202 for notifications, its sessions' other requests) exactly as without this route.

A taken 2026-07-28 request is dispatched through the SDK's kernel (its `serve_one`, as `_serve_one`), so handlers,
`_meta` handling, params validation and the SDK's OpenTelemetry middleware run as they do behind the SDK's entry; the
reply is serialised as the SDK's (`model_dump(mode="json", by_alias=True, exclude_none=True)`, compact JSON, the
status from `ERROR_CODE_HTTP_STATUS`). The handler runs in its own task, raced against one waiter on `receive()`:
a client that disconnects cancels the call, as the SDK's `watch_disconnect` does. A handler still silent after
the SDK's deferral window commits `text/event-stream` and pings every window, as the SDK does, so a proxy idle
timeout does not cut a long wait.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio
import structlog
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, aclose_shielded, modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    LOG_LEVEL_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCResponse,
    RequestId,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.server._lean_sessions import (
    Session,
    SessionCalls,
    SessionReply,
    Sink,
    cancelled_reply,
    version_header,
)

__all__ = ["LEAN_METHODS", "SSE_DEFERRAL", "LeanRoute"]

log = structlog.get_logger(__name__)

LEAN_METHODS: Final = frozenset({"tools/call", "tools/list"})
"""The methods the lean path answers; others go to the SDK."""
SSE_DEFERRAL: Final = 15.0
"""The SDK's `_SSE_PING_INTERVAL`: how long a silent handler is waited for before SSE commits, and then the
seconds between keepalive pings."""
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
"""The SDK's `_SSE_HEADERS`, byte for byte."""
_PING: Final = b": ping\r\n\r\n"
_VERSION_HEADER: Final = b"mcp-protocol-version"
_SESSION_HEADER: Final = b"mcp-session-id"
_PARAM_PREFIX: Final = MCP_PARAM_HEADER_PREFIX.lower()
_JSON_TYPE: Final = b"application/json"
_REMEMBERED: Final = 4096


class _Handover(Exception):
    """Not the hot case: the SDK answers (`reason` says why, for the debug log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Ask = Callable[[str, Mapping[str, Any] | None, CallOptions | None], Awaitable[dict[str, Any]]]
"""Sends a request to the client on the request's stream and returns its result (`SessionCalls.ask`)."""


@dataclass(slots=True)
class _LeanDispatchContext:
    """The SDK's per-request `DispatchContext` of a lean request, without a progress token (such requests go to
    the SDK). In a 2025-11-25 session, notifications go to `sink` and requests to the client to `ask`, both on the
    request's own response (which then turns SSE); without them (2026-07-28) there is no back channel (a 2026
    server sends no requests) and notifications go nowhere, as on the SDK's 2026 JSON path (the 2026 requests that
    could emit are handed over)."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: MessageMetadata
    sink: Sink | None = None
    ask: Ask | None = None
    _cancel_requested: anyio.Event | None = None

    @property
    def can_send_request(self) -> bool:
        return self.ask is not None

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel_requested is None:  # made on demand: only a client's cancel (2025-11-25) sets it
            self._cancel_requested = anyio.Event()
        return self._cancel_requested

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        if self.ask is None:
            raise NoBackChannelError(method)
        return await self.ask(method, params, opts)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        if self.sink is None:
            log.debug("mcp.lean.notification_dropped", method=method)
            return
        message = (
            JSONRPCNotification(jsonrpc="2.0", method=method, params=dict(params))
            if params is not None
            else JSONRPCNotification(jsonrpc="2.0", method=method)
        )
        try:  # fire and forget, as the SDK's dispatcher notifies
            await self.sink(message)
        except Exception as exc:
            log.debug("mcp.lean.notification_dropped", method=method, error=str(exc))

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Hot:
    """A request the lean path answers: its id, method, params, and its 2026 envelope (None: a session's)."""

    request_id: RequestId
    method: str
    params: dict[str, Any] | None
    route: InboundModernRoute | None


class LeanRoute:
    """ASGI app for `/mcp`, in front of `sdk`: the SDK's `StreamableHTTPASGIApp` of a session manager in SSE mode
    (`json_response=False`, the SDK's default and the gateway's) serving `server`. `lifespan_state` answers the
    manager's lifespan state while it runs (None: not running, so the SDK answers). `sessions`: the manager's
    2025-11-25 sessions, whose hot requests the route then serves too (`_lean_sessions.py`); `streamed(name)`:
    whether a tool's 2025-11-25 calls need the SDK's stream (its `poll_after` closes it), so are handed over.
    `served` and `handed_over` count requests."""

    def __init__(
        self,
        sdk: ASGIApp,
        server: Server[Any],
        *,
        lifespan_state: Callable[[], Any],
        sessions: SessionCalls | None = None,
        streamed: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.sdk = sdk
        self.server = server
        self.lifespan_state = lifespan_state
        self.sessions = sessions
        self.streamed = streamed
        self.served = 0
        self.handed_over = 0
        self._unannotated: dict[str, Any] = {}
        """Tool name -> its input schema, when that declares no (valid) `x-mcp-header`: nothing to check."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        era = _era(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if era is None or (era == "session" and self.sessions is None):
            self.handed_over += 1
            await self.sdk(scope, receive, send)
            return
        request = Request(scope, receive)
        read: list[Message] = []
        session: Session | None = None
        try:
            state = self.lifespan_state()
            if state is None:
                raise _Handover("not running")
            pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
            first: dict[str, str] = {}
            for name, value in pairs:  # `dict(request.headers)`: the first value of each name
                first.setdefault(name, value)
            _check_head(request, first)
            if era == "session":
                assert self.sessions is not None
                body = await _read_body(receive, read)
                # Found after the body is read, and registered (`serving`) before anything awaits: a session that
                # ended meanwhile is not served (the SDK answers its 404).
                session = self.sessions.find(scope, first.get("mcp-session-id", ""))
                if session is None:
                    raise _Handover("no session the SDK would serve")
                hot = self._admit_session(session, body)
            else:
                body = await _read_body(receive, read)
                hot = self._admit(request, pairs, first, body)
        except _Handover as exc:
            self.handed_over += 1
            log.debug("mcp.lean.handed_over", reason=exc.reason)
            await self.sdk(scope, _replay(read, receive), send)
            return
        self.served += 1
        if session is not None:
            await self._serve_session(hot, request, state, session, send)
        else:
            await self._serve(hot, request, state, receive, send)

    def _admit(self, request: Request, pairs: list[tuple[str, str]], first: dict[str, str], body: bytes) -> _Hot:
        """The 2026-07-28 request as the lean path serves it, or `_Handover` when any check of the SDK would not
        plainly pass (the SDK then answers, with its own error). `pairs`: the headers as sent; `first`: by name."""
        message, request_id, method, params = _request(body)
        if params is None:
            raise _Handover("no params (a 2026-07-28 request carries its envelope in them)")
        if isinstance(meta := params.get("_meta"), dict) and LOG_LEVEL_META_KEY in meta:
            raise _Handover("log notifications asked for: SSE")
        if find_duplicated_routing_header(pairs) is not None:
            raise _Handover("duplicated routing header")
        route = classify_inbound_request(message, headers=first)
        if isinstance(route, InboundLadderRejection):
            raise _Handover(f"envelope refused ({route.code})")
        if method == "tools/call" and not self._param_headers_agree(params, pairs, request):
            raise _Handover("Mcp-Param headers refused or not checked")
        return _Hot(request_id, method, params, route)

    def _admit_session(self, session: Session, body: bytes) -> _Hot:
        """A 2025-11-25 session's request as the lean path serves it, or `_Handover`. A `notifications/cancelled`
        naming one of the session's lean requests cancels it (and goes on to the SDK, which answers 202)."""
        try:
            decoded: Any = json.loads(body)
        except (ValueError, RecursionError):
            raise _Handover("body is not JSON") from None
        assert self.sessions is not None
        if isinstance(decoded, dict):
            message = cast(dict[str, Any], decoded)
            if message.get("method") == "notifications/cancelled":
                params = message.get("params")
                if message.get("jsonrpc") == "2.0" and "id" not in message and isinstance(params, dict):
                    self.sessions.cancel(session.session_id, cast(dict[str, Any], params).get("requestId"))
                raise _Handover("a notification")
            if "method" not in message and self.sessions.answered(session.session_id, message):
                raise _Handover("the answer to a lean request's question (the SDK answers 202)")
        _, request_id, method, params = _request(body, decoded)
        if method == "tools/call" and isinstance(name := (params or {}).get("name"), str) and self.streamed(name):
            raise _Handover(f"tool {name[:40]!r} closes its stream (poll_after): the SDK's stream")
        return _Hot(request_id, method, params, None)

    def _param_headers_agree(self, params: Mapping[str, Any], pairs: list[tuple[str, str]], request: Request) -> bool:
        """The SDK's `_mcp_param_rejection` for a `tools/call`, with the same schema lookup
        (`get_tool_input_schema`): True when it would pass. Where the SDK would list tools to find the schema, or
        its lookup raises, False (the SDK decides). A schema without `x-mcp-header` checks nothing: remembered
        (by identity: a reloaded tool's schema is a new object) so it is not walked on every call."""
        name = params.get("name")
        if not isinstance(name, str):
            return True
        raw_arguments = params.get("arguments")
        if raw_arguments is not None and not isinstance(raw_arguments, Mapping):
            return True
        arguments = cast(Mapping[str, Any], raw_arguments) if raw_arguments is not None else {}
        if not arguments and not any(header.startswith(_PARAM_PREFIX) for header, _ in pairs):
            return True
        lookup = self.server.get_tool_input_schema
        if lookup is None:
            return self.server.get_request_handler("tools/list") is None
        try:
            schema = lookup(name)
        except Exception:  # the SDK logs it and skips the check: let it
            return False
        if schema is None or self._unannotated.get(name) is schema:
            return True
        if find_invalid_x_mcp_header(schema) is not None or not x_mcp_header_map(schema):
            if len(self._unannotated) >= _REMEMBERED:
                self._unannotated.clear()
            self._unannotated[name] = schema
            return True
        return validate_mcp_param_headers(schema, arguments, request.headers) is None

    async def _serve(self, hot: _Hot, request: Request, state: Any, receive: Receive, send: Send) -> None:
        """Dispatch through the SDK's kernel; answer JSON, or SSE after a silent window; a disconnect cancels the
        handler and answers nothing."""
        assert hot.route is not None
        connection = Connection.from_envelope(
            hot.route.protocol_version, hot.route.client_info, hot.route.client_capabilities
        )
        dctx = _LeanDispatchContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
            request_id=hot.request_id,
            message_metadata=ServerMessageMetadata(request_context=request),
        )
        call = asyncio.create_task(
            _reply(
                hot.request_id,
                _serve_one(self.server, dctx, hot.method, hot.params, connection=connection, lifespan_state=state),
            )
        )
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((call, gone), timeout=SSE_DEFERRAL, return_when=asyncio.FIRST_COMPLETED)
            if call.done():
                await _write_json(call.result(), send)
                return
            if gone.done():
                return
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            while True:
                await send({"type": "http.response.body", "body": _PING, "more_body": True})
                await asyncio.wait((call, gone), timeout=SSE_DEFERRAL, return_when=asyncio.FIRST_COMPLETED)
                if call.done():
                    await send({"type": "http.response.body", "body": _sse_event(call.result()), "more_body": False})
                    return
                if gone.done():
                    return
        finally:
            gone.cancel()
            if not call.done():
                call.cancel()
                await asyncio.wait((call,))

    async def _serve_session(self, hot: _Hot, request: Request, state: Any, session: Session, send: Send) -> None:
        """Dispatch through the SDK's kernel on the session's connection; answer JSON, or SSE from the first
        notification or after a silent window (`SessionReply`). The call runs to its end though the client leaves
        (2025-11-25: only `notifications/cancelled` cancels); the session's end cancels it."""
        assert self.sessions is not None
        reply = SessionReply(send, session, hot.request_id, version_header(request.scope))
        session_id, sessions = session.session_id, self.sessions

        async def ask(method: str, params: Mapping[str, Any] | None, opts: CallOptions | None) -> dict[str, Any]:
            return await sessions.ask(session_id, reply.event, method, params, opts)

        dctx = _LeanDispatchContext(
            transport=TransportContext(kind="jsonrpc", can_send_request=True),
            request_id=hot.request_id,
            message_metadata=ServerMessageMetadata(request_context=request),
            sink=reply.event,
            ask=ask,
        )
        served = _serve_one(
            self.server, dctx, hot.method, hot.params, connection=session.connection, lifespan_state=state, own=False
        )
        call = asyncio.create_task(_reply(hot.request_id, served, errors=_legacy_error))
        with self.sessions.serving(session, hot.request_id, call, lambda: dctx.cancel_requested.set()) as entry:
            try:
                pinging = True
                while not call.done():
                    await asyncio.wait((call,), timeout=SSE_DEFERRAL)
                    if not call.done() and pinging:
                        try:
                            await reply.ping()
                        except Exception as exc:  # the client is gone: the call goes on all the same
                            log.debug("mcp.lean.ping_failed", error=str(exc))
                            pinging = False
            finally:
                if not call.done():  # this request itself is cancelled (the server stops)
                    call.cancel()
                    await asyncio.wait((call,))
            if entry.by_peer:
                await reply.answer(cancelled_reply(hot.request_id), streamed=True)
            elif call.cancelled():
                await reply.abandon()
            else:
                await reply.answer(call.result())


def _era(scope: Scope) -> str | None:
    """Where the session manager would route the request, by its first `MCP-Protocol-Version` header (the one the
    manager reads): "modern" (a 2026 revision, which its 2026 entry serves), "session" (no header or a handshake
    revision, with an `Mcp-Session-Id`: a stateful session's), else None (the SDK answers)."""
    version: str | None = None
    has_session = False
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER and version is None:
            version = value.decode("latin-1")
        elif name == _SESSION_HEADER:
            has_session = True
    if version is not None and version in MODERN_PROTOCOL_VERSIONS:
        return "modern"
    if has_session and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS):
        return "session"
    return None


def _request(body: bytes, decoded: Any = None) -> tuple[dict[str, Any], RequestId, str, dict[str, Any] | None]:
    """The body as one JSON-RPC request of a lean method (the message, its id, method and params) without a
    progress token, or `_Handover`."""
    if decoded is None:
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            raise _Handover("body is not JSON") from None
    if not isinstance(decoded, dict):
        raise _Handover("body is not one JSON-RPC request")
    message = cast(dict[str, Any], decoded)
    request_id, method, params = message.get("id"), message.get("method"), message.get("params")
    if message.get("jsonrpc") != "2.0" or not (type(request_id) is int or type(request_id) is str):
        raise _Handover("not a JSON-RPC request (a notification, a bad id or version)")
    if not isinstance(method, str) or method not in LEAN_METHODS or not (params is None or isinstance(params, dict)):
        raise _Handover(f"method {str(method)[:40]!r} (lean: {', '.join(sorted(LEAN_METHODS))})")
    params = cast(dict[str, Any] | None, params)
    meta = (params or {}).get("_meta")
    if isinstance(meta, dict) and "progressToken" in meta:
        raise _Handover("progress asked for: SSE")
    return message, request_id, method, params


def _check_head(request: Request, first: dict[str, str]) -> None:
    """The SDK's checks of the request head before it reads the body: `Content-Type` (its transport security
    check, on even with DNS-rebinding protection off: the Guard does Host and Origin), and `Accept` (SSE mode
    needs JSON and SSE both; a JSON-only `Accept` gets the SDK's 406)."""
    content_type = first.get("content-type")
    if content_type is None or not content_type.lower().startswith("application/json"):
        raise _Handover("content-type")
    if not any(part.strip() == "application/json" for part in content_type.split(";")[0].split(",")):
        raise _Handover("content-type")  # the 2025 transport's own check, stricter
    has_json, has_sse = check_accept_headers(request)
    if not (has_json and has_sse):
        raise _Handover("accept")


async def _read_body(receive: Receive, read: list[Message]) -> bytes:
    """The whole body (the Guard has bounded its size and time); every message read is kept in `read` for a
    hand-over."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            raise _Handover("the client left")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(read: list[Message], receive: Receive) -> Receive:
    """`receive`, giving back first what was already read."""
    if not read:
        return receive
    pending = list(read)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the SDK's `watch_disconnect`)."""
    while (await receive()).get("type") != "http.disconnect":
        pass


async def _serve_one(
    server: Server[Any],
    dctx: _LeanDispatchContext,
    method: str,
    params: Mapping[str, Any] | None,
    *,
    connection: Connection,
    lifespan_state: Any,
    own: bool = True,
) -> dict[str, Any]:
    """The SDK's `serve_one`, leaving no reference cycle behind. Its `ServerRunner` caches its bound `on_request`
    on itself (runner -> method -> runner), so every request's runner, connection and their parts (16 objects)
    waited for the cyclic garbage collector, which then spent about a fifth of the process's CPU under load;
    dropping the cached method lets reference counting free them at the request's end. `own`: the connection is
    this request's (2026-07-28), closed at its end; a session's (2025-11-25) is left open."""
    runner = ServerRunner(server, connection, lifespan_state)
    try:
        return await runner.on_request(dctx, method, params)
    finally:
        runner.__dict__.pop("on_request", None)
        if own:
            await aclose_shielded(connection)


async def _reply(
    request_id: RequestId,
    result: Awaitable[dict[str, Any]],
    *,
    errors: Callable[[Exception], ErrorData] = modern_error_data,
) -> JSONRPCResponse | JSONRPCError:
    """The handler's outcome as the JSON-RPC reply, any exception mapped by `errors`: on 2026-07-28 the SDK's
    `_to_jsonrpc_response` (`modern_error_data`), on 2025-11-25 its dispatcher's (`_legacy_error`)."""
    try:
        return JSONRPCResponse(jsonrpc="2.0", id=request_id, result=await result)
    except Exception as exc:
        return JSONRPCError(jsonrpc="2.0", id=request_id, error=errors(exc))


def _legacy_error(exc: Exception) -> ErrorData:
    """The SDK's `JSONRPCDispatcher._handle_request` mapping: an `MCPError`'s own error, a validation error's
    INVALID_PARAMS, else code 0 with the exception's text (logged)."""
    error = handler_exception_to_error_data(exc)
    if error is None:
        log.error("mcp.lean.handler_raised", error=str(exc), exc_info=exc)
        error = ErrorData(code=0, message=str(exc))
    return error


def _dumped(message: JSONRPCResponse | JSONRPCError) -> bytes:
    body = message.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(body, separators=(",", ":")).encode()


async def _write_json(message: JSONRPCResponse | JSONRPCError, send: Send) -> None:
    """The SDK's `_write` (a Starlette `Response`): the status from `ERROR_CODE_HTTP_STATUS`, the same headers."""
    error: ErrorData | None = message.error if isinstance(message, JSONRPCError) else None
    status = ERROR_CODE_HTTP_STATUS.get(error.code, 200) if error is not None else 200
    body = _dumped(message)
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_TYPE)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _sse_event(message: JSONRPCResponse | JSONRPCError) -> bytes:
    """The SDK's `_sse_event`: one `event: message` frame."""
    return b"event: message\r\ndata: " + _dumped(message) + b"\r\n\r\n"
