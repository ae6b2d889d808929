"""The worker: one durable pull consumer per subject, bounded concurrency, ack after the result is on the bus.

Semantics (docs/bus-contract.md): a command is acknowledged only after its terminal event is stored by
JetStream; while a handler runs, the command's ack deadline is extended. When the gateway cancels a workflow
or its deadline passes, the handler is cancelled (it sees `asyncio.CancelledError`) and the command is settled.
A redelivered command whose result this process already published is answered again from memory, not run
twice. On stop, the worker stops fetching, lets running handlers finish within `drain_timeout`, and hands
back (naks) the rest.

Credentials (`connect(url, user=..., password=...)`, `creds=FILE`, or in the URL) are NATS's: a worker user of the
embedded NATS (`mcp-gateway bus-user create`) may consume only its tool subjects' commands and publish only their
events. Whatever NATS refuses is raised as `PermissionDenied`, naming the subject and the user, never left to
time out: at connect (streams, consumers, subscriptions), and for a command whose events it may not publish
(logged, and the command handed back for a worker that may).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import APIError

from mcp_gateway_worker._context import ToolContext, ToolFailure, ToolResult
from mcp_gateway_worker._credentials import (
    BusCredentials,
    CredentialsRefused,
    PermissionDenied,
    Violations,
    redact_url,
)
from mcp_gateway_worker._metrics import NO_METRICS, Observer, WorkerMetrics, serve_metrics
from mcp_gateway_worker._pull import Pull
from mcp_gateway_worker._questions import Questions
from mcp_gateway_worker._tracing import Span, trace_id_of, tracer
from mcp_gateway_worker.contract import (
    CONTRACT_VERSION,
    Command,
    ContractError,
    ErrorInfo,
    Event,
    EventKind,
    Headers,
    ResourceReply,
    RetryOn,
    Subjects,
    decode_cancel,
    decode_command,
    decode_resource_read,
    encode,
    ensure_streams,
    worker_durable,
)

__all__ = ["Handler", "PermissionDenied", "Worker"]

log = structlog.get_logger(__name__)

PUBLISH_TIMEOUT = 5.0
"""Seconds one publish waits for JetStream's acknowledgement before it is tried again."""
STARTED_AFTER = 0.05
"""Seconds a handler may run before the worker reports `started`."""
REFUSED_RETRY = 5.0
"""Seconds before a command whose events this worker may not publish is offered again (to a worker that may)."""

ResourceHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, list[dict[str, Any]]]]
"""Reads a resource template's URI: (uri, variables) -> contents."""

Handler = Callable[[ToolContext, dict[str, Any]], Coroutine[Any, Any, dict[str, Any] | ToolResult]]


class _Retry(Exception):
    """An attempt failed in a way the tool's retry policy retries, and attempts are left."""

    def __init__(self, info: ErrorInfo, delay: float) -> None:
        super().__init__(info.message)
        self.info = info
        self.delay = delay


class BusUnavailable(Exception):
    """NATS stayed away longer than the worker's `publish_patience`: the command goes back for redelivery."""


