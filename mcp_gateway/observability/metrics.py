"""Prometheus metrics of one gateway process: the core's `Telemetry` counted as it happens, plus what is read at
scrape time (workflows by status, the outbox, stored dead letters, the events consumer, the background loops).

Each `GatewayMetrics` has a `CollectorRegistry` of its own (never prometheus_client's global one), so several
gateways in one process (the tests) keep apart. Each gateway process serves its own `/metrics` (one process per
port), so prometheus_client's multiprocess mode is not needed and not used: Prometheus scrapes every process and
sums (`sum by (tool) (rate(mcpgw_calls_total[5m]))`).

A scrape (`exposition`) reads the store's `counts(open_only=True)` and the events consumer's state concurrently,
each within `scrape_timeout` seconds (2 by default). A read that fails or runs out of time leaves its families out
of that scrape and counts one `mcpgw_scrape_errors_total{source=...}`; the rest is served all the same, so a
scrape never fails because PostgreSQL or NATS is away. What is read so (workflows, outbox, stored dead letters, the
consumer) is the same from every process of one database and NATS: aggregate it with `max`, not `sum`.

Families (label sets in braces):
- `mcpgw_calls_total{tool,outcome}`, `mcpgw_calls_in_flight{tool}`
- `mcpgw_call_accepted_seconds{tool}` (validation and the store write), `mcpgw_call_first_progress_seconds{tool}`,
  `mcpgw_call_result_seconds{tool}` (calls answered with the workflow's end): histograms
- `mcpgw_open_workflows{tool,status}`, `mcpgw_input_required_workflows{tool}` (scrape time),
  `mcpgw_workflows_ended_total{tool,status}`
- `mcpgw_outbox_messages`, `mcpgw_outbox_oldest_age_seconds`, `mcpgw_commands_published_total`,
  `mcpgw_commands_relayed_total`, `mcpgw_commands_deferred_total`
- `mcpgw_fold_lag_seconds{kind}` (publish on JetStream to fold committed), `mcpgw_events_consumer_pending`,
  `mcpgw_events_consumer_ack_pending`, `mcpgw_events_consumer_redelivered`, `mcpgw_events_consumer_waiting`
- `mcpgw_dead_letters_stored`, `mcpgw_dead_lettered_total{source,reason}`, `mcpgw_retries_total{tool,by}`
- `mcpgw_auth_failures_total{reason}`, `mcpgw_limit_refusals_total{limit}`
- `mcpgw_loop_restarts_total{loop}`, `mcpgw_loop_failing{loop}` (from the supervisor at scrape time)
- `mcpgw_scrape_errors_total{source}`, `mcpgw_build_info{version}`, and the `process_*` families
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol, TypeVar

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcp_gateway.bus import ConsumerState
from mcp_gateway.core.ports import Counts
from mcp_gateway.core.states import Status
from mcp_gateway.core.supervisor import LoopHealth

__all__ = [
    "CONTENT_TYPE",
    "ConsumerSource",
    "CountsSource",
    "GatewayMetrics",
    "HealthSource",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `exposition()` (Prometheus's text format)."""

FAST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: what should take milliseconds (validation and a store write; a fold)."""
WORK_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: what a worker's work takes (first progress, the result)."""
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class CountsSource(Protocol):
    """The store, as far as a scrape needs it."""

    async def counts(self, *, open_only: bool = False, since: datetime | None = None) -> Counts: ...


class ConsumerSource(Protocol):
    """The bus, as far as a scrape needs it."""

    async def events_consumer(self) -> ConsumerState: ...


class HealthSource(Protocol):
    """The supervisor, as far as a scrape needs it."""

    def health(self) -> dict[str, LoopHealth]: ...

    def failing(self) -> list[str]: ...


@dataclass(slots=True)
class _Snapshot:
    """What a scrape read (None: not read this time)."""

    counts: Counts | None = None
    consumer: ConsumerState | None = None
    health: dict[str, LoopHealth] = field(default_factory=dict[str, LoopHealth])
    failing: frozenset[str] = frozenset()


