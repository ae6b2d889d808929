"""Guards on every HTTP route: Host and Origin, request-body read time and size, rates per caller, and a throttle
on failed authentication per client address.

Two ASGI middlewares, placed at two heights of the app:

    Guard(                                   # outermost: before routing, auth and the SDK's transport
        Starlette(middleware=[
            Middleware(AuthenticationMiddleware, backend=...),
            Middleware(CallerRateLimit, limit=RateLimit(settings.rate_limit)),   # right after authentication
            Middleware(AuthContextMiddleware), ...
        ], routes=...),
        security=TransportSecuritySettings(...), ...)

`Guard` answers, in this order, before the app sees the request: 429 to an address in its failed-auth cool-off,
421 to a Host not served, 403 to an Origin not allowed, 429 past the optional per-address rate, 413 to a body
over the size limit, 408 (and the connection closed) to a body not received in time. It watches the app's
answers: 401 and 403 count as failed authentications of the client address (logged as `auth.refused`).
`CallerRateLimit` keys the rate by the authenticated subject (the SDK's `AuthenticatedUser` in `scope["user"]`),
else by the client address, so it must run after `AuthenticationMiddleware`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_gateway.core.limits import CallLimits, LimitExceeded
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry

__all__ = [
    "AuthFailureThrottle",
    "CallerRateLimit",
    "Guard",
    "RateLimit",
    "RequestsInFlight",
    "caller_key",
    "client_ip",
    "host_allowed",
    "origin_allowed",
]

log = structlog.get_logger(__name__)

_SHOWN = 200
"""At most this many characters of a refused value are echoed back or logged."""


def client_ip(scope: Scope) -> str:
    """The client's address as the server saw it (or as a trusted proxy said, with uvicorn's proxy headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def caller_key(scope: Scope) -> str:
    """Who the caller is for rate limits: `sub:<subject>` once authenticated (the token's subject, else its
    client id), else `ip:<client address>`."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        token = user.access_token
        return "sub:" + (token.subject or token.client_id)
    return "ip:" + client_ip(scope)


def _matches(value: str, allowed: Sequence[str]) -> bool:
    """The SDK's rule (`TransportSecurityMiddleware`): an exact match, or `base:*` for `base:<port>`; the port
    must be digits here (the SDK takes anything after the colon)."""
    if value in allowed:
        return True
    for pattern in allowed:
        if pattern.endswith(":*"):
            base = pattern[:-1]  # keeps the colon
            if value.startswith(base) and value[len(base) :].isdigit():
                return True
    return False


def host_allowed(host: str | None, security: TransportSecuritySettings) -> bool:
    """Whether a Host header is served (always, with DNS-rebinding protection off). A missing Host is refused."""
    if not security.enable_dns_rebinding_protection:
        return True
    return bool(host) and _matches(host or "", security.allowed_hosts)


def origin_allowed(origin: str | None, security: TransportSecuritySettings) -> bool:
    """Whether an Origin header is allowed: absent (not a browser's cross-origin request), or listed."""
    if not security.enable_dns_rebinding_protection or not origin:
        return True
    return _matches(origin, security.allowed_origins)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (names are lower-case in ASGI), without the whitespace around it that HTTP
    says is not part of it (uvicorn's parser keeps it)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.strip(b" \t").decode("latin-1")
    return None


def _auth_failure(scope: Scope, status: int) -> str:
    """Why a request failed authentication, for metrics: `missing_token` or `invalid_token` (401),
    `insufficient_scope` (403)."""
    if status == 403:
        return "insufficient_scope"
    return "invalid_token" if _header(scope, b"authorization") is not None else "missing_token"


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "..."


def _refusal(status: int, error: str, message: str, *, retry_after: float | None = None, **extra: Any) -> JSONResponse:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status in (408, 413):
        headers["Connection"] = "close"
    body: dict[str, Any] = {"error": error, "message": message, **extra}
    if retry_after is not None:
        body["retry_after"] = max(1, math.ceil(retry_after))
    return JSONResponse(body, status_code=status, headers=headers)


class _LazyExpiryStorage(MemoryStorage):
    """The `limits` library's memory storage with its expiry pass (dropping counts whose window has gone) run at
    most once a second by the hit that finds it due, instead of in a new timer thread started 10 ms after each
    hit: a thread start per request under load, about 2% of the gateway's CPU. The counting is the library's."""

    EXPIRE_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._expire_due = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the library's (name-mangled) scheduler
        now = time.monotonic()
        if now >= self._expire_due:
            self._expire_due = now + self.EXPIRE_EVERY
            self._MemoryStorage__expire_events()  # pyright: ignore[reportAttributeAccessIssue]


_REMEMBERED_KEYS = 10_000


class RateLimit:
    """A rate per key in the `limits` string syntax ("20/second", "100/minute;1000/hour": every part must hold),
    counted over a moving window, in this process's memory. `hit(key)` takes one request and answers None, or
    the seconds to wait when the key is over its rate (then nothing is taken)."""

    def __init__(self, spec: str, *, setting: str = "rate_limit") -> None:
        try:
            self.items: list[RateLimitItem] = parse_many(spec)
        except ValueError:
            raise ValueError(
                f"{setting}: {spec!r} is not a rate; write it as '<count>/<unit>' or '<count> per <n> <unit>' "
                "(units: second, minute, hour, day), several joined by ';', e.g. '20/second;600/minute'"
            ) from None
        self.spec = spec
        self.setting = setting
        self._storage = _LazyExpiryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._one = (self.items[0].amount, self.items[0].get_expiry()) if len(self.items) == 1 else None
        self._keys: dict[str, str] = {}
        """Caller -> its storage key for a single rate (`key_for`, built once: it is a tenth of a request's cost)."""

    def hit(self, key: str) -> float | None:
        """None: allowed and counted. Else the seconds until the key may try again."""
        if self._one is not None:  # one rate: the hit is the test (a refused hit takes nothing)
            stored = self._keys.get(key)
            if stored is None:
                if len(self._keys) >= _REMEMBERED_KEYS:
                    self._keys.clear()
                stored = self._keys[key] = self.items[0].key_for(key)
            amount, expiry = self._one  # the strategy's `hit`, with its key built once
            over = [] if self._storage.acquire_entry(stored, amount, expiry) else self.items
        else:  # several: take from none unless every one allows it
            over = [item for item in self.items if not self._limiter.test(item, key)]
            if not over:
                for item in self.items:
                    self._limiter.hit(item, key)
        if not over:
            return None
        now = time.time()
        return max(max(self._limiter.get_window_stats(item, key).reset_time - now, 0.0) for item in over)

    def refusal(self, key: str, retry_after: float) -> JSONResponse:
        """The 429 to answer a key over its rate."""
        return _refusal(
            429,
            "rate_limited",
            f"too many requests from {_shown(key)}: the limit is {self.spec} ({self.setting}); "
            f"retry after {max(1, math.ceil(retry_after))} s",
            retry_after=retry_after,
            limit=self.setting,
            rate=self.spec,
            caller=_shown(key),
        )


class CallerRateLimit:
    """ASGI middleware: the rate limit per caller (`caller_key`). Place it right after (inside)
    `AuthenticationMiddleware`, so that `scope["user"]` is set; anywhere, it limits by client address."""

    def __init__(self, app: ASGIApp, limit: RateLimit, telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.app = app
        self.limit = limit
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = caller_key(scope)
            wait = self.limit.hit(key)
            if wait is not None:
                self.telemetry.limit_refused(self.limit.setting)
                await self.limit.refusal(key, wait)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestsInFlight:
    """ASGI middleware: at most `limits.max_in_flight_per_caller` MCP requests (POST) in flight per caller
    (`caller_key`), and `limits.max_in_flight_total` in all; past that, 429 with `Retry-After` at once, before the
    SDK parses the request, so a flood from one caller costs others little. Place it after authentication."""

    def __init__(
        self, app: ASGIApp, limits: CallLimits, *, path: str = "/mcp", telemetry: Telemetry = NO_TELEMETRY
    ) -> None:
        self.app = app
        self.limits = limits
        self.path = path
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        key = caller_key(scope)
        try:
            self.limits.acquire(key)
        except LimitExceeded as exc:
            setting = "max_requests_in_flight_per_caller" if exc.limit == "max_in_flight_per_caller" else exc.limit
            self.telemetry.limit_refused(setting if setting != "max_in_flight" else "limit_concurrency")
            message = f"{exc.maximum} MCP requests of {_shown(key)} are in flight, the most allowed ({setting})"
            refusal = _refusal(429, "too_many_in_flight", message, retry_after=1.0, limit=setting, caller=_shown(key))
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.release(key)


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque[float])
    blocked_until: float = 0.0
    last_log: float = -math.inf
    suppressed: int = 0


class AuthFailureThrottle:
    """Failed authentications per client address: after `limit` within `window` seconds, the address is answered
    429 for `cooloff` seconds before anything else. Each failure is logged at warning as `auth.refused` (client
    ip, path, status, count in the window), at most one line per address per `log_interval` seconds; a line says
    how many were left out since the last (`suppressed`). Headers, and so tokens, are never logged."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        cooloff: float = 60.0,
        *,
        log_interval: float = 1.0,
        statuses: Sequence[int] = (401, 403),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or cooloff <= 0:
            raise ValueError(
                f"auth failure throttle: limit >= 1, window > 0, cooloff > 0; got {limit}, {window}, {cooloff}"
            )
        self.limit = limit
        self.window = window
        self.cooloff = cooloff
        self.log_interval = log_interval
        self.statuses = frozenset(statuses)
        self._clock = clock
        self._by_ip: dict[str, _Failures] = {}
        self._swept = clock()

    @property
    def tracked(self) -> int:
        """How many addresses are remembered (with failures in the window, or in their cool-off)."""
        return len(self._by_ip)

    def retry_after(self, ip: str) -> float | None:
        """Seconds left of the address's cool-off, or None when it may try."""
        record = self._by_ip.get(ip)
        if record is None:
            return None
        left = record.blocked_until - self._clock()
        return left if left > 0 else None

    def failed(self, ip: str, path: str, status: int) -> None:
        """Count (and log) one failed authentication of `ip`."""
        now = self._clock()
        self._sweep(now)
        record = self._by_ip.setdefault(ip, _Failures())
        while record.times and record.times[0] <= now - self.window:
            record.times.popleft()
        record.times.append(now)
        count = len(record.times)
        if now - record.last_log >= self.log_interval:
            log.warning(
                "auth.refused",
                client_ip=ip,
                path=_shown(path),
                status=status,
                count=count,
                window=self.window,
                suppressed=record.suppressed,
            )
            record.last_log = now
            record.suppressed = 0
        else:
            record.suppressed += 1
        if count >= self.limit:
            record.blocked_until = now + self.cooloff
            record.times.clear()  # after the cool-off, a fresh count
            log.warning("auth.throttled", client_ip=ip, failures=count, window=self.window, cooloff=self.cooloff)

    def refusal(self, ip: str, retry_after: float) -> JSONResponse:
        return _refusal(
            429,
            "auth_throttled",
            f"too many failed authentications from {_shown(ip)} ({self.limit} within {self.window:g} s, "
            f"auth_failure_limit); retry after {max(1, math.ceil(retry_after))} s",
            retry_after=retry_after,
            limit="auth_failure_limit",
        )

    def _sweep(self, now: float) -> None:
        """Forget addresses with no failure in the window and no cool-off, once per window (bounded memory)."""
        if now - self._swept < self.window:
            return
        self._swept = now
        stale = [
            ip
            for ip, r in self._by_ip.items()
            if r.blocked_until <= now and (not r.times or r.times[-1] <= now - self.window)
        ]
        for ip in stale:
            del self._by_ip[ip]


class Guard:
    """The outermost ASGI middleware (see the module's docstring for the order of its answers).

    `security`: the Host and Origin allow-lists (the SDK's `TransportSecuritySettings`, the same that `/mcp`
    gets). `body_timeout`: seconds to receive the whole body; `body_gap_timeout`: seconds between two of its
    chunks (None: only the whole). `max_body_bytes`: larger bodies get 413 (None: no limit here).
    `ip_rate_limit`: an optional rate per client address over every request. `auth_failures`: the failed-auth
    throttle (None: off). `telemetry`: told of each refusal by a limit (by its setting) and of each 401 or 403 the
    app answers (`auth_failed`). Lifespan and other scopes pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        security: TransportSecuritySettings,
        body_timeout: float = 30.0,
        body_gap_timeout: float | None = None,
        max_body_bytes: int | None = 4 * 1024 * 1024,
        ip_rate_limit: RateLimit | None = None,
        auth_failures: AuthFailureThrottle | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.security = security
        self.body_timeout = body_timeout
        self.body_gap_timeout = body_gap_timeout
        self.max_body_bytes = max_body_bytes
        self.ip_rate_limit = ip_rate_limit
        self.auth_failures = auth_failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, ip = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        read = await self._read_body(scope, receive)
        if isinstance(read, JSONResponse):
            await read(scope, receive, send)
            return
        replay = read

        async def replayed() -> Message:
            return replay.popleft() if replay else await receive()

        throttle = self.auth_failures
        if throttle is None and self.telemetry is NO_TELEMETRY:
            await self.app(scope, replayed, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if throttle is not None and status in throttle.statuses:
                    throttle.failed(ip, scope.get("path", ""), status)
                if status in (401, 403):
                    self.telemetry.auth_failed(_auth_failure(scope, status))
            await send(message)

        await self.app(scope, replayed, watched)

    def _check(self, scope: Scope) -> tuple[JSONResponse | None, str]:
        ip = client_ip(scope)
        if self.auth_failures is not None and (wait := self.auth_failures.retry_after(ip)) is not None:
            self.telemetry.limit_refused("auth_failure_limit")
            return self.auth_failures.refusal(ip, wait), ip
        host, origin = _header(scope, b"host"), _header(scope, b"origin")
        if not host_allowed(host, self.security):
            shown = _shown(host) if host else None
            return _refusal(
                421,
                "misdirected_host",
                f"Host {shown!r} is not served here; allowed: {', '.join(self.security.allowed_hosts) or 'none'}"
                if host
                else "the request has no Host header",
                host=shown,
                allowed=self.security.allowed_hosts,
            ), ip
        if not origin_allowed(origin, self.security):
            shown = _shown(origin or "")
            return _refusal(
                403,
                "origin_not_allowed",
                f"Origin {shown!r} is not allowed; allowed: {', '.join(self.security.allowed_origins) or 'none'}",
                origin=shown,
                allowed=self.security.allowed_origins,
            ), ip
        if self.ip_rate_limit is not None and (wait := self.ip_rate_limit.hit("ip:" + ip)) is not None:
            self.telemetry.limit_refused(self.ip_rate_limit.setting)
            return self.ip_rate_limit.refusal("ip:" + ip, wait), ip
        return None, ip

    async def _read_body(self, scope: Scope, receive: Receive) -> deque[Message] | JSONResponse:
        """The request body, read in full within the timeouts and the size limit, as messages to replay; or the
        408/413 to answer."""
        limit = self.max_body_bytes
        if limit is not None:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return self._too_large(limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body = bytearray()
        while True:
            wait = deadline - loop.time()
            if self.body_gap_timeout is not None:
                wait = min(wait, self.body_gap_timeout)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message = await receive()
            except TimeoutError:
                self.telemetry.limit_refused("body_timeout")
                return _refusal(
                    408,
                    "body_timeout",
                    f"the request body did not arrive in time ({len(body)} bytes within "
                    f"{self.body_timeout:g} s, body_timeout); the connection is closed",
                    limit="body_timeout",
                )
            if message["type"] != "http.request":  # the client left: let the app see it
                return deque([{"type": "http.request", "body": bytes(body), "more_body": True}, message])
            body += message.get("body", b"")
            if limit is not None and len(body) > limit:
                return self._too_large(limit)
            if not message.get("more_body", False):
                return deque([{"type": "http.request", "body": bytes(body), "more_body": False}])

    def _too_large(self, limit: int) -> JSONResponse:
        self.telemetry.limit_refused("max_request_body")
        return _refusal(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes (max_request_body)",
            limit="max_request_body",
            maximum=limit,
        )
