"""Prometheus metrics: the gateway's `/metrics` (behind a token with the metrics scope or an admin's) counts what
calls did and reads the store, JetStream and the supervisor at scrape time; a scrape never fails because one of
them is away; the worker SDK serves metrics of its own on a port it opts into; the Grafana dashboard uses only
metric names that exist."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp_gateway_worker import WorkerMetrics
from mcp_gateway_worker._metrics import MetricsUnavailable
from mcp_gateway_worker.contract import Caller
from prometheus_client.parser import text_string_to_metric_families

from mcp_gateway.app import Gateway
from mcp_gateway.core.limits import CallLimits, LimitExceeded
from mcp_gateway.core.ports import Counts
from mcp_gateway.core.service import OutcomeKind, Progress
from mcp_gateway.core.states import Status
from mcp_gateway.core.telemetry import UNKNOWN_TOOL_LABEL, dead_letter_kind, fold_lag
from mcp_gateway.core.workflows import ADMIN
from mcp_gateway.observability.metrics import GatewayMetrics
from tests import workers as test_workers
from tests.conftest import Env, admin_token, http_server

ROOT = Path(__file__).resolve().parents[1]
CALLER = Caller(subject="metrics-tester")
JSON = {"Content-Type": "application/json"}


class Scrape:
    """A parsed exposition: sample values by name and labels, and every sample name each family can have."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {
            (s.name, frozenset(s.labels.items())): s.value for f in self.families.values() for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.values.items() if n == name}

    def names(self) -> set[str]:
        """Every sample name the exposition declares, observed or not (a counter `x`: `x_total`; a histogram:
        `x_bucket`, `x_count`, `x_sum`)."""
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "info": ["_info"]}
        found: set[str] = set()
        for family in self.families.values():
            found.update(family.name + s for s in suffixes.get(family.type, [""]))
            found.update(s.name for s in family.samples)
        return found


async def scrape(base: str, token: str, http: httpx2.AsyncClient) -> Scrape:
    response = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def until(check: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0) -> None:
    """Wait (bounded) until `check()` holds: for what is counted right after a commit that the caller heard of
    first (the fold tells the metrics after its commit; the outbox's marks are batched)."""
    async with asyncio.timeout(seconds):
        while True:
            done = check()
            if done if isinstance(done, bool) else await done:
                return
            await asyncio.sleep(0.01)


