"""Traces: one tool call is one trace, from the MCP request through the store write and the publish to the worker's
handler and the fold of each of its events; the client's trace is continued; the workflow row names the trace; the
trace id is on the log lines; and with tracing off nothing of OpenTelemetry's SDK is even imported.

Spans go to an in-memory exporter through `trace_with` (the global provider stays unset, so the SDK's client does
not put a traceparent of its own into `_meta`). The gateway and the workers share this process and the provider."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import httpx2
import nats
import pytest
import structlog
from mcp.client.streamable_http import streamable_http_client
from mcp.types import RequestParamsMeta
from mcp_gateway_worker import _tracing as worker_tracing
from mcp_gateway_worker.contract import CONTRACT_VERSION, Caller, ErrorInfo, Event, EventKind, Headers, encode
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.observability import TracingError, configure_tracing, trace_with
from mcp_gateway.server._results import WORKFLOW_META
from tests.conftest import Env, StrictClient, http_server

CALLER = Caller(subject="tester")
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_with(provider)
    try:
        yield exporter
    finally:
        trace_with(None)
        provider.shutdown()


async def trace_of(
    exporter: InMemorySpanExporter, trace_id: str, *, folds: int, handles: int = 1
) -> list[ReadableSpan]:
    """The spans of trace `trace_id` once the worker's handler span and `folds` fold spans have ended (the call
    returns when the result is committed; the worker's ack and the fold's ack come after)."""
    wanted = int(trace_id, 16)
    async with asyncio.timeout(10):
        while True:
            found = [s for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == wanted]
            names = [s.name for s in found]
            if names.count("worker.handle") >= handles and names.count("gateway.fold") >= folds:
                return found
            await asyncio.sleep(0.01)


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one {name!r} span, found {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def check_worker_and_folds(found: Sequence[ReadableSpan], workflow_id: str) -> ReadableSpan:
    """The trace's publish > worker handler > folds chain; returns the gateway's call span."""
    call = one(found, "gateway.call")
    publish = one(found, "gateway.publish")
    handle = one(found, "worker.handle")
    for name in ("gateway.validate", "gateway.store.create"):
        assert parent_of(one(found, name)) == span_id(call)
    assert parent_of(publish) == span_id(call)
    assert publish.attributes is not None and publish.attributes["mcp_gateway.workflow_id"] == workflow_id
    assert parent_of(handle) == span_id(publish)  # the command's traceparent was the publish span's
    assert handle.attributes is not None and handle.attributes["mcp_gateway.outcome"] == "completed"
    told = [e.name for e in handle.events]
    assert told.count("progress") == 2 and told[-1] == "completed"
    folds = [s for s in found if s.name == "gateway.fold"]
    assert {parent_of(f) for f in folds} == {span_id(handle)}  # each event carried the handler span's context
    kinds = [f.attributes["mcp_gateway.event_kind"] for f in folds if f.attributes is not None]
    assert kinds.count("progress") == 2 and "completed" in kinds
    return call


async def test_a_call_is_one_trace_through_the_gateway_and_the_worker(
    spans: InMemorySpanExporter, gateway: Gateway
) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        outcome = await gateway.service.call("steps", {"count": 2}, caller=CALLER)
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.workflow_id is not None
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.trace_id is not None
    found = await trace_of(spans, record.trace_id, folds=3)
    call = check_worker_and_folds(found, outcome.workflow_id)
    assert call.parent is None  # no client trace: the call starts one, and the row names it
    assert call.attributes is not None and call.attributes["mcp_gateway.outcome"] == "completed"
    # Nothing of this workflow went into another trace.
    elsewhere = [
        s.name
        for s in spans.get_finished_spans()
        if s.attributes is not None
        and s.attributes.get("mcp_gateway.workflow_id") == outcome.workflow_id
        and s.context is not None
        and s.context.trace_id != int(record.trace_id, 16)
    ]
    assert elsewhere == []
    accepted = [e for e in logs if e["event"] == "call.accepted"]
    assert [e.get("trace_id") for e in accepted] == [record.trace_id]


async def test_the_worker_logs_carry_the_trace_id(spans: InMemorySpanExporter, gateway: Gateway) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        outcome = await gateway.service.call("explode", {"crash": True}, caller=CALLER)
    assert outcome.kind is OutcomeKind.FAILED and outcome.workflow_id is not None
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.trace_id is not None
    found = await trace_of(spans, record.trace_id, folds=1)
    handle = one(found, "worker.handle")
    assert handle.attributes is not None and handle.attributes["mcp_gateway.outcome"] == "failed"
    assert [e.name for e in handle.events] == ["failed"]
    crashed = [e for e in logs if e["event"] == "worker.handler_crashed"]
    assert [e.get("trace_id") for e in crashed] == [record.trace_id]


@pytest.mark.parametrize("carrier", ["header", "meta"])
async def test_a_client_trace_is_continued_over_http(
    spans: InMemorySpanExporter, gateway: Gateway, carrier: str
) -> None:
    headers = {"traceparent": CLIENT_TRACEPARENT} if carrier == "header" else {}
    meta: RequestParamsMeta | None = {"traceparent": CLIENT_TRACEPARENT} if carrier == "meta" else None
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with (
            http_server(gateway) as url,
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
            StrictClient(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client,
        ):
            result = await client.call_tool("steps", {"count": 2}, meta=meta)
    assert not result.is_error, result
    assert result.meta is not None
    workflow_id = str(result.meta[WORKFLOW_META])
    record = await gateway.store.get(workflow_id)
    assert record is not None and record.trace_id == CLIENT_TRACE_ID  # the row names the client's trace
    found = await trace_of(spans, CLIENT_TRACE_ID, folds=3)
    request = one(found, "gateway.request")
    assert request.parent is not None and request.parent.is_remote
    assert f"{request.parent.span_id:016x}" == CLIENT_SPAN_ID  # a child of the client's span
    call = check_worker_and_folds(found, workflow_id)
    assert parent_of(call) == span_id(request)
    reply = one(found, "gateway.reply")
    assert parent_of(reply) == span_id(request)
    assert reply.attributes is not None and reply.attributes["mcp_gateway.outcome"] == "completed"
    finished = [e for e in logs if e["event"] == "call.finished"]
    assert [e.get("trace_id") for e in finished] == [CLIENT_TRACE_ID]


async def test_an_event_without_a_traceparent_is_folded_in_the_workflows_trace(
    spans: InMemorySpanExporter, env: Env
) -> None:
    """A worker that does not carry the context (an old or a foreign one): its events' folds join the trace the
    workflow's row names, and the fold's log lines carry that trace id."""
    async with open_gateway(env.settings()) as gateway:  # no worker: the events are sent by hand
        outcome = await gateway.service.call("echo", {"text": "hi"}, caller=CALLER, wait=False)
        assert outcome.workflow_id is not None
        record = await gateway.store.get(outcome.workflow_id)
        assert record is not None and record.trace_id is not None
        subject = gateway.bus.subjects.event("diagnostics.echo", outcome.workflow_id)
        now = datetime.now(UTC)
        failed = Event(
            workflow_id=outcome.workflow_id,
            seq=0,
            kind=EventKind.FAILED,
            at=now,
            error=ErrorInfo(code="broken", message="by hand"),
        )
        late = Event(workflow_id=outcome.workflow_id, seq=1, kind=EventKind.PROGRESS, at=now, progress=1)
        nc = await nats.connect(gateway.urls.nats)
        try:
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                for event in (failed, late):
                    headers = {Headers.MSG_ID: event.key, Headers.SCHEMA: str(CONTRACT_VERSION)}
                    await nc.jetstream().publish(subject, encode(event), headers=headers)
                found = await trace_of(spans, record.trace_id, folds=2, handles=0)
        finally:
            await nc.close()
    folds = [s for s in found if s.name == "gateway.fold"]
    assert len(folds) == 2
    known = {span_id(s) for s in spans.get_finished_spans()}
    assert all(f.parent is not None and f.parent.span_id not in known for f in folds)  # unparented, in the trace
    noted = [e for e in logs if e["event"] == "fold.noted"]  # the progress after the end, ignored
    assert noted and {e.get("trace_id") for e in noted} == {record.trace_id}


def test_tracing_off_imports_nothing_of_the_sdk() -> None:
    """No OTEL_* variable, no setting: the switches stay no-ops and OpenTelemetry's SDK is never imported (the
    worker distribution imports no OpenTelemetry module at all; the MCP SDK itself brings the API along)."""
    code = (
        "import json, sys\n"
        "import mcp_gateway_worker\n"
        "from mcp_gateway_worker import _tracing\n"
        "assert not _tracing.configure_tracing()\n"
        "worker_only = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "import mcp_gateway.app, mcp_gateway.cli\n"
        "from mcp_gateway.core import tracing\n"
        "from mcp_gateway.observability import configure_tracing\n"
        "assert not configure_tracing()\n"
        "sdk = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
        "print(json.dumps([worker_only, sdk, tracing.tracer() is tracing.NO_TRACER, _tracing.tracer().enabled]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[], [], True, False]


def test_the_environment_decides_the_exporters() -> None:
    wanted = worker_tracing.wanted_exporters
    assert wanted({}) == []
    assert wanted({}, enabled=True) == ["otlp"]  # the `tracing` setting: OpenTelemetry's default exporter
    assert wanted({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert wanted({"OTEL_TRACES_EXPORTER": " otlp , console,otlp"}) == ["otlp", "console"]
    assert wanted({"OTEL_TRACES_EXPORTER": "none"}, enabled=True) == []
    assert wanted({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, enabled=True) == []
    with pytest.raises(worker_tracing.TracingError, match=r"OTEL_TRACES_EXPORTER='jaeger'.*expected otlp, console"):
        wanted({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_a_tracing_environment_that_cannot_be_had_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(TracingError, match="unknown exporter 'zipkin'"):
        configure_tracing("mcp-gateway")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(TracingError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='grpc'.*expected http/protobuf"):
        configure_tracing("mcp-gateway")