async def _settle(action: Awaitable[object]) -> None:
    """Ack or nak a command; when NATS cannot take it now, JetStream redelivers it after its ack wait."""
    try:
        await action
    except Exception as exc:
        log.warning("worker.settle_failed", error=str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class _Route:
    tool: str
    subject: str
    handler: Handler


def _event_attributes(event: Event) -> dict[str, str | int | float | bool]:
    """What a span event says of a worker event: its key, and its numbers (never a message or a value)."""
    found: dict[str, str | int | float | bool] = {"mcp_gateway.event": event.key}
    if event.progress is not None:
        found["mcp_gateway.progress"] = event.progress
    if event.total is not None:
        found["mcp_gateway.total"] = event.total
    if event.requests:
        found["mcp_gateway.questions"] = ",".join(r.id for r in event.requests)
    if event.error is not None:
        found["error.type"] = event.error.code
    return found


def _delivered(msg: Msg) -> int:
    """How often JetStream has delivered this message (1 the first time)."""
    try:
        return max(int(msg.metadata.num_delivered or 1), 1)
    except Exception:  # not a JetStream message (a test double): the first delivery
        return 1


class Worker:
    def __init__(
        self,
        name: str,
        *,
        prefix: str = "mcpgw",
        max_concurrency: int = 16,
        ack_wait: float = 30.0,
        max_deliver: int = 5,
        drain_timeout: float = 10.0,
        remembered_results: int = 10_000,
        publish_patience: float = 120.0,
    ) -> None:
        """`publish_patience`: how long an event's publish is retried while the bus is away (NATS restarting)
        before the command is handed back for redelivery; a bus outage never fails the work."""
        self.name = name
        self.subjects = Subjects(prefix)
        self._routes: dict[str, _Route] = {}
        self._resources: dict[str, ResourceHandler] = {}
        self._max_concurrency = max_concurrency
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._drain_timeout = drain_timeout
        self._slots = asyncio.Semaphore(max_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._pulls: list[Pull] = []
        self._done: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        """Command key -> its terminal event and that event's key, to answer a redelivery from memory."""
        self._handlers: dict[str, asyncio.Task[dict[str, Any] | ToolResult]] = {}
        self._inflight: dict[str, list[Msg]] = {}
        """Command key -> its deliveries while its handler runs (JetStream may deliver it again meanwhile)."""
        self._stopped: OrderedDict[str, tuple[str, int | None]] = OrderedDict()
        """Workflow id -> why the gateway stopped it, and up to which attempt (None: all)."""
        self._remembered = remembered_results
        self._publish_patience = publish_patience
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._stopping = asyncio.Event()
        self._last_error: str | None = None
        self._violations = Violations(None)
        self._refusal: str | None = None
        self._metrics: Observer = NO_METRICS
        self._metrics_served: AsyncExitStack | None = None
        self.metrics_url: str | None = None
        """Where this worker serves its metrics while connected (`connect(metrics_port=...)`), else None."""

    def tool(self, name: str, *, subject: str) -> Callable[[Handler], Handler]:
        """Register the handler of tool `name`, whose commands arrive on `subject` (as in the tool's config)."""

        def register(handler: Handler) -> Handler:
            if name in self._routes:
                raise ValueError(f"worker {self.name!r} already has a handler for tool {name!r}")
            self._routes[name] = _Route(name, subject, handler)
            return handler

        return register

    def resource(self, *, subject: str) -> Callable[[ResourceHandler], ResourceHandler]:
        """Register the reader of a resource template whose config names `subject`: it gets the URI and the
        template's variables and returns the contents (`mcp_gateway_worker.contract.content.text_contents`, ...)."""

        def register(handler: ResourceHandler) -> ResourceHandler:
            if subject in self._resources:
                raise ValueError(f"worker {self.name!r} already reads resources on {subject!r}")
            self._resources[subject] = handler
            return handler

        return register

    def with_prefix(self, prefix: str) -> Worker:
        """A fresh worker with the same handlers under another subject prefix (another gateway, or a test)."""
        clone = Worker(
            self.name,
            prefix=prefix,
            max_concurrency=self._max_concurrency,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
            drain_timeout=self._drain_timeout,
            remembered_results=self._remembered,
            publish_patience=self._publish_patience,
        )
        clone._routes = dict(self._routes)
        clone._resources = dict(self._resources)
        return clone

    @property
    def tools(self) -> list[str]:
        return list(self._routes)

    @property
    def tool_subjects(self) -> list[str]:
        """The tool subjects it consumes (what a bus user for it needs: `mcp-gateway bus-user create`)."""
        return sorted({r.subject for r in self._routes.values()})

    @property
    def resource_subjects(self) -> list[str]:
        """The resource template subjects it reads."""
        return sorted(self._resources)

    @asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        inbox_prefix: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        metrics: WorkerMetrics | None = None,
    ) -> AsyncGenerator[Worker]:
        """Connect, ensure streams and consumers, handle commands until the block ends; then drain.

        As NATS user `user` with `password`, or with a `.creds` file (`creds`), or with the credentials in the URL
        (`nats://user:password@host:4222`). Replies come to `inbox_prefix`, by default `_INBOX_<user>` when the
        user is known (a worker user may read its own replies only). Raises `PermissionDenied` when NATS refuses
        the user what a worker needs (naming the subject).

        With `metrics_port` (0: a free one), it serves its Prometheus metrics on `metrics_host` while connected,
        at `metrics_url` (the extra `metrics`: `MetricsUnavailable`, naming it, when it is not installed).
        `metrics`: a `WorkerMetrics` to count into instead (several workers of one process share one)."""
        counted = metrics if metrics is not None else WorkerMetrics() if metrics_port is not None else None
        self._metrics = counted if counted is not None else NO_METRICS
        access = BusCredentials(user, password, Path(creds) if creds is not None else None)
        self._violations = Violations(access.name(url))
        self._nc = await self._connect(url, access, inbox_prefix)
        self._js = self._nc.jetstream()
        self._stopping.clear()
        opened = AsyncExitStack()
        try:
            if counted is not None and metrics_port is not None:
                await self._serve_metrics(counted, metrics_host, metrics_port)
            subjects = sorted({r.subject for r in self._routes.values()})
            mark = Violations.mark()
            try:
                await ensure_streams(self._js, self.subjects)
                await self._nc.subscribe(self.subjects.all_cancels, cb=self._on_cancel)
                for subject, reader in self._resources.items():
                    await self._nc.subscribe(
                        self.subjects.resource(subject), queue="mcpgw-workers", cb=self._resource_responder(reader)
                    )
                subs = [(s, await self._subscribe(s)) for s in subjects]
                pulls = [Pull(self._nc, self.subjects.command_stream, worker_durable(s)) for s in subjects]
                for pull in pulls:
                    await opened.enter_async_context(pull)
                await self._nc.flush()  # a refused subscription is reported before the flush is answered
            except (NatsTimeoutError, TimeoutError) as exc:
                refused = self._violations.since(mark, self._setup_subjects(subjects), "set up its consumers")
                if refused is not None and refused.subject.startswith("$JS.API.STREAM.CREATE."):
                    doing = "create a missing stream (start the gateway: it creates its streams)"
                    raise PermissionDenied(refused.user, refused.operation, refused.subject, doing) from None
                if refused is not None:
                    raise refused from None
                raise exc
            refused = self._violations.since(mark, self._setup_subjects(subjects), "subscribe")
            if refused is not None:
                raise refused
            self._pulls = pulls
            loops = [asyncio.create_task(self._fetch_loop(pull, s)) for pull, s in zip(pulls, subjects, strict=True)]
            log.info("worker.started", worker=self.name, tools=self.tools, url=redact_url(url))
            try:
                yield self
            finally:
                self._stopping.set()
                for loop in loops:
                    loop.cancel()
                for loop in loops:
                    with contextlib.suppress(asyncio.CancelledError):
                        await loop
                await self._drain()
                await opened.aclose()  # messages pulled but not started are redelivered after ack_wait
                for _, sub in subs:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        finally:
            self._pulls = []
            await opened.aclose()  # (when setting up failed)
            # Every command is settled by now; a plain flush and close (nats-py's drain waits on pull
            # subscriptions for its whole timeout).
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            with contextlib.suppress(Exception):  # with NATS gone, nats-py's close can fail on a dead transport
                await self._nc.close()
            await self._stop_metrics()
            log.info("worker.stopped", worker=self.name)

    async def _serve_metrics(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        served = AsyncExitStack()
        self.metrics_url = await served.enter_async_context(serve_metrics(metrics, host, port))
        self._metrics_served = served

    async def _stop_metrics(self) -> None:
        served, self._metrics_served, self.metrics_url = self._metrics_served, None, None
        if served is not None:
            await served.aclose()

    async def _connect(self, url: str, access: BusCredentials, inbox_prefix: str | None) -> NatsClient:
        """nats-py's connect, which waits for a server that is not there yet (NATS starting), but not for one that
        refuses the credentials: that is `CredentialsRefused` at once (nats-py would try them again for ever)."""
        refused = asyncio.Event()
        self._refusal = None

        async def on_error(exc: Exception) -> None:
            if self._nc is None and "authorization violation" in str(exc).lower():
                self._refusal = str(exc)
                refused.set()
            await self._on_error(exc)

        self._nc = None
        connecting = asyncio.ensure_future(
            nats.connect(
                url,
                name=f"mcpgw-worker-{self.name}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **access.connect_options(url, inbox_prefix),
            )
        )
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({connecting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await connecting
        if not connecting.cancelled() and connecting.exception() is None:
            return connecting.result()
        if self._refusal is not None:
            raise CredentialsRefused(self._violations.user, redact_url(url), self._refusal)
        return connecting.result()  # raises what connect raised

    def _setup_subjects(self, tool_subjects: list[str]) -> list[str]:
        """What connecting publishes to and subscribes to (to name a refused one as NATS spells it)."""
        s, stream = self.subjects, self.subjects.command_stream
        found = [f"$JS.API.STREAM.{op}.{n}" for op in ("INFO", "CREATE") for n in self._stream_names()]
        for subject in tool_subjects:
            durable = worker_durable(subject)
            found += [
                f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{s.command(subject)}",
            ]
        return [*found, s.all_cancels, *(s.resource(r) for r in self._resources)]

    def _stream_names(self) -> list[str]:
        s = self.subjects
        return [s.command_stream, s.event_stream, s.dead_letter_stream]

    async def _on_error(self, exc: Exception) -> None:
        if self._violations.note(exc):
            log.error("worker.permission_denied", worker=self.name, user=self._violations.user, error=str(exc))
            return
        message = str(exc) or type(exc).__name__
        if message != self._last_error:  # while NATS is away, say so once, not at every reconnect attempt
            self._last_error = message
            log.warning("worker.nats_error", worker=self.name, error=message)

    async def _on_disconnected(self) -> None:
        log.warning("worker.disconnected", worker=self.name)

    async def _on_reconnected(self) -> None:
        self._last_error = None
        for pull in self._pulls:  # the server forgot their open requests
            pull.reset()
        log.info("worker.reconnected", worker=self.name)

    async def run(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        """Handle commands until cancelled (credentials and metrics as for `connect`)."""
        async with self.connect(
            url, user=user, password=password, creds=creds, metrics_port=metrics_port, metrics_host=metrics_host
        ):
            await asyncio.Event().wait()

    async def _subscribe(self, subject: str) -> JetStreamContext.PullSubscription:
        assert self._js is not None
        durable = worker_durable(subject)
        return await self._js.pull_subscribe(
            self.subjects.command(subject),
            durable=durable,
            stream=self.subjects.command_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_deliver=self._max_deliver,
                max_ack_pending=max(self._max_concurrency * 4, 64),
            ),
        )

    async def _fetch_loop(self, pull: Pull, subject: str) -> None:
        # Slots are taken per message, after the fetch: a loop idling in a fetch holds none, so the loops of
        # several subjects share `max_concurrency` without starving each other.
        while not self._stopping.is_set():
            await self._slots.acquire()  # wait for capacity before asking for work
            self._slots.release()
            want = max(1, self._max_concurrency - len(self._running))
            try:
                msgs = await pull.fetch(want, max_wait=1.0)
            except Exception as exc:
                log.warning("worker.fetch_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(msg, subject))
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _drain(self) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=self._drain_timeout)
        for task in pending:
            task.cancel()  # the handler's message is nak'ed by _handle, for another worker to take
        if pending:
            await asyncio.wait(pending)

    def _resource_responder(self, reader: ResourceHandler) -> Callable[[Msg], Awaitable[None]]:
        async def respond(msg: Msg) -> None:
            try:
                read = decode_resource_read(msg.data)
                reply = ResourceReply(contents=await reader(read.uri, read.variables))
            except ContractError as exc:
                reply = ResourceReply(error=ErrorInfo(code="bad_request", message=str(exc)))
            except ToolFailure as failure:
                reply = ResourceReply(error=failure.info)
            except Exception as exc:
                log.exception("worker.resource_crashed")
                reply = ResourceReply(error=ErrorInfo(code="worker_error", message=f"{type(exc).__name__}: {exc}"))
            await msg.respond(encode(reply))

        return respond

    async def _on_cancel(self, msg: Msg) -> None:
        """The gateway ended a workflow (cancelled, timed out): stop its handler, or never start it."""
        try:
            cancel = decode_cancel(msg.data)
        except ContractError as exc:
            log.warning("worker.bad_cancel", error=str(exc))
            return
        self._stopped[cancel.workflow_id] = (cancel.reason, cancel.attempt)
        while len(self._stopped) > self._remembered:
            self._stopped.popitem(last=False)
        handler = self._handlers.get(cancel.workflow_id)
        if handler is not None:
            log.info("worker.stopping_handler", workflow_id=cancel.workflow_id, reason=cancel.reason)
            handler.cancel()

    async def _handle(self, msg: Msg, subject: str) -> None:
        """One command, from the consumer of tool subject `subject`."""
        try:
            command = decode_command(msg.data)
        except ContractError as exc:
            log.error("worker.bad_command", error=str(exc), subject=msg.subject)
            await msg.term()
            return
        if command.subject is None:  # a version 1 command (from a gateway before the upgrade): events on v2 subjects
            command = command.model_copy(
                update={"subject": subject, "reply_subject": self.subjects.event(subject, command.workflow_id)}
            )
        # Traced, the command is a span continuing the command's traceparent, and its events carry the span's.
        active = tracer()
        trace = (msg.headers or {}).get(Headers.TRACEPARENT)
        attributes = (
            {
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "gen_ai.tool.name": command.tool,
                "mcp_gateway.workflow_id": command.workflow_id,
                "mcp_gateway.attempt": command.attempt,
            }
            if active.enabled
            else None
        )
        with active.span("worker.handle", parent=trace, kind="consumer", attributes=attributes) as span:
            ours = active.traceparent()
            headers = {**(msg.headers or {}), Headers.TRACEPARENT: ours} if ours else msg.headers
            trace_id = trace_id_of(ours or trace)
            with structlog.contextvars.bound_contextvars(**({"trace_id": trace_id} if trace_id else {})):
                await self._handle_command(msg, command, headers, span)

    async def _handle_command(self, msg: Msg, command: Command, headers: dict[str, str] | None, span: Span) -> None:
        """A decoded command; `headers` go on its events (the command's, with the handler span's traceparent)."""
        key = f"{command.workflow_id}.{command.attempt}"
        bound = log.bind(
            workflow_id=command.workflow_id,
            tool=command.tool,
            attempt=command.attempt,
            trace=(msg.headers or {}).get(Headers.TRACEPARENT),
        )
        if key in self._done:
            bound.info("worker.redelivered_done")
            final, final_key = self._done[key]
            try:
                await self._publish_raw(command.reply_subject, final, headers, final_key, fresh=False)
            except BusUnavailable as exc:
                bound.warning("worker.bus_unavailable", error=str(exc))
                await _settle(msg.nak(delay=1.0))
                return
            except PermissionDenied as exc:
                bound.error("worker.events_refused", error=str(exc))
                await _settle(msg.nak(delay=REFUSED_RETRY))
                return
            await _settle(msg.ack())
            return
        if key in self._inflight:  # delivered again while its handler still runs here (NATS came back): one run
            bound.info("worker.redelivered_while_running")
            self._inflight[key].append(msg)
            await _settle(msg.in_progress())
            return
        deliveries = self._inflight[key] = [msg]
        try:
            with self._metrics.running(command.tool):
                await self._execute(msg, command, key, deliveries, bound, headers, span)
        finally:
            self._inflight.pop(key, None)

    async def _execute(
        self,
        msg: Msg,
        command: Command,
        key: str,
        deliveries: list[Msg],
        bound: Any,
        headers: dict[str, str] | None,
        span: Span,
    ) -> None:
        """Run one command; settle every delivery of it (`deliveries`: this one, and any that came meanwhile).
        Its events go out with `headers`; each is an event on `span` (progress, questions, the result)."""

        async def settle(action: Callable[[Msg], Awaitable[object]]) -> None:
            for delivery in list(deliveries):
                await _settle(action(delivery))

        seq = 0
        last_key = ""
        # A redelivered command (its worker died) is a new attempt for the events: numbered afresh, not taken for
        # duplicates of the first run's, so that a question asked again gets the recorded answer re-sent.
        attempt = max(command.attempt, _delivered(msg))

        async def emit(kind: EventKind, **fields: Any) -> bytes:
            nonlocal seq, last_key
            event = Event(
                workflow_id=command.workflow_id,
                attempt=attempt,
                seq=seq,
                kind=kind,
                at=datetime.now(UTC),
                **fields,
            )
            seq += 1
            data = encode(event)
            await self._publish_raw(command.reply_subject, data, headers, event.key)
            last_key = event.key
            self._metrics.emitted(command.tool, kind, event.error)
            span.add_event(kind.value, _event_attributes(event))
            if kind in (EventKind.COMPLETED, EventKind.FAILED):
                span.set_attribute("mcp_gateway.outcome", kind.value)
            return data

        heartbeat = asyncio.create_task(self._heartbeat(deliveries))
        try:
            route = self._routes.get(command.tool)
            if route is None:
                final = await emit(
                    EventKind.FAILED,
                    error=ErrorInfo(
                        code="unknown_tool", message=f"worker {self.name!r} has no handler for tool {command.tool!r}"
                    ),
                )
            elif self._stopped_attempt(command.workflow_id, attempt):
                reason = self._stopped[command.workflow_id][0]
                final = await emit(EventKind.FAILED, error=ErrorInfo(code=reason, message=f"not started: {reason}"))
            elif command.deadline <= datetime.now(UTC):
                final = await emit(
                    EventKind.FAILED,
                    error=ErrorInfo(code="deadline_exceeded", message="the command arrived after its deadline"),
                )
            else:
                assert self._nc is not None
                assert command.subject is not None
                answers = self.subjects.answer(command.subject, command.workflow_id)
                questions = Questions(self._nc, answers, command, emit, self._violations)
                try:
                    ctx = ToolContext(command, emit, questions.ask)
                    final = await self._run_handler(route, command, attempt, ctx, emit, bound)
                finally:
                    await questions.close()
        except _Retry as retry:  # JetStream's delayed redelivery runs the next attempt
            heartbeat.cancel()
            try:
                await emit(EventKind.RETRYING, error=retry.info, retry_in=retry.delay)
            except Exception as exc:
                bound.warning("worker.retrying_unreported", error=str(exc) or type(exc).__name__)
            bound.info("worker.retrying", code=retry.info.code, after=retry.delay)
            delay = retry.delay
            await settle(lambda m: m.nak(delay=delay))
            return
        except asyncio.CancelledError:
            heartbeat.cancel()
            await settle(lambda m: m.nak())
            bound.info("worker.handed_back")
            raise
        except PermissionDenied as exc:  # NATS refuses this user the events: for a worker that may publish them
            heartbeat.cancel()
            bound.error("worker.events_refused", error=str(exc), retry_in=REFUSED_RETRY)
            await settle(lambda m: m.nak(delay=REFUSED_RETRY))
            return
        except Exception as exc:  # the bus stayed away: leave the command for redelivery (never a failure)
            heartbeat.cancel()
            bound.warning("worker.handed_back_bus_unavailable", error=str(exc) or type(exc).__name__)
            await settle(lambda m: m.nak(delay=1.0))
            return
        heartbeat.cancel()
        self._remember(key, final, last_key)
        await settle(lambda m: m.ack())  # its events are stored: a lost ack only redelivers it (answered from _done)

    async def _run_handler(
        self,
        route: _Route,
        command: Command,
        attempt: int,
        ctx: ToolContext,
        emit: Callable[..., Awaitable[bytes]],
        bound: Any,
    ) -> bytes:
        policy = command.retry

        def retried(info: ErrorInfo, kind: RetryOn) -> ErrorInfo:
            """Raise _Retry when the policy retries this failure and attempts are left; else the failure to
            report (marked retryable when retries ran out, so the gateway dead-letters the workflow)."""
            if policy is None or kind not in policy.failures:
                return info
            if attempt < policy.attempts:
                raise _Retry(info, policy.backoff(attempt))
            return info.model_copy(update={"retryable": True})

        handler = asyncio.create_task(route.handler(ctx, command.arguments))
        self._handlers[ctx.workflow_id] = handler
        try:
            # `started` only for work that takes a while: a quick handler's result is its first sign of life
            # (one event, one fold, instead of two). Progress reports number themselves after it either way.
            done, _ = await asyncio.wait({handler}, timeout=STARTED_AFTER)
            if not done and not ctx.reported:
                await emit(EventKind.STARTED)
            result = await handler
        except BusUnavailable:  # a progress report or a question could not go out: not the handler's fault
            raise
        except PermissionDenied as exc:
            if exc.operation == "publish to":  # its events cannot go out: nothing to report them with
                raise
            bound.error("worker.answers_refused", error=str(exc))  # it cannot hear answers: say so, as a failure
            return await emit(EventKind.FAILED, error=ErrorInfo(code="worker_error", message=str(exc)))
        except ToolFailure as failure:
            bound.info("worker.failed", code=failure.info.code, attempt=attempt)
            info = retried(failure.info, "retryable") if failure.info.retryable else failure.info
            return await emit(EventKind.FAILED, error=info)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or ctx.workflow_id not in self._stopped:
                handler.cancel()  # we are being stopped ourselves (drain): hand the command back
                raise
            reason = self._stopped[ctx.workflow_id][0]
            bound.info("worker.stopped_by_gateway", reason=reason)
            return await emit(EventKind.FAILED, error=ErrorInfo(code=reason, message=f"stopped: {reason}"))
        except Exception as exc:
            bound.exception("worker.handler_crashed", attempt=attempt)
            crash = ErrorInfo(code="worker_error", message=f"{type(exc).__name__}: {exc}")
            return await emit(EventKind.FAILED, error=retried(crash, "crash"))
        finally:
            self._handlers.pop(ctx.workflow_id, None)
        if not isinstance(result, dict | ToolResult):  # pyright: ignore[reportUnnecessaryIsInstance]
            return await emit(
                EventKind.FAILED,
                error=ErrorInfo(
                    code="worker_error", message=f"handler returned {type(result).__name__}, expected a JSON object"
                ),
            )
        try:
            if isinstance(result, ToolResult):
                return await emit(EventKind.COMPLETED, result=result.structured, content=result.content)
            return await emit(EventKind.COMPLETED, result=result)
        except MaxPayloadError:
            message = "the result is larger than the bus takes in one message (NATS max_payload)"
            bound.warning("worker.result_too_large")
            return await emit(EventKind.FAILED, error=ErrorInfo(code="result_too_large", message=message))

    async def _publish_raw(
        self,
        subject: str,
        data: bytes,
        command_headers: dict[str, str] | None,
        msg_id: str | None = None,
        *,
        fresh: bool = True,
    ) -> None:
        """Publish one event with JetStream, retrying with backoff while the bus is away (its `Nats-Msg-Id` makes a
        repeat harmless); BusUnavailable once `publish_patience` has run out.

        JetStream de-duplicates by `Nats-Msg-Id` across the whole events stream, whatever the subject, and a header
        is whatever a publisher writes: another tool's worker could take an event's id first (on its own subject,
        where the gateway refuses the event) so that JetStream drops the real one. So a `fresh` event (not one
        sent again on purpose) that JetStream calls a duplicate is published once more without the id: the fold
        applies each event once by its key anyway, and a true repeat (a retry whose first try had landed) is
        folded as the duplicate it is."""
        assert self._js is not None
        headers = {Headers.SCHEMA: str(CONTRACT_VERSION)}
        if msg_id:
            headers[Headers.MSG_ID] = msg_id
        trace = (command_headers or {}).get(Headers.TRACEPARENT)
        if trace:
            headers[Headers.TRACEPARENT] = trace
        loop = asyncio.get_running_loop()
        give_up, delay = loop.time() + self._publish_patience, 0.1
        retried = False
        while True:
            mark = Violations.mark()
            try:
                ack = await self._js.publish(subject, data, headers=headers, timeout=PUBLISH_TIMEOUT)
                if not (fresh and ack.duplicate and Headers.MSG_ID in headers):
                    return
                # After a try that timed out, most likely that try landed; on a first try, someone took the id.
                (log.info if retried else log.warning)(
                    "worker.event_id_taken", subject=subject, msg_id=msg_id, note="published again without it"
                )
                headers = {k: v for k, v in headers.items() if k != Headers.MSG_ID}
                continue
            except MaxPayloadError:  # too large for the bus: trying again cannot help
                raise
            except (NatsTimeoutError, TimeoutError, NatsError, APIError) as exc:
                refused = self._violations.since(mark, [subject], exact=True)
                if refused is not None:  # not an outage: trying again cannot help
                    raise refused from None
                if loop.time() + delay >= give_up:
                    waited = f"{self._publish_patience:g} s"
                    raise BusUnavailable(f"publishing to {subject} failed for {waited}: {exc}") from exc
                error = str(exc) or type(exc).__name__
                log.info("worker.publish_retrying", subject=subject, error=error, after=delay)
                retried = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _heartbeat(self, deliveries: list[Msg]) -> None:
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            for msg in list(deliveries):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    def _stopped_attempt(self, workflow_id: str, attempt: int) -> bool:
        """Whether the gateway stopped this attempt of the workflow (a later one, an admin's retry, may run)."""
        stopped = self._stopped.get(workflow_id)
        return stopped is not None and (stopped[1] is None or attempt <= stopped[1])

    def _remember(self, key: str, final: bytes, final_key: str) -> None:
        self._done[key] = (final, final_key)
        while len(self._done) > self._remembered:
            self._done.popitem(last=False)