async def test_a_scrape_counts_the_calls_by_outcome_and_reads_the_store_nats_and_the_loops(gateway: Gateway) -> None:
    progressed: list[list[Progress]] = []
    for _ in range(2):
        heard: list[Progress] = []

        async def on_progress(p: Progress, heard: list[Progress] = heard) -> None:
            heard.append(p)

        done = await gateway.service.call("steps", {"count": 3}, caller=CALLER, on_progress=on_progress)
        assert done.kind is OutcomeKind.COMPLETED
        progressed.append(heard)
    failed = await gateway.service.call("explode", {}, caller=CALLER)
    assert failed.kind is OutcomeKind.FAILED and failed.status is Status.FAILED
    invalid = await gateway.service.call("steps", {"count": "three"}, caller=CALLER)
    assert invalid.kind is OutcomeKind.INVALID_ARGUMENTS
    unknown = await gateway.service.call("no_such_tool", {}, caller=CALLER)
    assert unknown.kind is OutcomeKind.UNKNOWN_TOOL
    held = await gateway.service.call("vault", {}, caller=CALLER)  # waits for an admin's approval
    assert held.kind is OutcomeKind.HANDED_BACK

    metrics = gateway.metrics.registry
    # The fold tells the metrics right after its commit, which the call may have heard of first.
    await until(
        lambda: metrics.get_sample_value("mcpgw_workflows_ended_total", {"tool": "steps", "status": "completed"}) == 2
    )
    await until(
        lambda: metrics.get_sample_value("mcpgw_workflows_ended_total", {"tool": "explode", "status": "failed"}) == 1
    )

    async def outbox_empty() -> bool:  # the outbox's 'published' marks are batched
        return (await gateway.store.counts(open_only=True)).outbox == 0

    await until(outbox_empty)

    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        m = await scrape(url.removesuffix("/mcp"), await admin_token(gateway), http)

    calls = {dict(k)["tool"] + "/" + dict(k)["outcome"]: v for k, v in m.labelled("mcpgw_calls_total").items()}
    assert calls == {
        "steps/completed": 2,
        "explode/failed": 1,
        "steps/invalid_arguments": 1,
        f"{UNKNOWN_TOOL_LABEL}/unknown_tool": 1,
        "vault/handed_back": 1,
    }
    assert m.value("mcpgw_calls_in_flight", tool="steps") == 0
    # Latencies: accepted for the calls recorded, first progress for those that reported, result for those that
    # ended (a handle or a refusal is no result).
    assert m.value("mcpgw_call_accepted_seconds_count", tool="steps") == 2
    assert m.value("mcpgw_call_accepted_seconds_count", tool="vault") == 1
    reported = sum(1 for heard in progressed if heard)  # progress the client heard before the result
    assert m.value("mcpgw_call_first_progress_seconds_count", tool="steps") == (reported or None)
    assert m.value("mcpgw_call_result_seconds_count", tool="steps") == 2
    assert m.value("mcpgw_call_result_seconds_count", tool="explode") == 1
    assert m.value("mcpgw_call_result_seconds_count", tool="vault") is None
    result_sum = m.value("mcpgw_call_result_seconds_sum", tool="steps")
    assert result_sum is not None and result_sum > 0
    assert m.value("mcpgw_call_result_seconds_bucket", tool="steps", le="+Inf") == 2

    # Read at scrape time from the store: the held workflow is the one open, waiting for input.
    assert m.labelled("mcpgw_open_workflows") == {frozenset({("tool", "vault"), ("status", "input_required")}): 1}
    assert m.value("mcpgw_input_required_workflows", tool="vault") == 1
    assert m.value("mcpgw_outbox_messages") == 0 and m.value("mcpgw_outbox_oldest_age_seconds") == 0
    assert m.value("mcpgw_dead_letters_stored") == 0
    assert m.value("mcpgw_workflows_ended_total", tool="steps", status="completed") == 2

    # The fold lag of every event folded (progress too), from JetStream's own timestamps.
    completed_lag = m.value("mcpgw_fold_lag_seconds_count", kind="completed")
    assert completed_lag is not None and completed_lag >= 2
    progress_lag = m.value("mcpgw_fold_lag_seconds_count", kind="progress")
    assert progress_lag is not None and progress_lag >= 6
    lag_sum = m.value("mcpgw_fold_lag_seconds_sum", kind="completed")
    assert lag_sum is not None and lag_sum >= 0
    published = m.value("mcpgw_commands_published_total")
    assert published is not None and published >= 3  # the held command is not published yet

    # JetStream's view of the events consumer, asked at scrape time.
    for name in ("pending", "ack_pending", "redelivered", "waiting"):
        value = m.value(f"mcpgw_events_consumer_{name}")
        assert value is not None and value >= 0, name
    assert m.value("mcpgw_events_consumer_redelivered") == 0

    # The supervisor's loops: every one there, none restarted, none failing.
    restarts = {dict(k)["loop"]: v for k, v in m.labelled("mcpgw_loop_restarts_total").items()}
    assert {"fold", "dispatch.mark", "dispatch.relay"} <= set(restarts) and set(restarts.values()) == {0}
    assert set(m.labelled("mcpgw_loop_failing").values()) == {0}
    assert m.labelled("mcpgw_scrape_errors_total") == {}
    assert m.value("mcpgw_build_info", version="0.1.0") == 1


