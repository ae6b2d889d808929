"""Tracing in the worker SDK (OpenTelemetry, the optional extra `otel`): a switch decided once, a no-op unless on.

Off, it costs nothing: no OpenTelemetry module is imported and every span is one shared no-op object.
`configure_tracing(service_name)` (the `mcp-gateway-worker` command calls it once, at start) turns it on when
the environment asks for it the standard way and the extra is installed:

- `OTEL_TRACES_EXPORTER`: `otlp` (OTLP over HTTP: `OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, ...), `console`
  (to stderr: stdout may carry the MCP protocol), a comma-separated list of them, or `none`;
- `OTEL_SDK_DISABLED=true` turns it off whatever else is set; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
  `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` are OpenTelemetry's own.

An application with a TracerProvider of its own (or a test with an in-memory exporter) calls
`install(OtelTracer(provider))` instead.

With it on, each command handled is a span (`worker.handle <tool>`, kind consumer), a child of the span whose
`traceparent` the command's headers carry; each event the handler reports is an event on it (progress, questions,
the result), each question a span of its own (`worker.question`, until the answer), and every event published
carries the handler span's `traceparent`, so the gateway's fold of it joins the same trace.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Generator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "NO_TRACER",
    "SCOPE",
    "AttributeValue",
    "OtelTracer",
    "Span",
    "SpanKind",
    "Tracer",
    "TracingError",
    "configure_tracing",
    "install",
    "trace_id_of",
    "tracer",
    "tracer_from_env",
    "wanted_exporters",
]

log = structlog.get_logger(__name__)

AttributeValue = str | int | float | bool
SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
SCOPE = "mcp-gateway-worker"
"""The instrumentation scope of the worker SDK's spans."""
EXPORTERS = ("otlp", "console")
PROTOCOLS = ("", "http/protobuf")
"""The OTLP protocols the extra's exporter speaks (OTEL_EXPORTER_OTLP_PROTOCOL; unset: http/protobuf)."""


class TracingError(ValueError):
    """The tracing environment asks for what cannot be had (an unknown exporter, a protocol not shipped, the extra
    missing while tracing was asked for explicitly)."""


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None: ...


class Tracer(Protocol):
    @property
    def enabled(self) -> bool: ...

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AbstractContextManager[Span]:
        """A span, current while the block runs: a child of `parent` (a traceparent) unless the current span is
        already of that trace (then of the current span); with no usable `parent`, of the current span, else a
        new trace."""
        ...

    def traceparent(self) -> str | None:
        """The current span's traceparent (None when there is none, or tracing is off)."""
        ...


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        return None


_NO_SPAN = _NoSpan()


class _NoTracer:
    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return False

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AbstractContextManager[Span]:
        return _NO_SPAN

    def traceparent(self) -> str | None:
        return None


NO_TRACER: Tracer = _NoTracer()
_tracer: Tracer = NO_TRACER


def tracer() -> Tracer:
    """The worker SDK's tracer (the no-op one unless tracing is on)."""
    return _tracer


