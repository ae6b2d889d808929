"""Limits on the HTTP side, tried as a hostile client would: a header flood, connections that never finish a
request, a partial body, a flood of requests, foreign Host and Origin values on a route that is not /mcp, a run of
wrong tokens; and the in-flight limit on tool calls. A real uvicorn on a free port (the gateway's own config and
protocol), a small starlette app wrapped in the guards, raw sockets; timeouts of about a second."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.testing import capture_logs

from mcp_gateway.core.limits import CallLimits, LimitExceeded
from mcp_gateway.errors import ConfigError, GatewayError
from mcp_gateway.server._connections import ConnectionLimits, uvicorn_config
from mcp_gateway.server._guard import AuthFailureThrottle, CallerRateLimit, Guard, RateLimit
from mcp_gateway.settings import load_settings

SECURITY = TransportSecuritySettings(
    allowed_hosts=["127.0.0.1:*", "localhost:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
)
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
FAST = ConnectionLimits(max_header_bytes=16 * 1024, header_timeout=1.0)


class Verifier:
    """Two valid bearer tokens; anything else is refused (the SDK then answers 401)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        subject = TOKENS.get(token)
        return AccessToken(token=token, client_id=f"client-{subject}", scopes=[], subject=subject) if subject else None


class App:
    """A small app behind the guards: `/custom` (open) and `/private` (a bearer token required, the SDK's way)."""

    def __init__(self, *, rate: str | None = None, throttle: AuthFailureThrottle | None = None, **guard: Any) -> None:
        self.calls: list[str] = []

        async def custom(request: Request) -> JSONResponse:
            body = await request.body()
            self.calls.append(request.url.path)
            return JSONResponse({"ok": True, "bytes": len(body)})

        async def private(scope: Scope, receive: Receive, send: Send) -> None:
            user = scope["user"]
            assert isinstance(user, AuthenticatedUser)
            self.calls.append(scope["path"])
            await JSONResponse({"subject": user.access_token.subject})(scope, receive, send)

        middleware = [Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(Verifier()))]
        if rate is not None:
            middleware.append(Middleware(CallerRateLimit, limit=RateLimit(rate)))
        inner = Starlette(
            routes=[
                Route("/custom", custom, methods=["GET", "POST"]),
                Route("/private", RequireAuthMiddleware(private, [])),
            ],
            middleware=middleware,
        )
        self.asgi: ASGIApp = Guard(inner, security=SECURITY, auth_failures=throttle, **guard)


