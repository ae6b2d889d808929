"""The store's hot path: the fold's one round trip (it decides on the state it wrote last; a view made stale by
another process costs a read and a second decision, never a wrong state), folds of several workflows in one
statement, and creates grouped into one commit under load."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp_gateway_worker.contract import Event, EventKind

from mcp_gateway.app import open_gateway
from mcp_gateway.core.ports import NewWorkflow, OutboxMessage
from mcp_gateway.core.states import Fold, Status, WorkflowState, fold
from mcp_gateway.errors import StoreError, StoreRejected
from mcp_gateway.store import PostgresStore
from mcp_gateway.store import _postgres as postgres
from mcp_gateway.store import _statements as sql
from mcp_gateway.store._known import KnownStates
from tests.conftest import Env


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The workflow ids whose state the fast path read from its row (`STATE_OF`), in order."""
    seen: list[str] = []
    fetchrow = postgres._Connection.fetchrow  # pyright: ignore[reportPrivateUsage]

    async def counting(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        if query == sql.STATE_OF:
            seen.append(args[0])
        return await fetchrow(self, query, *args, **kw)

    monkeypatch.setattr(postgres._Connection, "fetchrow", counting)  # pyright: ignore[reportPrivateUsage]
    return seen


def progress(workflow_id: str, seq: int) -> Event:
    return Event(workflow_id=workflow_id, seq=seq, kind=EventKind.PROGRESS, at=datetime.now(UTC), progress=seq + 1)


def folding(event: Event, decided: list[WorkflowState]) -> Any:
    def decide(tool: str, state: WorkflowState) -> Fold:
        decided.append(state)
        return fold(state, event)

    return decide


async def create(store: PostgresStore, trace_id: str | None = None, *, mark: bool = True) -> str:
    """A workflow of `echo` created (and, with `mark`, its command marked published)."""
    workflow_id = uuid.uuid4().hex
    workflow = NewWorkflow(
        id=workflow_id,
        tool="echo",
        tool_version="1",
        arguments={},
        caller="tester",
        request_id=None,
        trace_id=trace_id,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )
    outbox_id = await store.create(workflow, OutboxMessage(workflow_id, "mcpgw.cmd.x", workflow_id, {}, b"{}"))
    if not mark:
        return workflow_id
    assert isinstance(outbox_id, int)
    await store.mark_published([outbox_id])
    return workflow_id


async def test_the_fold_reads_no_row_it_wrote_and_a_stale_view_is_read_again(env: Env, reads: list[str]) -> None:
    async with open_gateway(env.settings()) as gateway, PostgresStore(env.database_url) as other:
        mine = gateway.store
        assert isinstance(mine, PostgresStore)
        workflow_id = await create(mine)  # created, then marked dispatched: both known here
        decided: list[WorkflowState] = []
        assert await mine.apply(progress(workflow_id, 0), folding(progress(workflow_id, 0), decided))
        assert reads == [] and decided[-1].status is Status.DISPATCHED and decided[-1].version == 1
        # Another process folds the next event: this one's view is stale now.
        assert await other.apply(progress(workflow_id, 1), folding(progress(workflow_id, 1), []))
        assert reads == [workflow_id]  # the other process had no view of it: it read the row
        reads.clear()
        decided.clear()
        assert await mine.apply(progress(workflow_id, 2), folding(progress(workflow_id, 2), decided))
        assert reads == [workflow_id]  # the conditional write failed: the row was read, and decided on again
        assert [s.last_seq for s in decided] == [0, 1]
        record = await mine.get(workflow_id)
        assert record is not None and record.state.last_seq == 2 and record.state.progress == 3
        assert record.state.version == 4  # created 0, dispatched 1, then one per event
        history = [e.kind for e in await mine.events(workflow_id)]
        assert history == ["created", "dispatched", "progress", "progress", "progress"]
        # The same event again (a redelivery): recorded once, the state unchanged.
        assert await mine.apply(progress(workflow_id, 2), folding(progress(workflow_id, 2), []))
        assert len(await mine.events(workflow_id)) == 5
        after = await mine.get(workflow_id)
        assert after is not None and after.state == record.state


def test_known_states_keep_open_workflows_only_and_the_newest() -> None:
    known = KnownStates(size=2)
    known.wrote("a", "echo", WorkflowState(status=Status.PENDING))
    known.dispatched(["a", "unknown"])
    assert known.get("a") == ("echo", WorkflowState(status=Status.DISPATCHED, version=1))
    known.dispatched(["a"])  # not pending any more: unchanged
    assert known.get("a") == ("echo", WorkflowState(status=Status.DISPATCHED, version=1))
    known.wrote("b", "echo", WorkflowState(status=Status.RUNNING, version=3))
    known.wrote("c", "echo", WorkflowState(status=Status.RUNNING, version=1))
    assert known.get("a") is None and len(known) == 2  # the oldest went
    known.wrote("b", "echo", WorkflowState(status=Status.COMPLETED, version=4))
    assert known.get("b") is None  # ended: its events are late, read them from the row


async def test_a_batch_commits_the_plain_folds_together_and_leaves_the_rest_to_fold_alone(env: Env) -> None:
    async with open_gateway(env.settings()) as gateway, PostgresStore(env.database_url) as other:
        mine = gateway.store
        assert isinstance(mine, PostgresStore)
        known, stale, seen_twice = [await create(mine) for _ in range(3)]
        unseen = await create(other)  # this process has no view of it: read in the batch's one query
        assert await other.apply(progress(stale, 0), folding(progress(stale, 0), []))  # this view is stale now
        assert await mine.apply(progress(seen_twice, 0), folding(progress(seen_twice, 0), []))
        batch = [progress(known, 0), progress(unseen, 0), progress(stale, 1), progress(seen_twice, 0)]
        done = await mine.apply_many([(e, folding(e, [])) for e in batch])
        assert [d is not None for d in done] == [True, True, False, False]  # the stale and the duplicate: alone
        for workflow_id, last_seq in ((known, 0), (unseen, 0), (stale, 0), (seen_twice, 0)):
            record = await mine.get(workflow_id)
            assert record is not None and record.state.last_seq == last_seq, workflow_id
        assert mine._known.get(stale) is None  # pyright: ignore[reportPrivateUsage]
        # What the caller does with the rest: each alone.
        assert await mine.apply(batch[2], folding(batch[2], []))
        record = await mine.get(stale)
        assert record is not None and record.state.last_seq == 1
        # A value PostgreSQL refuses fails the whole statement: nothing of the batch is written.
        bad = [progress(known, 1), progress(unseen, 1).model_copy(update={"message": "nul \x00 here"})]
        with pytest.raises(StoreRejected):
            await mine.apply_many([(e, folding(e, [])) for e in bad])
        for workflow_id in (known, unseen):
            record = await mine.get(workflow_id)
            assert record is not None and record.state.last_seq == 0


async def test_the_folder_folds_a_fetched_batch_of_several_workflows_together_each_in_order(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_gateway_worker.contract import encode

    from mcp_gateway.core.folding import EventFolder
    from mcp_gateway.core.supervisor import Supervisor
    from tests.test_durability import FakeDelivery

    async with open_gateway(env.settings()) as gateway, Supervisor() as supervisor:
        store = gateway.store
        assert isinstance(store, PostgresStore)
        subjects = gateway.bus.subjects
        folder = EventFolder(store, None, lambda: gateway.registry, supervisor, subjects)  # type: ignore[arg-type]
        together: list[list[bool]] = []
        apply_many = store.apply_many

        async def watched(items: Any) -> list[Any]:
            done = await apply_many(items)
            together.append([d is not None for d in done])
            return done

        monkeypatch.setattr(store, "apply_many", watched)
        ids = [await create(store) for _ in range(3)]
        deliveries: list[FakeDelivery] = []
        for workflow_id in ids:
            now = datetime.now(UTC)
            result = {"text": "hi", "workflow_id": workflow_id}
            done = Event(workflow_id=workflow_id, seq=1, kind=EventKind.COMPLETED, at=now, result=result)
            for event in (progress(workflow_id, 0), done):
                deliveries.append(FakeDelivery(encode(event), 1, subjects.event("diagnostics.echo", workflow_id)))
        stray = FakeDelivery(encode(progress("nope", 0)), 1, subjects.event("diagnostics.echo", "nope"))
        await folder.fold_batch([*deliveries, stray])  # type: ignore[list-item]
        # Two turns (each workflow's events in order); the unknown workflow's event is left to be folded alone.
        assert together == [[True, True, True, False], [True, True, True]]
        assert all(d.settled == ["ack"] for d in deliveries), [d.settled for d in deliveries]
        assert stray.settled == ["term"]  # no such workflow: a dead letter, as alone
        for workflow_id in ids:
            record = await store.get(workflow_id)
            assert record is not None and record.state.status is Status.COMPLETED
            assert record.state.result == {"text": "hi", "workflow_id": workflow_id} and record.state.progress == 1
            kinds = [e.kind for e in await store.events(workflow_id)]
            assert kinds == ["created", "dispatched", "progress", "completed"], kinds


async def test_creates_queued_together_are_written_in_one_statement_and_one_alone_goes_at_once(env: Env) -> None:
    async with open_gateway(env.settings()) as gateway:
        store = gateway.store
        assert isinstance(store, PostgresStore)
        group = store._creates  # pyright: ignore[reportPrivateUsage]
        before = (group.batches, group.items)
        lone = await create(store)
        assert (group.batches - before[0], group.items - before[1]) == (1, 1)  # at light load: alone, at once
        ids = await asyncio.gather(*(create(store) for _ in range(40)))
        assert group.items - before[1] == 41 and group.batches - before[0] < 41  # grouped while one was written
        for workflow_id in [lone, *ids]:
            record = await store.get(workflow_id)
            assert record is not None and record.state.status is Status.DISPATCHED  # created, then marked
            assert [e.kind for e in await store.events(workflow_id)] == ["created", "dispatched"]
        assert await store.unpublished(0, 100) == []


async def test_a_value_postgresql_refuses_fails_its_own_create_only(env: Env) -> None:
    async with open_gateway(env.settings()) as gateway:
        store = gateway.store
        assert isinstance(store, PostgresStore)

        creates = (create(store, "bad\x00" if i == 3 else None, mark=False) for i in range(8))
        results = await asyncio.gather(*creates, return_exceptions=True)
        assert [isinstance(r, StoreRejected) for r in results] == [i == 3 for i in range(8)], results
        for workflow_id in [r for r in results if isinstance(r, str)]:
            assert await store.get(workflow_id) is not None


async def test_a_create_that_fails_alone_after_a_refused_batch_fails_only_itself(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch was refused (a NUL), each is written alone, and PostgreSQL goes away for one of them: that one
    hears StoreError, those written before and after it their ids (none is told it failed when it was recorded)."""
    async with open_gateway(env.settings()) as gateway:
        store = gateway.store
        assert isinstance(store, PostgresStore)
        create_one = store._create_one  # pyright: ignore[reportPrivateUsage]

        async def flaky(workflow: NewWorkflow, command: OutboxMessage) -> int:
            if workflow.trace_id == "gone":
                raise StoreError("PostgreSQL failed: ConnectionDoesNotExistError (test)")
            return await create_one(workflow, command)

        monkeypatch.setattr(store, "_create_one", flaky)
        traces = [None, "bad\x00", None, "gone", None]
        results = await asyncio.gather(*(create(store, t, mark=False) for t in traces), return_exceptions=True)
        assert isinstance(results[1], StoreRejected) and type(results[3]) is StoreError, results
        for workflow_id in (results[0], results[2], results[4]):
            assert isinstance(workflow_id, str) and await store.get(workflow_id) is not None


async def test_a_mark_locks_its_workflows_in_id_order_as_a_fold_batch_does(env: Env) -> None:
    """The relay's mark and a batch of folds lock workflow rows in one order (by id), so neither can hold a row
    the other waits for: before, a mark locked them in its outbox order, and under load PostgreSQL found the
    deadlock after a second and failed one of the two. Here the mark waits for the first row (held elsewhere)
    and must not hold the second meanwhile."""
    async with PostgresStore(env.database_url) as store:
        while True:  # two workflows whose outbox entries come in the other order than their ids
            later, first = await create(store, mark=False), await create(store, mark=False)
            if later > first:
                break
        outbox = {r["workflow_id"]: r["id"] for r in await _rows(store, "SELECT id, workflow_id FROM outbox")}
        async with store._raw() as holder, store._raw() as prober:  # pyright: ignore[reportPrivateUsage]
            await holder.execute("BEGIN")
            await holder.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", first)
            marking = asyncio.create_task(store.mark_published([outbox[later], outbox[first]]))
            async with asyncio.timeout(10):
                while not await prober.fetchval(  # noqa: ASYNC110 - the mark is waiting for the held row
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sent AS%'"
                ):
                    await asyncio.sleep(0.02)
            await prober.execute("SET lock_timeout = '500ms'")
            await prober.execute("BEGIN")
            await prober.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", later)  # not held by the mark
            await prober.execute("ROLLBACK")
            await holder.execute("ROLLBACK")
            await marking
        for workflow_id in (first, later):
            record = await store.get(workflow_id)
            assert record is not None and record.state.status is Status.DISPATCHED


async def _rows(store: PostgresStore, query: str) -> list[Any]:
    async with store._raw() as conn:  # pyright: ignore[reportPrivateUsage]
        return list(await conn.fetch(query))
