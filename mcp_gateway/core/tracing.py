"""The core's tracing port: spans around a call's steps, a no-op unless the composition root installs a tracer.

The core starts spans through `tracer()` and never imports OpenTelemetry: `mcp_gateway.observability.tracing`
installs an OpenTelemetry-backed tracer here once, at start, when tracing is on; otherwise every span is the one
shared no-op object and nothing else is done or imported.

A span's `parent` is a W3C `traceparent` to continue (the client's, the one an outbox message or an event
carries); when the code already runs inside a span of that same trace, the span nests under the current one
instead, so one call's spans form one tree whichever way the context reached it.

Also here: the W3C helpers that work with tracing off too (`new_traceparent`, `trace_id_of`).
"""

from __future__ import annotations

import secrets

# The span and tracer protocols and the no-op tracer are the worker SDK's (one definition serves both sides; it
# imports no OpenTelemetry). The core keeps a switch of its own: the gateway's spans, installed by the root.
from mcp_gateway_worker._tracing import NO_TRACER, AttributeValue, Span, SpanKind, Tracer, trace_id_of

__all__ = [
    "NO_TRACER",
    "AttributeValue",
    "Span",
    "SpanKind",
    "Tracer",
    "install",
    "new_traceparent",
    "trace_id_of",
    "traceparent_in",
    "tracer",
]

_tracer: Tracer = NO_TRACER


def tracer() -> Tracer:
    """The tracer installed at start (the no-op one unless tracing is on)."""
    return _tracer


def install(chosen: Tracer | None) -> None:
    """Make `chosen` the core's tracer (None: the no-op one again). Called once by the composition root; tests
    call it around a test."""
    global _tracer
    _tracer = chosen if chosen is not None else NO_TRACER


def new_traceparent() -> str:
    """A fresh W3C traceparent (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def traceparent_in(trace_id: str | None) -> str | None:
    """A traceparent inside trace `trace_id` (a workflow's stored trace), for a span to join that trace when the
    span that started it is not known (its parent id is made up: backends show the span in the trace, unparented)."""
    if trace_id is None or len(trace_id) != 32:
        return None
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"