async def test_metrics_need_the_metrics_scope_or_an_admin_and_failed_authentications_are_counted(
    gateway: Gateway,
) -> None:
    prometheus, _ = await gateway.tokens.create("prometheus", (gateway.settings.metrics_scope,))
    caller, _ = await gateway.tokens.create("alice", ("billing",))
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp")
        bare = await http.get(f"{base}/metrics")
        assert bare.status_code == 401 and 'error="invalid_token"' in bare.headers["www-authenticate"]
        forged = await http.get(f"{base}/metrics", headers={"Authorization": "Bearer mcpgw_0000_forged"})
        assert forged.status_code == 401
        refused = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {caller}"})
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
        assert (
            "mcpgw:metrics" in refused.json()["message"]
            and 'scope="mcpgw:metrics"' in refused.headers["www-authenticate"]
        )
        # Prometheus's token reads metrics, and nothing an admin may.
        m = await scrape(base, prometheus, http)
        assert (
            await http.get(f"{base}/admin/dead-letters", headers={"Authorization": f"Bearer {prometheus}"})
        ).status_code == 403
        metadata = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
        assert "mcpgw:metrics" in metadata["scopes_supported"]
    failures = {dict(k)["reason"]: v for k, v in m.labelled("mcpgw_auth_failures_total").items()}
    assert failures == {"missing_token": 1, "invalid_token": 1, "insufficient_scope": 1}


async def test_limit_refusals_are_counted_by_their_setting(gateway: Gateway) -> None:
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp")
        try:  # 413 and the connection closed, maybe before the client has sent the whole body
            too_large = await http.post(url, content=b"x" * (4 * 1024 * 1024 + 1), headers=JSON)
            assert too_large.status_code == 413
        except httpx2.TransportError:
            pass
        m = await scrape(base, await admin_token(gateway), http)
    assert m.value("mcpgw_limit_refusals_total", limit="max_request_body") == 1

    metrics = GatewayMetrics(process=False)
    limits = CallLimits(1, 10, telemetry=metrics)
    limits.acquire("alice")
    with pytest.raises(LimitExceeded):
        limits.acquire("alice")
    assert metrics.registry.get_sample_value("mcpgw_limit_refusals_total", {"limit": "max_in_flight_per_caller"}) == 1


class _AwayStore:
    async def counts(self, *, open_only: bool = False, since: Any = None) -> Counts:
        raise ConnectionRefusedError("PostgreSQL is away")


class _StuckBus:
    async def events_consumer(self) -> Any:
        await asyncio.Event().wait()  # never answers


async def test_a_scrape_with_the_store_and_nats_away_serves_the_rest_and_counts_the_errors() -> None:
    metrics = GatewayMetrics(store=_AwayStore(), bus=_StuckBus(), scrape_timeout=0.05, process=False)
    metrics.call_started("steps")
    metrics.call_ended("steps", "completed", 0.1, result=True)
    m = Scrape((await metrics.exposition()).decode())
    assert m.value("mcpgw_calls_total", tool="steps", outcome="completed") == 1
    assert "mcpgw_open_workflows" not in m.families and "mcpgw_events_consumer_pending" not in m.families
    assert m.value("mcpgw_scrape_errors_total", source="store") == 1
    assert m.value("mcpgw_scrape_errors_total", source="nats") == 1


def test_dead_letter_reasons_become_bounded_labels() -> None:
    assert dead_letter_kind("event", "no such workflow") == "no_workflow"
    assert dead_letter_kind("event", "refused: the event names workflow w but came on x") == "refused"
    assert dead_letter_kind("event", "PostgreSQL refused it 5 times: value too long") == "store_refused"
    assert dead_letter_kind("event", "folding failed 5 times: KeyError") == "fold_failed"
    assert dead_letter_kind("event", "the message is not JSON: Expecting value") == "undecodable"
    assert dead_letter_kind("command", "max_deliveries: the command was delivered 5 times (attempt 1)") == (
        "max_deliveries"
    )
    assert dead_letter_kind("command", "worker_error: RuntimeError: boom (attempt 3)") == "retries_exhausted"


def test_fold_lag_is_read_from_a_delivery_that_knows_its_publish_time() -> None:
    from datetime import UTC, datetime, timedelta

    class Stamped:
        published_at = datetime(2026, 1, 1, tzinfo=UTC)

    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1.5)
    assert fold_lag(Stamped(), now) == 1.5
    assert fold_lag(object(), now) is None
    early = Stamped()
    early.published_at = now + timedelta(seconds=1)  # the clocks disagree a little: never negative
    assert fold_lag(early, now) == 0.0


