"""A pull consumer's messages as they come: one pull request kept open for a batch, instead of nats-py's `fetch`.

nats-py's `PullSubscription.fetch` asks anew for every batch and ends each ask with a status message. At light
load each message delivered then costs a request, the message and a status: three messages on the wire (two of
them JetStream API work for the server), and a task, a timer and a uuid in the client. `Pull` keeps one request
for up to `batch` messages open on the server (for `expires` seconds) and takes the messages as they arrive. It
asks again when that request is used up, ended by the server (a `408` when it expires, a `409`), or past its
expiry without a word (a reconnect loses it: `reset` says so at once). A message then costs itself and a share of
one request per batch.

The messages are nats-py's own `Msg` (ack, nak, in_progress, term and metadata work as on a fetched one); the
consumer is the one `pull_subscribe` made. What a request holds is bounded by its batch: the caller asks for no
more than it can take (a worker, its free handler slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Final

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext

__all__ = ["BURST_WAIT", "EXPIRES", "PAUSE", "Pull"]

log = structlog.get_logger(__name__)

EXPIRES: Final = 5.0
"""Seconds a pull request stays open on the server. It bounds how long a request lost to a reconnect goes
unnoticed when `reset` is not called, and how often an idle consumer asks again."""
BURST_WAIT: Final = 0.001
"""Seconds a fetch under load waits for messages on their way (at light load it waits for none)."""
_GRACE: Final = 1.0
"""Seconds past a request's expiry before it is taken for lost: the server's `408` normally ends it first (asking
sooner, that late `408` would end the new request's count instead)."""
_HEARTBEAT: Final = "100"
_EXPIRED: Final = "408"
_ACK_PREFIX: Final = "$JS.ACK."
"""The reply subject of every message a JetStream consumer delivers (its ack subject)."""
PAUSE: Final = 1.0
"""Seconds before asking again after the server ended a request for another reason than its expiry (a `409`: the
consumer deleted, too many waiting requests; a `503`): never a loop of requests refused as fast as they go."""


class Pull:
    """Messages of durable pull consumer `consumer` of `stream`, through connection `nc` (its inbox prefix: a
    worker's user may read its own replies only). Use inside `async with`."""

    def __init__(
        self, nc: NatsClient, stream: str, consumer: str, *, expires: float = EXPIRES, api_prefix: str = "$JS.API"
    ) -> None:
        self._nc = nc
        self._subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires = expires
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._ready: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._left = 0
        """Messages the open request may still bring (0: none is open)."""
        self._until = 0.0
        """When the open request expires (loop time)."""
        self._burst = False
        """Whether the last fetch took more than one message (load)."""
        self._quiet_until = 0.0
        """No request before this (loop time): the server refused the last one."""
        self.requests = 0
        """Pull requests sent."""

    async def __aenter__(self) -> Pull:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._arrived)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop taking messages: the server drops the open request once no one listens on its inbox; what it
        brought and was not taken is redelivered after the consumer's ack wait."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._wake()

    @property
    def open(self) -> bool:
        """Between entering and leaving `async with`."""
        return self._sub is not None

    def reset(self) -> None:
        """The open request is gone (the connection was re-established): the next fetch asks again."""
        self._left = 0
        self._wake()

    async def fetch(self, batch: int, max_wait: float) -> list[Msg]:
        """Up to `batch` messages: those already here, else the first to arrive within `max_wait` seconds and
        any that came with it; [] when none came. Under load (the last fetch took several), messages still on
        their way get `BURST_WAIT` to join, as they did during the round trip of nats-py's fetch, so that batches
        stay as large (a fold batch is one statement). Raises `ConnectionClosedError` when the pull is not open,
        and what publishing the request raises (the connection is closed, or its buffer full while it
        reconnects)."""
        if not self.open:
            raise ConnectionClosedError  # not entered, or stopped: never an empty answer a loop would spin on
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while not self._ready:
            now = loop.time()
            if now >= deadline or not self.open:  # (stopped meanwhile)
                return []
            if now < self._quiet_until:
                await self._wait(min(deadline, self._quiet_until) - now)
                continue
            if self._left <= 0 or now >= self._until + _GRACE:
                await self._ask(batch, now)
            await self._wait(min(deadline, self._until + _GRACE) - now)
        taken = self._take(batch, [])
        if self._burst and len(taken) < batch:
            until = loop.time() + BURST_WAIT
            while len(taken) < batch and (left := until - loop.time()) > 0 and self.open:
                await self._wait(left)
                self._take(batch, taken)
        self._burst = len(taken) > 1
        return taken

    def _take(self, batch: int, taken: list[Msg]) -> list[Msg]:
        while self._ready and len(taken) < batch:
            taken.append(self._ready.popleft())
        return taken

    async def _wait(self, seconds: float) -> None:
        """Until a message or a status arrives, or `seconds` pass."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._waiter
        except TimeoutError:
            pass
        finally:
            self._waiter = None

    async def _ask(self, batch: int, now: float) -> None:
        request = json.dumps({"batch": batch, "expires": int(self._expires * 1e9)}).encode()
        await self._nc.publish(self._subject, request, reply=self._inbox)
        self.requests += 1
        self._left, self._until = batch, now + self._expires

    async def _arrived(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            if not msg.reply.startswith(_ACK_PREFIX):  # not the consumer's: someone else published to the inbox
                log.warning("bus.pull_foreign", subject=self._subject, size=len(msg.data))
                return
            self._left -= 1
            self._ready.append(msg)
        elif status != _HEARTBEAT:  # 408: the request expired; else the server refused or ended it (it says why)
            if status != _EXPIRED:
                description = (msg.headers or {}).get("Description", "")
                log.warning("bus.pull_refused", subject=self._subject, status=status, description=description)
                self._quiet_until = asyncio.get_running_loop().time() + PAUSE
            self._left = 0
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
