"""The worker's own Prometheus metrics, served on a port it opts into (`--metrics-port`, `connect(url,
metrics_port=...)`), bound to 127.0.0.1 unless told otherwise (`--metrics-host`).

Families, by tool: `mcpgw_worker_handled_total` (commands that ended in a result or a failure reported),
`mcpgw_worker_failed_total{tool,code}` (those that failed, by error code), `mcpgw_worker_retries_total` (attempts
handed to the tool's retry policy), `mcpgw_worker_handle_duration_seconds` (from taking a command to settling it)
and `mcpgw_worker_in_flight`.

prometheus-client is the optional extra `metrics` (`pip install 'mcp-gateway-worker[metrics]'`): without it,
asking for metrics raises `MetricsUnavailable`, naming the extra; a worker that asks for none never imports it.
Each `WorkerMetrics` has a registry of its own; the workers of one process share one (`run_workers`), on one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from mcp_gateway_worker.contract import ErrorInfo, EventKind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["NO_METRICS", "MetricsPortUnavailable", "MetricsUnavailable", "Observer", "WorkerMetrics", "serve_metrics"]

log = structlog.get_logger(__name__)

EXTRA: Final = "mcp-gateway-worker[metrics]"
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class MetricsUnavailable(ImportError):
    """Metrics were asked for, and prometheus-client (the extra `metrics`) is not installed."""


class MetricsPortUnavailable(OSError):
    """The metrics port cannot be bound (in use, or an address this host does not have)."""


class Observer(Protocol):
    """What the worker tells about its commands (a `WorkerMetrics`, or `NO_METRICS`)."""

    def running(self, tool: str) -> contextlib.AbstractContextManager[None]:
        """Around one command's handling: in flight meanwhile, its duration observed at the end."""
        ...

    def emitted(self, tool: str, kind: EventKind, error: ErrorInfo | None) -> None:
        """An event of the command went out (a result, a failure, a retry count; others are ignored)."""
        ...


class _Silent:
    @contextmanager
    def running(self, tool: str) -> Generator[None]:
        yield

    def emitted(self, tool: str, kind: EventKind, error: ErrorInfo | None) -> None:
        pass


NO_METRICS: Final[Observer] = _Silent()


class WorkerMetrics:
    """The worker's metrics, in a `CollectorRegistry` of its own (raises `MetricsUnavailable` without the extra)."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise MetricsUnavailable(
                f"worker metrics need prometheus-client: install the extra, pip install '{EXTRA}' ({exc})"
            ) from exc
        self.registry: CollectorRegistry = CollectorRegistry()
        r = self.registry
        self._handled = Counter(
            "mcpgw_worker_handled", "Commands that ended in a result or a reported failure", ["tool"], registry=r
        )
        self._failed = Counter(
            "mcpgw_worker_failed", "Commands that ended in a failure, by error code", ["tool", "code"], registry=r
        )
        self._retries = Counter(
            "mcpgw_worker_retries", "Failed attempts handed to the tool's retry policy", ["tool"], registry=r
        )
        self._duration = Histogram(
            "mcpgw_worker_handle_duration_seconds",
            "From taking a command to settling it (its result or failure sent, or handed back)",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge("mcpgw_worker_in_flight", "Commands being handled now", ["tool"], registry=r)

    @contextmanager
    def running(self, tool: str) -> Generator[None]:
        gauge = self._in_flight.labels(tool)
        gauge.inc()
        started = time.monotonic()
        try:
            yield
        finally:
            gauge.dec()
            self._duration.labels(tool).observe(time.monotonic() - started)

    def emitted(self, tool: str, kind: EventKind, error: ErrorInfo | None) -> None:
        if kind is EventKind.COMPLETED:
            self._handled.labels(tool).inc()
        elif kind is EventKind.FAILED:
            self._handled.labels(tool).inc()
            self._failed.labels(tool, error.code if error is not None else "unknown").inc()
        elif kind is EventKind.RETRYING:
            self._retries.labels(tool).inc()

    def exposition(self) -> bytes:
        """The text exposition (Prometheus's format)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@asynccontextmanager
async def serve_metrics(metrics: WorkerMetrics, host: str = "127.0.0.1", port: int = 0) -> AsyncGenerator[str]:
    """Serve `metrics` over HTTP on `host:port` (0: a free port) while the block runs; yields the URL of
    `/metrics`. prometheus-client's own server, in a thread (it answers every path but /favicon.ico)."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve worker metrics on {host}:{port} (--metrics-host, --metrics-port): {exc}"
        ) from exc
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/metrics"
    log.info("worker.metrics_serving", url=url)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(timeout=5)
