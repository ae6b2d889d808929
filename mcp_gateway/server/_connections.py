"""Limits on HTTP connections, in uvicorn: the size of a request's head and the time to receive it, the number
of connections and requests served at once, the listen backlog.

uvicorn's own parser (httptools) takes request heads of any size, and its keep-alive timeout only starts after a
first response: a connection that never sends a whole request head stays open for ever. `LimitedHttpTools`
(uvicorn's httptools protocol, plus two checks) answers 431 to a head over `max_header_bytes` and 408 to a head
not received within `header_timeout` seconds of the connection (or of the first byte of a later request on a
kept-alive connection), closing the connection either way; one that sent nothing is closed without an answer.
Request bodies are bounded by `Guard` (`_guard.py`), whose 408 also closes the connection.

`uvicorn_config(app, host=..., port=..., limits=ConnectionLimits.from_settings(settings))` builds the server's
config; the CLI and the tests use the same one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from mcp_gateway.settings import Settings

__all__ = ["ConnectionLimits", "GatewayConfig", "LimitedHttpTools", "uvicorn_config"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    """Most bytes of a request head (request line and headers); past it: 431 and the connection closed. The count
    is exact but for pipelined requests, where up to one read (64 KiB) of the next head may go uncounted."""
    header_timeout: float = 10.0
    """Seconds to receive a whole request head; then 408 (nothing received: no answer) and the connection closed."""
    keep_alive: int = 5
    """Seconds an idle connection is kept after a response (uvicorn's `timeout_keep_alive`)."""
    limit_concurrency: int | None = 1000
    """Most connections or requests at once; past it, uvicorn answers 503 (None: no limit)."""
    backlog: int = 2048
    """Connections the kernel may queue before they are accepted."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout,
            keep_alive=settings.keep_alive_timeout,
            limit_concurrency=settings.limit_concurrency,
            backlog=settings.backlog,
        )


class GatewayConfig(uvicorn.Config):
    """uvicorn's config, carrying the connection limits to `LimitedHttpTools`."""

    def __init__(self, app: ASGIApp, *, connection_limits: ConnectionLimits, **kwargs: Any) -> None:
        self.connection_limits = connection_limits
        super().__init__(
            app,
            http=LimitedHttpTools,
            limit_concurrency=connection_limits.limit_concurrency,
            backlog=connection_limits.backlog,
            timeout_keep_alive=connection_limits.keep_alive,
            **kwargs,
        )


def uvicorn_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits | None = None,
    forwarded_allow_ips: list[str] | None = None,
    **kwargs: Any,
) -> GatewayConfig:
    """The config the gateway serves HTTP with. `forwarded_allow_ips`: the proxies whose `X-Forwarded-For` names
    the client (the address that rate limits and the failed-auth throttle count by); none: no proxy is trusted
    (uvicorn's default would trust one on 127.0.0.1, and so any local client's claim). `kwargs` go to
    uvicorn (`log_config`, `lifespan`, `access_log`, `timeout_graceful_shutdown`...)."""
    return GatewayConfig(
        app,
        connection_limits=limits or ConnectionLimits(),
        host=host,
        port=port,
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips or None,
        **kwargs,
    )


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on the size of a request head and on the time to receive it."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.connection_limits if isinstance(config, GatewayConfig) else ConnectionLimits()
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.header_timeout
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > self._max_head and not self.transport.is_closing():
            self._refuse(
                431,
                "headers_too_large",
                f"the request head is larger than {self._max_head} bytes (max_header_bytes)",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_head = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # the next bytes are the next request's head

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self._head_bytes == 0:
            self.transport.close()  # never said a word: nothing to answer
            return
        self._refuse(
            408,
            "header_timeout",
            f"the request head did not arrive within {self._head_timeout:g} s (header_timeout)",
        )

    def _refuse(self, status: int, error: str, message: str) -> None:
        """Answer with a JSON body and close the connection (the head was never complete: no app saw it)."""
        self._awaiting_head = False
        self._cancel_head_timer()
        body = json.dumps({"error": error, "message": message}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