async def test_a_dead_lettered_workflow_and_an_admin_retry_are_counted(gateway: Gateway) -> None:
    import uuid

    outcome = await gateway.service.call("shaky", {"crashes": 5, "key": uuid.uuid4().hex}, caller=CALLER)
    assert outcome.kind is OutcomeKind.FAILED and outcome.status is Status.DEAD_LETTERED
    assert outcome.workflow_id is not None
    registry = gateway.metrics.registry
    await until(
        lambda: (
            registry.get_sample_value("mcpgw_dead_lettered_total", {"source": "command", "reason": "retries_exhausted"})
            == 1
        )
    )
    await gateway.admin_retry(outcome.workflow_id, {"crashes": 0, "key": uuid.uuid4().hex}, ADMIN)
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        m = await scrape(url.removesuffix("/mcp"), await admin_token(gateway), http)
    assert m.value("mcpgw_calls_total", tool="shaky", outcome="dead_lettered") == 1
    policy = m.value("mcpgw_retries_total", tool="shaky", by="policy")
    assert policy is not None and policy >= 2  # the policy's attempts (how many were folded before the last)
    assert m.value("mcpgw_retries_total", tool="shaky", by="admin") == 1
    assert m.value("mcpgw_workflows_ended_total", tool="shaky", status="dead_lettered") == 1
    stored = m.value("mcpgw_dead_letters_stored")
    assert stored is not None and stored >= 1


# --- the worker's own metrics -------------------------------------------------------------------------------------


async def test_a_worker_serves_its_metrics_on_the_port_it_asked_for(env: Env) -> None:
    from mcp_gateway.app import open_gateway

    async with open_gateway(env.settings()) as gw:
        worker = test_workers.worker.with_prefix(env.prefix)
        async with worker.connect(env.nats_url, metrics_port=0) as running, httpx2.AsyncClient(timeout=10) as http:
            assert running.metrics_url is not None and running.metrics_url.startswith("http://127.0.0.1:")
            assert running.metrics_url.endswith("/metrics")
            done = await gw.service.call("steps", {"count": 2}, caller=CALLER)
            assert done.kind is OutcomeKind.COMPLETED
            failed = await gw.service.call("explode", {}, caller=CALLER)
            assert failed.kind is OutcomeKind.FAILED
            response = await http.get(running.metrics_url)
            assert response.status_code == 200
    assert worker.metrics_url is None  # served while connected only
    m = Scrape(response.text)
    assert m.value("mcpgw_worker_handled_total", tool="steps") == 1
    assert m.value("mcpgw_worker_handled_total", tool="explode") == 1
    assert m.value("mcpgw_worker_failed_total", tool="explode", code="out_of_stock") == 1
    assert m.value("mcpgw_worker_failed_total", tool="steps", code="out_of_stock") is None
    assert m.value("mcpgw_worker_handle_duration_seconds_count", tool="steps") == 1
    assert m.value("mcpgw_worker_in_flight", tool="steps") == 0


def test_a_worker_without_the_metrics_extra_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if it were not installed
    with pytest.raises(MetricsUnavailable, match=r"mcp-gateway-worker\[metrics\]"):
        WorkerMetrics()


# --- the dashboard ------------------------------------------------------------------------------------------------


def dashboard_names() -> set[str]:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    assert any(
        v.get("type") == "datasource" and v.get("query") == "prometheus" for v in dashboard["templating"]["list"]
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return {name for e in exprs for name in re.findall(r"\bmcpgw_[a-z0-9_]+", e)}


async def test_every_metric_the_dashboard_queries_is_exposed(gateway: Gateway) -> None:
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        exposed = (await scrape(url.removesuffix("/mcp"), await admin_token(gateway), http)).names()
    exposed |= Scrape(WorkerMetrics().exposition().decode()).names()
    used = dashboard_names()
    assert {"mcpgw_calls_total", "mcpgw_call_result_seconds_bucket", "mcpgw_worker_handled_total"} <= used
    assert used - exposed == set()
