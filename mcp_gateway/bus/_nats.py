"""`Bus` on NATS: publish commands (JetStream) and pull worker events (a durable consumer shared by every gateway
process)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import nats
import structlog
from mcp_gateway_worker import redact_url
from mcp_gateway_worker._credentials import Violations, url_user
from mcp_gateway_worker._pull import Pull
from mcp_gateway_worker.contract import Cancel, Headers, InputAnswer, Subjects, encode, ensure_streams
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError, OutboundBufferLimitError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError

from mcp_gateway.core.ports import OutboxMessage
from mcp_gateway.errors import BusError

__all__ = ["ConsumerState", "NatsBus", "NatsDelivery", "events_consumer_at"]

log = structlog.get_logger(__name__)

FOLD_CONSUMER = "mcpgw-gateway-fold"
FOLD_ACK_WAIT = 10.0
"""Seconds before JetStream gives another gateway the events a gateway pulled and did not settle (it died): the
folder waits longer than this for an event's predecessors (its `gap_wait`), so order survives a gateway's death."""
MAX_DELIVERIES = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"
Exhausted = Callable[[str, int, str], Awaitable[None]]
"""(workflow id, deliveries, consumer): a command JetStream stopped redelivering."""
ACTIVE_WITHIN = 5.0
ToolSubjectOf = Callable[[str], Awaitable[str | None]]
"""The tool subject of a workflow (None: no such workflow, or its tool is no longer configured): where its
answers go, `<prefix>.ctl.input.<tool subject>.<workflow id>`."""


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """What JetStream says of the gateway's events consumer (the fold's durable pull consumer)."""

    pending: int
    """Events in the stream not yet delivered to any gateway process."""
    ack_pending: int
    """Delivered and not yet acknowledged (being folded, or held by a process that died)."""
    redelivered: int
    """Delivered more than once and not yet acknowledged."""
    waiting: int
    """Pull requests waiting for events (gateway processes idle in a fetch)."""


async def events_consumer_at(url: str, subjects: Subjects, max_wait: float = 2.0) -> ConsumerState:
    """What JetStream at `url` says of the gateway's events consumer, without a gateway (the CLI's `stats`)."""
    try:
        nc = await nats.connect(url, connect_timeout=max_wait, max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as exc:  # nats-py raises its own errors, OSError and TimeoutError here
        raise BusError(f"connecting to NATS at {redact_url(url)} failed: {exc or type(exc).__name__}") from exc
    try:
        info = await nc.jetstream().consumer_info(subjects.event_stream, FOLD_CONSUMER, timeout=max_wait)
    except (APIError, NatsTimeoutError, TimeoutError, NatsError) as exc:
        raise BusError(f"asking JetStream about consumer {FOLD_CONSUMER} failed: {exc or type(exc).__name__}") from exc
    finally:
        await nc.close()
    return ConsumerState(
        pending=info.num_pending or 0,
        ack_pending=info.num_ack_pending or 0,
        redelivered=info.num_redelivered or 0,
        waiting=info.num_waiting or 0,
    )


@dataclass(frozen=True, slots=True)
class NatsDelivery:
    """One event message from JetStream, with the ways to settle it (the core's `Delivery`)."""

    data: bytes
    headers: dict[str, str]
    attempts: int
    msg: Msg
    subject: str = ""
    published_at: datetime | None = None
    """When JetStream stored the message (its metadata's timestamp): the start of the fold lag."""

    async def ack(self) -> None:
        await self.msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        await self.msg.nak(delay=delay)

    async def term(self) -> None:
        await self.msg.term()


class NatsBus:
    """The one `Bus`. An async context manager: connects, creates or updates the streams, drains on exit."""

    def __init__(
        self,
        url: str,
        subjects: Subjects,
        *,
        name: str = "mcp-gateway",
        publish_timeout: float = 5.0,
        duplicate_window: float = 3_600.0,
        max_ack_pending: int = 4_096,
        observe_only: bool = False,
        tool_subject_of: ToolSubjectOf | None = None,
    ) -> None:
        """`observe_only`: connect and look (the CLI's checks), touching no stream and pulling no event.
        `tool_subject_of`: where a workflow's answers go (its tool's subject); without it, answers cannot be sent.
        The URL may carry credentials (`nats://user:password@host:4222`); logs and errors show it redacted."""
        self._url = url
        self._shown_url = redact_url(url)
        self._tool_subject_of = tool_subject_of
        self._violations = Violations(url_user(url))
        self._subjects = subjects
        self._name = name
        self._publish_timeout = publish_timeout
        self._duplicate_window = duplicate_window
        self._max_ack_pending = max_ack_pending
        self._observe_only = observe_only
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._events: JetStreamContext.PullSubscription | None = None
        self._pull: Pull | None = None
        self._last_error: str | None = None
        self._reconnected_at = float("-inf")

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def reconnected_for(self) -> float:
        """Seconds since the connection to NATS was last re-established (infinite if it never dropped; 0 while
        it is down)."""
        return time.monotonic() - self._reconnected_at if self.connected else 0.0

    @property
    def subjects(self) -> Subjects:
        return self._subjects

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its `max_payload`, 1 MiB by default), headers included."""
        return self._nc.max_payload if self._nc is not None else 1024 * 1024

    async def __aenter__(self) -> NatsBus:
        try:
            self._nc = await nats.connect(
                self._url,
                name=self._name,
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (NoServersError, OSError, TimeoutError) as exc:
            raise BusError(f"cannot connect to NATS at {self._shown_url}: {exc or type(exc).__name__}") from exc
        except NatsError as exc:  # 'Authorization Violation': no or wrong credentials
            raise BusError(f"NATS at {self._shown_url} refused the connection: {exc}") from exc
        self._js = self._nc.jetstream()
        if self._observe_only:
            return self
        mark = Violations.mark()
        try:
            await ensure_streams(self._js, self._subjects, duplicate_window=self._duplicate_window, update=True)
            self._events = await self._js.pull_subscribe(
                self._subjects.all_events,
                durable=FOLD_CONSUMER,
                stream=self._subjects.event_stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=FOLD_ACK_WAIT,
                    max_ack_pending=self._max_ack_pending,
                ),
            )
            self._pull = await Pull(self._nc, self._subjects.event_stream, FOLD_CONSUMER).__aenter__()
        except (APIError, NatsTimeoutError) as exc:
            await self._nc.close()
            refused = self._violations.since(mark, doing="set up the gateway's streams and consumer")
            reason = refused if refused is not None else exc
            raise BusError(
                f"JetStream at {self._shown_url} refused the gateway's streams or consumer: {reason}"
            ) from exc
        log.info(
            "bus.connected", url=self._shown_url, streams=[self._subjects.command_stream, self._subjects.event_stream]
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None and not self._nc.is_closed:
            # Stop pulling first (events pulled but not folded are redelivered after ack_wait), then flush what
            # was published and close. nats-py's drain() waits out its whole timeout on pull subscriptions.
            if self._pull is not None:
                await self._pull.__aexit__()
            if self._events is not None:
                with contextlib.suppress(Exception):
                    await self._events.unsubscribe()
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
            with contextlib.suppress(Exception):  # with NATS gone, nats-py's close can fail on a dead transport
                await self._nc.close()
        log.info("bus.closed")

    async def _on_error(self, exc: Exception) -> None:
        if self._violations.note(exc):
            log.error("bus.permission_denied", user=self._violations.user, error=str(exc))
            return
        message = str(exc) or type(exc).__name__
        if message != self._last_error:  # once per distinct error, not at every reconnect attempt
            self._last_error = message
            log.warning("bus.error", error=message)

    async def _on_disconnected(self) -> None:
        log.warning("bus.disconnected", url=self._shown_url)

    async def _on_reconnected(self) -> None:
        if self._pull is not None:  # the server forgot its open request
            self._pull.reset()
        self._last_error = None
        self._reconnected_at = time.monotonic()
        log.info("bus.reconnected", url=self._shown_url)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        return self._js

    async def publish_command(self, message: OutboxMessage) -> None:
        mark = Violations.mark()
        try:
            await self._jetstream().publish(
                message.subject, message.payload, timeout=self._publish_timeout, headers=message.headers
            )
        except (NatsTimeoutError, TimeoutError, NatsError, APIError) as exc:
            refused = self._violations.since(mark, [message.subject], exact=True)
            reason = refused if refused is not None else (exc or type(exc).__name__)
            raise BusError(f"publishing to {message.subject} failed: {reason}") from exc

    async def fetch_events(self, batch: int, max_wait: float) -> list[NatsDelivery]:
        if self._pull is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        try:
            msgs = await self._pull.fetch(batch, max_wait=max_wait)
        except (ConnectionClosedError, OutboundBufferLimitError) as exc:
            raise BusError(f"fetching events failed: {exc or type(exc).__name__}") from exc
        return [
            NatsDelivery(m.data, dict(m.headers or {}), m.metadata.num_delivered, m, m.subject, m.metadata.timestamp)
            for m in msgs
        ]

    async def events_consumer(self, max_wait: float = 2.0) -> ConsumerState:
        """What JetStream says of the gateway's events consumer now (for metrics); BusError when it cannot say."""
        try:
            info = await self._jetstream().consumer_info(self._subjects.event_stream, FOLD_CONSUMER, timeout=max_wait)
        except (APIError, NatsTimeoutError, TimeoutError, ConnectionClosedError, NatsError) as exc:
            raise BusError(
                f"asking JetStream about consumer {FOLD_CONSUMER} of {self._subjects.event_stream} failed: "
                f"{exc or type(exc).__name__}"
            ) from exc
        return ConsumerState(
            pending=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
            waiting=info.num_waiting or 0,
        )

    async def publish_cancel(
        self, workflow_id: str, reason: Literal["cancelled", "timed_out"], attempt: int | None = None
    ) -> None:
        """Tell every worker to stop this workflow's handler, for `attempt` and those before (best effort: core
        NATS, not stored)."""
        if self._nc is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        try:
            await self._nc.publish(
                self._subjects.cancel(workflow_id),
                encode(Cancel(workflow_id=workflow_id, reason=reason, attempt=attempt)),
            )
        except (ConnectionClosedError, OutboundBufferLimitError) as exc:
            raise BusError(f"telling workers to stop {workflow_id} failed: {exc}") from exc

    async def publish_dead_letter(self, workflow_id: str, body: bytes) -> None:
        """Announce a workflow the gateway gave up on, on the dead-letter stream (for independent consumers)."""
        try:
            await self._jetstream().publish(
                self._subjects.dead_letter(workflow_id),
                body,
                timeout=self._publish_timeout,
                headers={Headers.WORKFLOW_ID: workflow_id, Headers.MSG_ID: f"dlq.{workflow_id}.{len(body)}"},
            )
        except (NatsTimeoutError, TimeoutError, NatsError, APIError) as exc:
            raise BusError(f"publishing the dead letter of {workflow_id} failed: {exc or type(exc).__name__}") from exc

    async def on_max_deliveries(self, callback: Exhausted) -> None:
        """Call `callback(workflow_id, deliveries, consumer)` for each command JetStream stopped redelivering (its
        MAX_DELIVERIES advisory); one gateway process of all handles each (a queue group)."""
        if self._nc is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        js = self._jetstream()
        stream = self._subjects.command_stream

        async def advised(msg: Msg) -> None:
            try:
                advisory = json.loads(msg.data)
                seq, deliveries = int(advisory["stream_seq"]), int(advisory.get("deliveries", 0))
                consumer = str(advisory.get("consumer", "?"))
                command = await js.get_msg(stream, seq)
                workflow_id = (command.headers or {}).get(Headers.WORKFLOW_ID)
                if workflow_id:
                    await callback(workflow_id, deliveries, consumer)
                else:
                    log.warning("bus.advisory_without_workflow", stream_seq=seq)
            except Exception as exc:  # a subscription callback must never raise into nats-py
                log.exception("bus.advisory_failed", error=repr(exc), size=len(msg.data))

        await self._nc.subscribe(MAX_DELIVERIES.format(stream=stream), queue="mcpgw-gateways", cb=advised)

    async def publish_answer(self, answer: InputAnswer) -> None:
        """Give the waiting worker the user's answer (core NATS, not stored: a worker that was not listening gets
        it when its command is redelivered and asks again), on its tool's answer subject."""
        if self._nc is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        try:
            tool_subject = await self._tool_subject_of(answer.workflow_id) if self._tool_subject_of else None
        except Exception as exc:
            raise BusError(f"where to send the answer for {answer.workflow_id} is unknown: {exc}") from exc
        if tool_subject is None:
            raise BusError(
                f"the answer for {answer.workflow_id} has nowhere to go: its tool is no longer configured "
                "(or no workflow has that id)"
            )
        try:
            await self._nc.publish(self._subjects.answer(tool_subject, answer.workflow_id), encode(answer))
        except (ConnectionClosedError, OutboundBufferLimitError) as exc:
            raise BusError(f"sending the answer for {answer.workflow_id} failed: {exc}") from exc

    async def request(self, subject: str, payload: bytes, max_wait: float) -> bytes:
        """Core NATS request/reply (resource template reads): the reply's body, or BusError."""
        if self._nc is None:
            raise BusError("the bus is not open (use it inside 'async with')")
        try:
            reply = await self._nc.request(subject, payload, timeout=max_wait)
        except NoRespondersError:
            raise BusError(f"no worker answers on {subject}") from None
        except (NatsTimeoutError, TimeoutError):
            raise BusError(f"no answer on {subject} within {max_wait:g} s") from None
        return reply.data

    async def listened_subjects(self) -> list[str]:
        """The subject filters of the command consumers someone reads now: a pull consumer with a pull request
        waiting, messages out for acknowledgement, or a delivery or its creation in the last `ACTIVE_WITHIN` seconds
        (a worker between two pulls, or before its first), or a push consumer with a subscriber. A durable
        consumer left behind by a worker that stopped is not one."""
        consumers: list[ConsumerInfo] = []
        try:
            while True:  # the server lists 256 consumers a page
                page = await self._jetstream().consumers_info(self._subjects.command_stream, offset=len(consumers))
                consumers.extend(page)
                if len(page) < 256:
                    break
        except (APIError, NatsTimeoutError, TimeoutError, ConnectionClosedError) as exc:
            raise BusError(f"listing the consumers of {self._subjects.command_stream} failed: {exc}") from exc
        found: list[str] = []
        for info in consumers:
            last = info.delivered.last_active if info.delivered is not None else None
            now = datetime.now(UTC)
            recent = any(t is not None and (now - t).total_seconds() < ACTIVE_WITHIN for t in (last, info.created))
            if not (info.num_waiting or info.num_ack_pending or info.push_bound or recent):
                continue
            config = info.config
            filters = [*(config.filter_subjects or []), *([config.filter_subject] if config.filter_subject else [])]
            found.extend(filters or [self._subjects.all_commands])
        return found