class _ScrapeTime:
    """The collector of what is read at scrape time: yields the families of the last `_Snapshot`."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        if s.counts is not None:
            yield from _count_families(s.counts)
        if s.consumer is not None:
            yield from _consumer_families(s.consumer)
        restarts = CounterMetricFamily(
            "mcpgw_loop_restarts",
            "Unexpected ends of a background loop since the start (then restarted)",
            labels=["loop"],
        )
        failing = GaugeMetricFamily(
            "mcpgw_loop_failing",
            "1 when the background loop keeps failing (readiness names it), else 0",
            labels=["loop"],
        )
        for name, health in sorted(s.health.items()):
            restarts.add_metric([name], health.restarts)
            failing.add_metric([name], 1.0 if name in s.failing else 0.0)
        yield restarts
        yield failing


def _count_families(counts: Counts) -> Iterable[Metric]:
    workflows = GaugeMetricFamily(
        "mcpgw_open_workflows",
        "Workflows that have not ended, by tool and status (in the store)",
        labels=["tool", "status"],
    )
    waiting = GaugeMetricFamily(
        "mcpgw_input_required_workflows", "Workflows waiting for input (a question or an approval)", labels=["tool"]
    )
    for (tool, status), n in sorted(counts.by_tool_status.items()):
        workflows.add_metric([tool, status.value], n)
        if status is Status.INPUT_REQUIRED:
            waiting.add_metric([tool], n)
    yield workflows
    yield waiting
    yield GaugeMetricFamily(
        "mcpgw_outbox_messages", "Commands recorded and not yet on the bus (held for approval excluded)", counts.outbox
    )
    yield GaugeMetricFamily(
        "mcpgw_outbox_oldest_age_seconds",
        "Age of the oldest command waiting in the outbox (0 when it is empty)",
        counts.outbox_oldest_seconds or 0.0,
    )
    yield GaugeMetricFamily("mcpgw_dead_letters_stored", "Dead letters kept in the store", counts.dead_letters)


def _consumer_families(state: ConsumerState) -> Iterable[Metric]:
    for name, value, text in (
        ("pending", state.pending, "Events in the stream not yet delivered to the gateway"),
        ("ack_pending", state.ack_pending, "Events delivered to the gateway and not yet acknowledged"),
        ("redelivered", state.redelivered, "Events delivered more than once and not yet acknowledged"),
        ("waiting", state.waiting, "Pull requests of gateway processes waiting for events"),
    ):
        yield GaugeMetricFamily(f"mcpgw_events_consumer_{name}", f"{text} (the events consumer, from JetStream)", value)


class GatewayMetrics:
    """The gateway's `Telemetry`, in a `CollectorRegistry` of its own; `exposition()` is what `/metrics` serves.

    `store`, `bus` and `supervisor` are read at scrape time; any may be None (its families are left out)."""

    def __init__(
        self,
        *,
        store: CountsSource | None = None,
        bus: ConsumerSource | None = None,
        supervisor: HealthSource | None = None,
        version: str = "",
        scrape_timeout: float = 2.0,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        self.scrape_timeout = scrape_timeout
        self._store = store
        self._bus = bus
        self._supervisor = supervisor
        self._lock = asyncio.Lock()
        r = self.registry
        self.calls = Counter("mcpgw_calls", "Tool calls, by tool and outcome", ["tool", "outcome"], registry=r)
        self.in_flight = Gauge("mcpgw_calls_in_flight", "Tool calls running now", ["tool"], registry=r)
        self.accepted = Histogram(
            "mcpgw_call_accepted_seconds",
            "From a call's arrival to its workflow and command recorded (validation and the store write)",
            ["tool"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.first_progress = Histogram(
            "mcpgw_call_first_progress_seconds",
            "From a call's arrival to its first progress sent to the client",
            ["tool"],
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.result = Histogram(
            "mcpgw_call_result_seconds",
            "From a call's arrival to its answer with the workflow's end (completed, failed, ...)",
            ["tool"],
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.fold_lag = Histogram(
            "mcpgw_fold_lag_seconds",
            "From a worker event's publish on JetStream to its fold committed",
            ["kind"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.ended = Counter(
            "mcpgw_workflows_ended", "Workflows that ended here, by tool and status", ["tool", "status"], registry=r
        )
        self.retries = Counter(
            "mcpgw_retries", "Attempts run again, by tool and by whom (policy, admin)", ["tool", "by"], registry=r
        )
        self.dead_letters = Counter(
            "mcpgw_dead_lettered",
            "Messages and workflows dead-lettered, by source (event, command) and reason",
            ["source", "reason"],
            registry=r,
        )
        self.published = Counter("mcpgw_commands_published", "Commands published on the bus", registry=r)
        self.relayed = Counter(
            "mcpgw_commands_relayed",
            "Commands the outbox relay published (left behind by a failed publish)",
            registry=r,
        )
        self.deferred = Counter(
            "mcpgw_commands_deferred", "Commands that could not be published at once (left to the relay)", registry=r
        )
        self.limit_refusals = Counter(
            "mcpgw_limit_refusals", "Requests and calls refused by a limit, by its setting", ["limit"], registry=r
        )
        self.auth_failures = Counter(
            "mcpgw_auth_failures", "HTTP requests that failed authentication, by reason", ["reason"], registry=r
        )
        self.scrape_errors = Counter(
            "mcpgw_scrape_errors",
            "Scrape-time reads that failed or ran out of time (their families were left out), by source",
            ["source"],
            registry=r,
        )
        Info("mcpgw_build", "The gateway's version", registry=r).info({"version": version})
        self._scrape_time = _ScrapeTime()
        r.register(self._scrape_time)
        if process:
            ProcessCollector(registry=r)

    # The core's Telemetry (mcp_gateway.core.telemetry).

    def call_started(self, tool: str) -> None:
        self.in_flight.labels(tool).inc()

    def call_accepted(self, tool: str, seconds: float) -> None:
        self.accepted.labels(tool).observe(seconds)

    def call_progressed(self, tool: str, seconds: float) -> None:
        self.first_progress.labels(tool).observe(seconds)

    def call_ended(self, tool: str, outcome: str, seconds: float, *, result: bool) -> None:
        self.in_flight.labels(tool).dec()
        self.calls.labels(tool, outcome).inc()
        if result:
            self.result.labels(tool).observe(seconds)

    def call_refused(self, tool: str, outcome: str) -> None:
        self.calls.labels(tool, outcome).inc()

    def event_folded(self, kind: str, lag_seconds: float | None) -> None:
        if lag_seconds is not None:
            self.fold_lag.labels(kind).observe(lag_seconds)

    def workflow_ended(self, tool: str, status: str) -> None:
        self.ended.labels(tool, status).inc()

    def retried(self, tool: str, by: str) -> None:
        self.retries.labels(tool, by).inc()

    def dead_lettered(self, source: str, reason: str) -> None:
        self.dead_letters.labels(source, reason).inc()

    def command_published(self) -> None:
        self.published.inc()

    def commands_relayed(self, count: int) -> None:
        if count:
            self.relayed.inc(count)

    def command_deferred(self) -> None:
        self.deferred.inc()

    def limit_refused(self, limit: str) -> None:
        self.limit_refusals.labels(limit).inc()

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    # Scrapes.

    async def exposition(self) -> bytes:
        """The text exposition: what was counted, and what is read now (each read within `scrape_timeout`)."""
        async with self._lock:  # concurrent scrapes take turns: one snapshot each
            counts, consumer = await asyncio.gather(self._read_counts(), self._read_consumer())
            snapshot = _Snapshot(counts, consumer)
            if self._supervisor is not None:
                snapshot.health = self._supervisor.health()
                snapshot.failing = frozenset(self._supervisor.failing())
            self._scrape_time.snapshot = snapshot
            return generate_latest(self.registry)

    async def _read_counts(self) -> Counts | None:
        if self._store is None:
            return None
        store = self._store
        return await self._read("store", lambda: store.counts(open_only=True))

    async def _read_consumer(self) -> ConsumerState | None:
        if self._bus is None:
            return None
        bus = self._bus
        return await self._read("nats", bus.events_consumer)

    async def _read(self, source: str, read: Callable[[], Awaitable[T]]) -> T | None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.scrape_timeout):
                return await read()
        except Exception as exc:
            self.scrape_errors.labels(source).inc()
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "metrics.scrape_read_failed",
                source=source,
                error=error,
                seconds=round(time.monotonic() - started, 3),
                timeout=self.scrape_timeout,
            )
            return None