@asynccontextmanager
async def serving(app: App, limits: ConnectionLimits = FAST) -> AsyncGenerator[int]:
    """uvicorn with the gateway's config and protocol on a free port of 127.0.0.1; yields the port."""
    config = uvicorn_config(app.asgi, host="127.0.0.1", port=0, limits=limits, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - polling uvicorn's started flag
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def connection(port: int) -> AsyncGenerator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def request(path: str = "/custom", *, host: str = "127.0.0.1:8000", method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def ask(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    """One request on a new connection: status, headers, the JSON body."""
    async with connection(port) as (reader, writer), asyncio.timeout(5):
        writer.write(data)
        await writer.drain()
        status, headers, body = await read_response(reader)
        return status, headers, json.loads(body) if body else None


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (which must happen within `seconds`)."""
    async with asyncio.timeout(seconds):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


# --- request heads: size and time -----------------------------------------------------------------------------


async def test_an_8_mb_header_is_refused_and_the_connection_closed() -> None:
    app = App()
    async with serving(app) as port, connection(port) as (reader, writer):
        writer.write(b"GET /custom HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-Flood: ")
        sent, outcome = 0, "sent everything"
        try:
            async with asyncio.timeout(10):
                while sent < 8 * 1024 * 1024:
                    writer.write(b"a" * 65536)
                    await writer.drain()
                    sent += 65536
                writer.write(b"\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            outcome = "reset while sending"
        answer = await closed_within(reader, 5)
    # Closed after the first 16 KiB: the client sees a reset while it sends (the usual outcome) or, when it
    # reads in time, the 431; never a response from the app.
    assert outcome == "reset while sending" or answer.startswith(b"HTTP/1.1 431"), (outcome, answer[:100])
    assert app.calls == []


async def test_a_head_just_over_the_limit_gets_431_one_under_it_is_served() -> None:
    app = App()
    async with serving(app) as port:
        status, _, body = await ask(port, request(X_Pad="a" * (15 * 1024)))
        assert status == 200, body
        async with connection(port) as (reader, writer):
            writer.write(request(X_Pad="a" * (17 * 1024))[:-4])  # not finished: the parser is still in the head
            await writer.drain()
            answer = await closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert b"max_header_bytes" in answer
    assert app.calls == ["/custom"]


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    async with serving(App()) as port, connection(port) as (reader, _):
        started = time.monotonic()
        answer = await closed_within(reader, 4)
        elapsed = time.monotonic() - started
    assert answer == b""  # nothing said, nothing answered
    assert 0.8 < elapsed < 3, elapsed


async def test_a_head_trickled_a_byte_at_a_time_gets_408_at_the_timeout() -> None:
    """Slowloris: every byte comes in time, the head never ends; the timeout is on the whole head."""
    app = App()
    async with serving(app) as port, connection(port) as (reader, writer):
        started = time.monotonic()
        writer.write(b"GET /custom HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            try:
                for _ in range(40):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            except (ConnectionError, OSError):
                pass

        dripping = asyncio.create_task(trickle())
        answer = await closed_within(reader, 4)
        elapsed = time.monotonic() - started
        dripping.cancel()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert 0.8 < elapsed < 3, elapsed
    assert app.calls == []


async def test_a_partial_head_after_a_kept_alive_response_gets_408() -> None:
    app = App()
    async with serving(app) as port, connection(port) as (reader, writer):
        writer.write(request())
        await writer.drain()
        status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200 and headers.get("connection") != "close"
        writer.write(b"GET /custom HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next request, never finished
        await writer.drain()
        answer = await closed_within(reader, 4)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert app.calls == ["/custom"]


# --- request bodies ---------------------------------------------------------------------------------------------


async def test_a_partial_body_gets_408_and_the_connection_closed() -> None:
    app = App(body_timeout=1.0)
    async with serving(app) as port, connection(port) as (reader, writer):
        started = time.monotonic()
        writer.write(request(method="POST", Content_Length="100") + b"0123456789")
        await writer.drain()
        status, headers, body = await asyncio.wait_for(read_response(reader), 4)
        rest = await closed_within(reader, 2)
        elapsed = time.monotonic() - started
    assert (status, headers["connection"], rest) == (408, "close", b"")
    assert json.loads(body)["error"] == "body_timeout"
    assert 0.8 < elapsed < 3, elapsed
    assert app.calls == []


async def test_a_body_whose_chunks_stop_coming_gets_408_at_the_gap_timeout() -> None:
    app = App(body_timeout=30.0, body_gap_timeout=0.5)
    async with serving(app) as port, connection(port) as (reader, writer):
        started = time.monotonic()
        writer.write(request(method="POST", Content_Length="100") + b"0123456789")
        await writer.drain()
        status, _, _ = await asyncio.wait_for(read_response(reader), 4)
        elapsed = time.monotonic() - started
    assert status == 408
    assert elapsed < 2, elapsed


async def test_a_body_over_the_limit_gets_413_a_whole_one_is_served() -> None:
    app = App(max_body_bytes=1024)
    async with serving(app) as port:
        status, _, body = await ask(port, request(method="POST", Content_Length="10") + b"0123456789")
        assert (status, body["bytes"]) == (200, 10)
        status, _, body = await ask(port, request(method="POST", Content_Length="4096") + b"x" * 4096)
        assert (status, body["error"]) == (413, "body_too_large")
        chunked = request(method="POST", Transfer_Encoding="chunked") + b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n"
        status, _, body = await ask(port, chunked)  # no Content-Length to refuse up front: counted as it comes
        assert status == 413
    assert app.calls == ["/custom"]


# --- Host and Origin on every route -------------------------------------------------------------------------------


async def test_host_and_origin_are_checked_on_a_route_that_is_not_mcp() -> None:
    app = App()
    async with serving(app) as port:
        status, _, body = await ask(port, request(host="evil.example"))
        assert status == 421
        assert body["host"] == "evil.example" and body["allowed"] == SECURITY.allowed_hosts
        assert "evil.example" in body["message"]
        status, _, body = await ask(port, request(host="127.0.0.1:80@evil.example"))
        assert status == 421  # a port wildcard takes a port, nothing else
        status, _, body = await ask(port, request(Origin="http://evil.example"))
        assert (status, body["origin"], body["allowed"]) == (403, "http://evil.example", SECURITY.allowed_origins)
        status, _, _ = await ask(port, request(host=f"localhost:{port}", Origin="http://localhost:3000"))
        assert status == 200
        status, _, _ = await ask(port, request(host=f"127.0.0.1:{port}"))  # no Origin: not a browser, allowed
        assert status == 200
    assert app.calls == ["/custom", "/custom"]


# --- rates ---------------------------------------------------------------------------------------------------------


async def test_a_caller_past_its_rate_gets_429_with_retry_after_others_keep_theirs() -> None:
    app = App(rate="5/minute")
    async with serving(app) as port:
        alice = request("/private", Authorization="Bearer alice-token")
        for _ in range(5):
            status, _, _ = await ask(port, alice)
            assert status == 200
        status, headers, body = await ask(port, alice)
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= 60
        assert (body["error"], body["limit"], body["rate"], body["caller"]) == (
            "rate_limited",
            "rate_limit",
            "5/minute",
            "sub:alice",
        )
        status, _, body = await ask(port, request("/private", Authorization="Bearer bob-token"))
        assert (status, body) == (200, {"subject": "bob"})  # same address, another subject: its own count
        for _ in range(5):  # no token: counted by the client address
            status, _, _ = await ask(port, request())
            assert status == 200
        status, _, body = await ask(port, request())
        assert (status, body["caller"]) == (429, "ip:127.0.0.1")


@pytest.mark.parametrize("spec", ["5/second", "5/second;100/minute"])
def test_a_rate_counts_in_the_callers_thread_and_forgets_old_windows(spec: str) -> None:
    """The rate is the `limits` library's moving window; its expiry pass runs at most once a second in the hit
    that finds it due (no timer thread per hit), and drops the counts of windows that have gone."""
    import threading

    from limits.storage import MemoryStorage

    rate = RateLimit(spec)
    threads = threading.active_count()
    assert [rate.hit("a") for _ in range(5)] == [None] * 5
    wait = rate.hit("a")
    assert wait is not None and 0 < wait <= 1
    assert rate.hit("b") is None  # another key keeps its own
    for _ in range(200):
        rate.hit("c")
    assert threading.active_count() <= threads  # no thread started per hit (the library's default starts one)
    storage = rate._limiter.storage  # pyright: ignore[reportPrivateUsage]
    assert isinstance(storage, MemoryStorage)
    second = "LIMITER/a/5/1/second"
    assert len(storage.events[second]) == 5
    time.sleep(1.1)  # the second's window has gone: the next hit (the pass is due) drops its entries
    assert rate.hit("d") is None
    assert storage.events[second] == []
    assert rate.hit("a") is None


def test_a_rate_that_is_not_one_is_refused_at_load_with_its_key() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(rate_limit="lots per second")
    (problem,) = raised.value.problems
    assert problem.key_path == "rate_limit"
    assert "'lots per second' is not a rate" in problem.message and "20/second" in problem.message
    assert load_settings(rate_limit="none").rate_limit is None
    assert load_settings(rate_limit="20/second;600/minute").rate_limit == "20/second;600/minute"


# --- failed authentication ---------------------------------------------------------------------------------------


async def test_the_eleventh_wrong_token_gets_429_and_the_refusals_are_logged_without_the_token() -> None:
    app = App(throttle=AuthFailureThrottle(limit=10, window=60, cooloff=30))
    async with serving(app) as port:
        with capture_logs() as logs:
            statuses: list[int] = []
            for i in range(10):  # a new address each time, says the client: no proxy is trusted, it is ignored
                wrong = request("/private", Authorization=f"Bearer guess-{i:04d}", X_Forwarded_For=f"10.0.0.{i}")
                statuses.append((await ask(port, wrong))[0])
            assert statuses == [401] * 10
            status, headers, body = await ask(port, request("/private", Authorization="Bearer guess-0010"))
            assert (status, body["error"], body["limit"]) == (429, "auth_throttled", "auth_failure_limit")
            assert 1 <= int(headers["retry-after"]) <= 30
            status, _, _ = await ask(port, request("/private", Authorization="Bearer alice-token"))
            assert status == 429  # the cool-off comes before anything else, a good token too
    refused = [e for e in logs if e["event"] == "auth.refused"]
    assert 1 <= len(refused) <= 3  # at most one line a second per address, the rest counted
    assert refused[0]["client_ip"] == "127.0.0.1" and refused[0]["path"] == "/private"
    assert refused[0]["count"] == 1 and refused[0]["log_level"] == "warning"
    assert len(refused) + sum(e["suppressed"] for e in refused) <= 10
    assert [e["failures"] for e in logs if e["event"] == "auth.throttled"] == [10]
    assert "guess-" not in repr(logs)
    assert app.calls == []


async def test_every_refusal_is_counted_in_the_log() -> None:
    throttle = AuthFailureThrottle(limit=10, window=60, cooloff=30, log_interval=0)
    app = App(throttle=throttle)
    async with serving(app) as port:
        with capture_logs() as logs:
            for _ in range(4):
                assert (await ask(port, request("/private")))[0] == 401
    assert [e["count"] for e in logs if e["event"] == "auth.refused"] == [1, 2, 3, 4]
    assert throttle.retry_after("127.0.0.1") is None


def test_the_throttle_cools_off_and_forgets() -> None:
    now = [0.0]
    throttle = AuthFailureThrottle(limit=3, window=10, cooloff=5, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("192.0.2.1", "/admin", 401)
    assert throttle.retry_after("192.0.2.1") == 5
    assert throttle.retry_after("192.0.2.2") is None
    now[0] = 5.0
    assert throttle.retry_after("192.0.2.1") is None
    throttle.failed("192.0.2.1", "/admin", 401)
    assert throttle.retry_after("192.0.2.1") is None  # a fresh count after the cool-off
    now[0] = 100.0
    throttle.failed("192.0.2.3", "/admin", 401)
    assert throttle.tracked == 1  # 192.0.2.1, quiet for a window, is forgotten


# --- tool calls in flight ------------------------------------------------------------------------------------------


async def test_in_flight_calls_are_limited_per_caller_and_in_all() -> None:
    limits = CallLimits(max_in_flight_per_caller=2, max_in_flight_total=3)
    async with limits.slot("alice"), limits.slot("alice"):
        with pytest.raises(LimitExceeded) as raised:
            async with limits.slot("alice"):
                pytest.fail("a third call of alice ran")
        refused = raised.value
        assert isinstance(refused, GatewayError)
        assert (refused.limit, refused.caller, refused.maximum) == ("max_in_flight_per_caller", "alice", 2)
        assert "'alice'" in str(refused) and "max_in_flight_per_caller=2" in str(refused)
        async with limits.slot("bob"):
            assert (limits.in_flight("alice"), limits.in_flight("bob"), limits.in_flight()) == (2, 1, 3)
            with pytest.raises(LimitExceeded, match=r"max_in_flight=3.*'carol'") as raised:
                async with limits.slot("carol"):
                    pytest.fail("a fourth call ran")
            assert raised.value.limit == "max_in_flight" and raised.value.retry_after is not None
    assert limits.in_flight() == 0 and limits.in_flight("alice") == 0


async def test_a_slot_is_given_back_when_the_call_fails_or_is_cancelled() -> None:
    limits = CallLimits(max_in_flight_per_caller=1, max_in_flight_total=10)
    with pytest.raises(RuntimeError):
        async with limits.slot("alice"):
            raise RuntimeError("the call failed")
    entered = asyncio.Event()

    async def call() -> None:
        async with limits.slot("alice"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await asyncio.wait_for(entered.wait(), 5)
    assert limits.in_flight("alice") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limits.in_flight() == 0
    async with limits.slot("alice"):  # the slot is free again
        pass


async def test_mcp_requests_in_flight_are_refused_at_the_door_per_caller() -> None:
    """Past `max_requests_in_flight_per_caller`, a POST to /mcp is answered 429 before the SDK sees it; other
    callers, other paths and GETs pass; the slot comes back when the request ends."""
    release = asyncio.Event()
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        if scope["path"] == "/mcp" and scope["method"] == "POST":
            await release.wait()
        await JSONResponse({"ok": True})(scope, receive, send)

    from mcp_gateway.server._guard import RequestsInFlight

    limits = CallLimits(1, 100)
    app = RequestsInFlight(inner, limits)

    async def call(method: str, path: str, ip: str) -> int:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {"type": "http", "method": method, "path": path, "headers": [], "client": (ip, 1)}
        await app(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))

    first = asyncio.create_task(call("POST", "/mcp", "10.0.0.1"))
    async with asyncio.timeout(5):
        while limits.in_flight("ip:10.0.0.1") == 0:  # noqa: ASYNC110 - until the first request is inside
            await asyncio.sleep(0.01)
    assert await call("POST", "/mcp", "10.0.0.1") == 429
    assert await call("GET", "/healthz", "10.0.0.1") == 200
    other = asyncio.create_task(call("POST", "/mcp", "10.0.0.2"))
    await asyncio.sleep(0.05)
    assert not other.done()  # another caller got in (it waits like the first)
    release.set()
    assert await first == 200 and await other == 200
    assert limits.in_flight() == 0
    assert await call("POST", "/mcp", "10.0.0.1") == 200
    assert seen.count("/mcp") == 3