def install(chosen: Tracer | None) -> None:
    """Make `chosen` the SDK's tracer (None: the no-op one again)."""
    global _tracer
    _tracer = chosen if chosen is not None else NO_TRACER


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C traceparent; None when there is none or it is malformed."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class OtelTracer:
    """The tracer on OpenTelemetry: spans of `provider` (default: the global one), W3C traceparents in and out.
    Constructing it imports OpenTelemetry (the `otel` extra)."""

    def __init__(self, provider: TracerProvider | None = None, scope: str = SCOPE) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._api = trace
        self._tracer = trace.get_tracer(scope, tracer_provider=provider)
        self._format = TraceContextTextMapPropagator()
        self._kinds: dict[str, trace.SpanKind] = {
            "internal": trace.SpanKind.INTERNAL,
            "server": trace.SpanKind.SERVER,
            "client": trace.SpanKind.CLIENT,
            "producer": trace.SpanKind.PRODUCER,
            "consumer": trace.SpanKind.CONSUMER,
        }

    @property
    def enabled(self) -> bool:
        return True

    @contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Generator[Span]:
        with self._tracer.start_as_current_span(
            name, context=self._parent(parent), kind=self._kinds[kind], attributes=attributes
        ) as span:
            yield span

    def _parent(self, parent: str | None) -> Context | None:
        """The context to start a span in: None (the current one) unless `parent` names another trace."""
        if not parent:
            return None
        remote_context = self._format.extract({"traceparent": parent})
        remote = self._api.get_current_span(remote_context).get_span_context()
        if not remote.is_valid:  # malformed: as if there were none
            return None
        current = self._api.get_current_span().get_span_context()
        if current.is_valid and current.trace_id == remote.trace_id:
            return None  # already inside that trace: nest under the current span
        return remote_context

    def traceparent(self) -> str | None:
        context = self._api.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def wanted_exporters(env: Mapping[str, str], *, enabled: bool = False) -> list[str]:
    """The span exporters the environment asks for; [] means tracing stays off. `OTEL_TRACES_EXPORTER` names
    them (otlp, console, none; comma-separated); with `enabled` (a setting) and none named, otlp (OpenTelemetry's
    default). `none` alone, or `OTEL_SDK_DISABLED=true`, keeps tracing off even with `enabled`."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    named = list(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    unknown = [n for n in named if n not in (*EXPORTERS, "none")]
    if unknown:
        raise TracingError(
            f"OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {unknown[0]!r}; expected otlp, console or none "
            "(or a comma-separated list of otlp and console)"
        )
    chosen = [n for n in named if n != "none"]
    if named:
        return chosen
    return ["otlp"] if enabled else []


def _check_protocol(env: Mapping[str, str]) -> None:
    for key in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(key, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise TracingError(
                    f"{key}={value!r}: the otel extra exports OTLP over HTTP only; expected http/protobuf "
                    "(or leave it unset)"
                )
            return


def _missing(exporters: list[str]) -> str | None:
    """The first module of the extra that is not installed, if any (looked up, not imported)."""
    needed = ["opentelemetry.sdk", *(["opentelemetry.exporter.otlp.proto.http"] if "otlp" in exporters else [])]
    for name in needed:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:  # its parent package is missing
            return name
    return None


def _provider(service_name: str, exporters: list[str]) -> SdkTracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win over ours
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for name in exporters:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter(out=sys.stderr)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT ...
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_from_env(
    service_name: str,
    *,
    enabled: bool = False,
    env: Mapping[str, str] | None = None,
    extra: str = "mcp-gateway-worker[otel]",
    scope: str = SCOPE,
) -> OtelTracer | None:
    """The tracer the environment asks for (see the module's docstring), its provider made the global one; None
    when tracing stays off. `enabled` is an explicit wish (a setting): then a missing extra is a TracingError;
    asked for by the environment alone, it is a warning, and tracing stays off."""
    env = os.environ if env is None else env
    exporters = wanted_exporters(env, enabled=enabled)
    if not exporters:
        return None
    if "otlp" in exporters:
        _check_protocol(env)
    missing = _missing(exporters)
    if missing is not None:
        message = f"tracing needs the otel extra ({missing} is not installed): pip install '{extra}'"
        if enabled:
            raise TracingError(message)
        log.warning("tracing.unavailable", reason=message, exporters=exporters)
        return None
    from opentelemetry import trace

    provider = _provider(service_name, exporters)
    trace.set_tracer_provider(provider)
    log.info("tracing.on", service=service_name, exporters=exporters)
    return OtelTracer(provider, scope)


def configure_tracing(service_name: str = "mcp-gateway-worker", *, env: Mapping[str, str] | None = None) -> bool:
    """Decide once, at start, whether this worker process traces (see the module's docstring); True when it does.
    Raises TracingError when the environment asks for what cannot be had."""
    chosen = tracer_from_env(service_name, env=env)
    install(chosen)
    return chosen is not None
