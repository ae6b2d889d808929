"""No background loop ends silently: the supervisor logs, counts and restarts with backoff, and readiness names a
loop that keeps failing."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from structlog.testing import capture_logs

from mcp_gateway.app import Gateway
from mcp_gateway.core.supervisor import Supervisor


async def test_a_loop_that_raises_is_logged_counted_and_restarted_with_growing_backoff() -> None:
    runs: list[float] = []
    loop_time = asyncio.get_running_loop().time

    async def flaky() -> None:
        runs.append(loop_time())
        if len(runs) < 4:
            raise TimeoutError("pool exhausted")  # what ended a bare task without a word before
        await asyncio.Event().wait()

    with capture_logs() as logs:
        async with Supervisor(initial_backoff=0.01, multiplier=3, unhealthy_after=3) as supervisor:
            supervisor.start("flaky", flaky)
            async with asyncio.timeout(5):
                while len(runs) < 4:  # noqa: ASYNC110 - the supervisor restarts on its own schedule
                    await asyncio.sleep(0.005)
            health = supervisor.health()["flaky"]
            assert health.restarts == 3 and health.running
            assert health.last_error == "TimeoutError: pool exhausted"
            assert supervisor.failing() == ["flaky"]  # three in a row, not yet stable again
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.03 and gaps[2] >= 0.09  # 0.01, x3, x3
    failed = [e for e in logs if e["event"] == "supervisor.loop_failed"]
    assert len(failed) == 3 and all(e["loop"] == "flaky" and e.get("exc_info") for e in failed)


async def test_a_loop_that_returns_on_its_own_is_restarted_too() -> None:
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    with capture_logs() as logs:
        async with Supervisor(initial_backoff=0.001, max_backoff=0.001) as supervisor:
            supervisor.start("quits", quits)
            async with asyncio.timeout(5):
                while runs < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
    assert any(e["event"] == "supervisor.loop_ended" and e["loop"] == "quits" for e in logs)


async def test_a_failing_loop_turns_readiness_down_naming_it(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: object, **__: object) -> list[str]:
        raise TimeoutError("QueuePool limit reached")

    assert all(v == "ok" for v in (await gateway.ready()).values())
    monkeypatch.setattr(gateway.workflows, "expire_overdue", broken)
    async with asyncio.timeout(10):
        while "deadlines" not in gateway.supervisor.failing():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    checks = await gateway.ready()
    assert checks["loop:deadlines"].startswith("failing: TimeoutError: QueuePool limit reached")
    assert checks["loop:fold"] == "ok" and checks["postgres"] == "ok"


async def test_readiness_names_a_database_behind_this_gateways_migrations(gateway: Gateway) -> None:
    from sqlalchemy import text

    from mcp_gateway.store import migrations_head

    head = migrations_head()
    assert (await gateway.ready())["migrations"] == "ok"
    async with gateway.store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    assert (await gateway.ready())["migrations"] == f"behind: the database is at 0001, this gateway needs {head}"
    async with gateway.store.engine.begin() as conn:  # a newer gateway migrated it: still ready (rolling upgrade)
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert (await gateway.ready())["migrations"] == "ok"


async def test_readiness_says_when_the_fold_lags_behind_its_events(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_gateway.bus import ConsumerState

    assert (await gateway.ready())["events_backlog"] == "ok"

    async def lagging(max_wait: float = 2.0) -> ConsumerState:
        return ConsumerState(pending=20_000, ack_pending=0, redelivered=0, waiting=0)

    monkeypatch.setattr(gateway.bus, "events_consumer", lagging)
    expected = "lagging: 20000 events wait for the fold (more than ready_max_event_backlog 10000)"
    assert (await gateway.ready())["events_backlog"] == expected
    monkeypatch.setattr(gateway, "settings", gateway.settings.model_copy(update={"ready_max_event_backlog": 50_000}))
    assert (await gateway.ready())["events_backlog"] == "ok"


async def test_a_failing_local_subscriber_never_fails_a_committed_change(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store tells this process's waiters of its own commits at once; if that raises, the change stands and the
    call still hears of it (by PostgreSQL's notification)."""
    from structlog.testing import capture_logs

    from mcp_gateway.core.service import Caller, OutcomeKind

    def broken(change: bytes) -> None:
        raise RuntimeError("a listener bug")

    monkeypatch.setattr(gateway.store, "_on_change", broken)
    with capture_logs() as logs:
        outcome = await gateway.service.call("steps", {"count": 2}, caller=Caller(subject="tester"))
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.result == {"count": 2}
    assert any(e["event"] == "store.local_change_failed" for e in logs)
