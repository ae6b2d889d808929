"""`WorkflowStore` on PostgreSQL (SQLAlchemy 2 async, asyncpg), with few round trips per call.

The hot path costs one autocommit statement to record a workflow with its outbox entry, one (batched) to mark
entries published, and one short transaction (lock, record + update, commit) per worker event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from mcp_gateway_worker.contract import Event
from sqlalchemy import RowMapping, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mcp_gateway.core.changes import Change
from mcp_gateway.core.encoding import dumps_text, loads
from mcp_gateway.core.ports import (
    HEAD_BYTES,
    Applied,
    Counts,
    DeadLetter,
    Decide,
    EventRecord,
    ExistingWorkflow,
    NewWorkflow,
    OutboxMessage,
    Reopening,
    WorkflowFilter,
    WorkflowRecord,
)
from mcp_gateway.core.states import Fold, Status, WorkflowState, answering, ending, held_command
from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.errors import StoreError, StoreRejected
from mcp_gateway.store import _statements as sql
from mcp_gateway.store._group import GroupCommit
from mcp_gateway.store._known import KnownStates

__all__ = ["PostgresStore", "asyncpg_url"]

log = structlog.get_logger(__name__)

_FAILURES = (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
"""What talking to PostgreSQL may raise: each becomes a StoreError (a pool time-out and a lost server too)."""


def store_failure(exc: BaseException) -> StoreError:
    """The StoreError for a failure, saying what PostgreSQL said but never the SQL or its parameters (they may
    carry a caller's secrets); StoreRejected when PostgreSQL refused the data itself (SQLSTATE classes 22, 23)."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlstate", None)
    first_line = (str(orig).strip().splitlines() or [""])[0][:300]
    message = f"PostgreSQL failed: {type(orig).__name__}" + (f": {first_line}" if first_line else "")
    if code:
        message += f" (SQLSTATE {code})"
    return (StoreRejected if code and str(code)[:2] in ("22", "23") else StoreError)(message)


POOL_TIMEOUT = 10.0
"""Seconds to wait for a connection of asyncpg's pool (then a StoreError, as for SQLAlchemy's)."""


class _Connection(asyncpg.Connection):
    """A pooled connection released without asyncpg's reset statement (`pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`: a round trip after every use). The pool's statements set no session state, take no
    advisory locks, open no cursors and listen to nothing (LISTEN has its own connection); an open transaction is
    still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""


async def _set_codecs(conn: asyncpg.Connection) -> None:
    """JSON and JSONB as Python values, as SQLAlchemy's JSONB type gives them."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps_text, decoder=loads, schema="pg_catalog")


def asyncpg_url(url: str) -> str:
    """`postgresql://...` (libpq form, as users write it) to SQLAlchemy's asyncpg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise StoreError(f"database URL {url!r} must start with postgresql:// (a PostgreSQL server)")


def _state(m: RowMapping) -> WorkflowState:
    return WorkflowState(
        status=Status(m["status"]),
        attempt=m["attempt"],
        last_seq=m["last_seq"],
        progress=m["progress"],
        total=m["progress_total"],
        message=m["progress_message"],
        result=m["result"],
        error=m["error"],
        version=m["version"],
        questions=[q for q in m["questions"] or [] if isinstance(q, dict)],
        answers=m["answers"] or {},
        content=m["content"],
    )


def _outbox(r: Any) -> OutboxMessage:
    return OutboxMessage(
        id=r.id,
        workflow_id=r.workflow_id,
        subject=r.subject,
        msg_id=r.msg_id,
        headers=dict(r.headers),
        payload=bytes(r.payload),
    )


def _record(m: RowMapping) -> WorkflowRecord:
    state = _state(m)
    return WorkflowRecord(
        id=m["id"],
        tool=m["tool"],
        tool_version=m["tool_version"],
        arguments=m["arguments"],
        caller=m["caller"],
        request_id=m["request_id"],
        trace_id=m["trace_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        deadline=m["deadline"],
        state=state,
    )


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    def set_event(_connection: object) -> None:
        event.set()

    return set_event


def _state_columns(state: WorkflowState) -> dict[str, Any]:
    """A state as the `workflows` row's columns (named as the statements' parameters)."""
    return {
        "status": state.status.value,
        "attempt": state.attempt,
        "last_seq": state.last_seq,
        "progress": state.progress,
        "total": state.total,
        "message": state.message,
        "result": state.result,
        "error": state.error,
        "version": state.version,
        "questions": state.questions,
        "answers": state.answers,
        "content": state.content,
    }


def _event_data(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True, exclude={"v", "workflow_id", "kind", "at"})


class PostgresStore:
    """The one `WorkflowStore`. Use as an async context manager: it owns the connection pool."""

    def __init__(self, url: str, *, pool_size: int = 20, max_overflow: int = 20) -> None:
        self._url = asyncpg_url(url)
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._engine: AsyncEngine | None = None
        self._pool: asyncpg.Pool | None = None
        """asyncpg's own pool, for the hot path's statements (prepared once per connection); SQLAlchemy's
        engine serves the rest."""
        self._creates = GroupCommit(self._create_many)
        """Calls' creates: those that queue while one is written go together in the next statement."""
        self._known = KnownStates()
        """The states this process wrote last: the fold decides on them without reading the row first."""
        self._supervisor: Supervisor | None = None
        self._on_change: Callable[[bytes], None] | None = None
        """This process's subscriber: told of each change it commits at once (PostgreSQL's notification of it,
        which every process gets, comes later; waiters drop the second)."""

    async def __aenter__(self) -> PostgresStore:
        self._engine = create_async_engine(
            # No pre-ping: it costs a BEGIN/ROLLBACK round trip per checkout (a tenth of a call's time here); a
            # dropped connection fails its statement instead, which the callers retry or report.
            self._url,
            pool_size=self._pool_size,
            max_overflow=self._max_overflow,
            pool_recycle=600,
        )
        try:
            async with self._autocommit() as conn:
                await conn.execute(text("SELECT 1 FROM workflows LIMIT 0"))
            self._pool = await asyncpg.create_pool(
                self._url.replace("postgresql+asyncpg://", "postgresql://", 1),
                min_size=1,
                max_size=self._pool_size,
                init=_set_codecs,
                connection_class=_Connection,
            )
        except BaseException:
            await self._engine.dispose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._creates.aclose()
        if self._supervisor is not None:
            await self._supervisor.stop("store.listen")
            self._supervisor = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open (use it inside 'async with')")
        return self._engine

    @asynccontextmanager
    async def _autocommit(self) -> AsyncGenerator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        except _FAILURES as exc:
            raise store_failure(exc) from exc

    @asynccontextmanager
    async def _raw(self) -> AsyncGenerator[PoolConnectionProxy]:
        """A connection of asyncpg's pool, in autocommit (each statement its own transaction)."""
        if self._pool is None:
            raise StoreError("the store is not open (use it inside 'async with')")
        try:
            async with self._pool.acquire(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except _FAILURES as exc:
            raise store_failure(exc) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncGenerator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except _FAILURES as exc:
            raise store_failure(exc) from exc

    async def subscribe_changes(self, callback: Callable[[bytes], None], supervisor: Supervisor) -> None:
        """Call `callback` with every workflow change committed by any gateway process, in commit order.

        One dedicated connection LISTENs, in a loop under the supervisor; when it is lost, it reconnects
        (waiters re-read the store at their timeout, so a change missed meanwhile delays a reply, never loses
        it)."""
        ready = asyncio.Event()

        async def listen() -> None:
            await self._listen(callback, ready)

        supervisor.start("store.listen", listen)
        self._supervisor = supervisor
        self._on_change = callback
        await ready.wait()

    async def _listen(self, callback: Callable[[bytes], None], ready: asyncio.Event) -> None:
        dsn = self._url.replace("postgresql+asyncpg://", "postgresql://", 1)

        def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
            callback(payload.encode())

        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("store.listen_failed", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            try:
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(sql.CHANGES_CHANNEL, on_notify)
                ready.set()
                await lost.wait()
                log.warning("store.listen_lost")
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    async def create(self, workflow: NewWorkflow, command: OutboxMessage) -> int | ExistingWorkflow:
        if workflow.idempotency_key is None:  # the common case: one statement (with those queued beside it)
            return await self._creates.submit((workflow, command))
        key = {"caller": workflow.caller, "tool": workflow.tool, "key": workflow.idempotency_key}
        async with self._transaction() as conn:
            await conn.execute(sql.RELEASE_KEY, {**key, "window": workflow.idempotency_window})
            outbox_id = (await conn.execute(sql.CREATE, self._create_values(workflow, command))).scalar_one_or_none()
            if outbox_id is not None:
                return int(outbox_id)
            found = (await conn.execute(sql.BY_KEY, key)).mappings().one()
        return ExistingWorkflow(found["id"], found["arguments_hash"])

    async def _create_many(self, creates: Sequence[tuple[NewWorkflow, OutboxMessage]]) -> list[int | Exception]:
        """Workflows without an idempotency key and their commands: alone, or several in one statement. A value
        PostgreSQL refuses fails the whole statement: then each is written alone, so that only its own fails."""
        if len(creates) > 1:
            rows = [
                {
                    "ord": ord_,
                    "id": workflow.id,
                    "tool": workflow.tool,
                    "tool_version": workflow.tool_version,
                    "arguments": workflow.arguments,
                    "status": workflow.status.value,
                    "caller": workflow.caller,
                    "request_id": workflow.request_id,
                    "trace_id": workflow.trace_id,
                    "deadline": workflow.deadline.isoformat(),
                    "questions": [workflow.approval] if workflow.approval else [],
                    "event_data": {"tool": workflow.tool, "version": workflow.tool_version},
                    "subject": command.subject,
                    "msg_id": command.msg_id,
                    "headers": command.headers,
                    "held": workflow.approval is not None,
                }
                for ord_, (workflow, command) in enumerate(creates, start=1)
            ]
            try:
                async with self._raw() as conn:
                    written = await conn.fetch(sql.CREATE_MANY, rows, [command.payload for _, command in creates])
            except StoreRejected:
                return [await self._create_alone(workflow, command) for workflow, command in creates]
            ids = {r["workflow_id"]: int(r["id"]) for r in written}
            for workflow, _ in creates:
                self._remember_created(workflow)
            return [ids[workflow.id] for workflow, _ in creates]
        return [await self._create_one(*creates[0])]

    async def _create_alone(self, workflow: NewWorkflow, command: OutboxMessage) -> int | Exception:
        """One create of a batch PostgreSQL refused, alone: its own outcome, so that a failure of one (refused,
        or the server gone meanwhile) is never told to the others, some of which may be written already."""
        try:
            return await self._create_one(workflow, command)
        except StoreError as exc:
            return exc

    def _remember_created(self, workflow: NewWorkflow) -> None:
        if workflow.approval is None:  # the row as the statement wrote it (the columns' defaults)
            self._known.wrote(workflow.id, workflow.tool, WorkflowState(status=workflow.status))

    async def _create_one(self, workflow: NewWorkflow, command: OutboxMessage) -> int:
        async with self._raw() as conn:
            outbox_id = await conn.fetchval(
                sql.CREATE_RAW,
                workflow.id,
                workflow.tool,
                workflow.tool_version,
                workflow.arguments,
                workflow.status.value,
                workflow.caller,
                workflow.request_id,
                workflow.trace_id,
                workflow.deadline,
                [workflow.approval] if workflow.approval else [],
                {"tool": workflow.tool, "version": workflow.tool_version},
                command.subject,
                command.msg_id,
                command.headers,
                command.payload,
                workflow.approval is not None,
            )
        self._remember_created(workflow)
        return int(outbox_id)

    @staticmethod
    def _create_values(workflow: NewWorkflow, command: OutboxMessage) -> dict[str, Any]:
        return {
            "id": workflow.id,
            "tool": workflow.tool,
            "tool_version": workflow.tool_version,
            "arguments": workflow.arguments,
            "caller": workflow.caller,
            "request_id": workflow.request_id,
            "trace_id": workflow.trace_id,
            "deadline": workflow.deadline,
            "status": workflow.status.value,
            "questions": [workflow.approval] if workflow.approval else [],
            "held": workflow.approval is not None,
            "event_data": {"tool": workflow.tool, "version": workflow.tool_version},
            "subject": command.subject,
            "msg_id": command.msg_id,
            "headers": command.headers,
            "payload": command.payload,
            "idempotency_key": workflow.idempotency_key,
            "arguments_hash": workflow.arguments_hash,
        }

    async def mark_published(self, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            async with self._raw() as conn:
                marked = await conn.fetch(sql.MARK_PUBLISHED, sorted(outbox_ids))  # two marks lock in one order
            self._known.dispatched([r["workflow_id"] for r in marked if r["status"] == Status.DISPATCHED.value])

    async def unpublished(self, older_than_seconds: float, limit: int) -> list[OutboxMessage]:
        async with self._autocommit() as conn:
            rows = await conn.execute(sql.UNPUBLISHED, {"age": older_than_seconds, "limit": limit})
            return [_outbox(r) for r in rows]

    async def apply(self, event: Event, decide: Decide) -> Applied | None:
        return await self._transition(
            event.workflow_id, event.key, event.kind.value, _event_data(event), event.at, decide
        )

    async def apply_many(self, items: Sequence[tuple[Event, Decide]]) -> list[Applied | None]:
        """The plain folds of a batch (a state change of a workflow at the version decided on: no duplicate,
        no event held back, no held command released) in one statement; None for the rest, which the caller folds
        alone. States this process wrote last are decided on as they are; the others are read in one query."""
        done: list[Applied | None] = [None] * len(items)
        ids = [event.workflow_id for event, _ in items]
        if len(items) < 2 or len(set(ids)) != len(ids):
            return done
        views: dict[str, tuple[str, WorkflowState]] = {}
        for workflow_id in ids:
            known = self._known.get(workflow_id)
            if known is not None:
                views[workflow_id] = known
        batch: list[tuple[int, str, Fold, str]] = []
        rows: list[dict[str, Any]] = []
        async with self._raw() as conn:
            unread = [workflow_id for workflow_id in ids if workflow_id not in views]
            if unread:
                for m in await conn.fetch(sql.STATES_OF, unread):
                    views[m["id"]] = (m["tool"], _state(m))
            for index, (event, decide) in enumerate(items):
                view = views.get(event.workflow_id)
                if view is None:
                    continue
                tool, before = view
                decision = decide(tool, before)
                new = decision.state
                if decision.defer or not decision.changed or held_command(before.status, new.status) is not None:
                    continue
                change = Change(event.workflow_id, new, decision.log).encode(sql.NOTIFY_LIMIT).decode()
                batch.append((index, tool, decision, change))
                rows.append(
                    {
                        "id": event.workflow_id,
                        "at_version": before.version,
                        "key": event.key,
                        "kind": event.kind.value,
                        "data": _event_data(event),
                        "note": decision.note,
                        "at": event.at.isoformat(),
                        "change": change,
                        **_state_columns(new),
                    }
                )
            if not batch:
                return done
            written = {r["id"] for r in await conn.fetch(sql.FOLD_MANY, rows, sql.CHANGES_CHANNEL)}
        for index, tool, decision, change in batch:
            workflow_id = ids[index]
            if workflow_id not in written:  # changed meanwhile, or a duplicate: the caller folds it alone
                self._known.forget(workflow_id)
                continue
            self._known.wrote(workflow_id, tool, decision.state)
            self._tell([change.encode()])
            done[index] = Applied(workflow_id, tool, decision, duplicate=False)
        return done

    async def end(self, workflow_id: str, status: Status, code: str, message: str, by: str) -> Applied | None:
        h = ending(status, code, message, by)
        return await self._transition(workflow_id, h.key, h.kind, h.data, datetime.now(UTC), h.decide)

    async def answer(
        self, workflow_id: str, request_id: str, action: str, content: dict[str, Any] | None, by: str
    ) -> Applied | None:
        h = answering(request_id, action, content, by)
        return await self._transition(workflow_id, h.key, h.kind, h.data, datetime.now(UTC), h.decide)

    async def dead_letter(self, letter: DeadLetter) -> int:
        values = {
            "source": letter.source,
            "subject": letter.subject,
            "workflow_id": letter.workflow_id,
            "reason": letter.reason.replace("\x00", "\\0")[:2000],
            "headers": {k.replace("\x00", ""): v.replace("\x00", "\\0") for k, v in letter.headers.items()},
            "head": letter.head[:HEAD_BYTES],
            "size": letter.size,
            "delivered": letter.delivered,
        }
        async with self._autocommit() as conn:
            return int((await conn.execute(sql.DEAD_LETTER, values)).scalar_one())

    async def dead_letters(self, limit: int = 50, letter_id: int | None = None) -> list[DeadLetter]:
        async with self._autocommit() as conn:
            rows = (await conn.execute(sql.DEAD_LETTERS, {"limit": limit, "letter": letter_id})).mappings().all()
        return [
            DeadLetter(
                source=r["source"],
                subject=r["subject"],
                reason=r["reason"],
                head=bytes(r["head"]),
                size=r["size"],
                headers=dict(r["headers"]),
                workflow_id=r["workflow_id"],
                delivered=r["delivered"],
                id=r["id"],
                at=r["at"],
            )
            for r in rows
        ]

    async def overdue(self, limit: int = 100) -> list[str]:
        async with self._autocommit() as conn:
            rows = await conn.execute(sql.OVERDUE, {"limit": limit})
            return [r.id for r in rows]

    async def _transition(
        self, workflow_id: str, key: str, kind: str, data: dict[str, Any], at: datetime, decide: Decide
    ) -> Applied | None:
        """Let `decide` fold the happening into the workflow's state, record it once, save and announce: in one
        statement when the state read stays current (`sql.FOLD_AT_VERSION`), else under the row lock."""
        fast = await self._transition_at_version(workflow_id, key, kind, data, at, decide)
        if fast is not None:
            return fast
        announced: list[bytes] = []
        async with self._transaction() as conn:
            applied = await self._transition_in(conn, workflow_id, key, kind, data, at, decide, announced)
        self._tell(announced)
        return applied

    async def _transition_at_version(
        self, workflow_id: str, key: str, kind: str, data: dict[str, Any], at: datetime, decide: Decide
    ) -> Applied | None:
        """The common case in one round trip and one commit: decide on the state this process wrote last (else
        read it first), write if the row is still at that version. A state known here that turns out stale is
        read and decided once more; one that would hold the event back is checked against the row first. None
        when it does not apply (an unknown workflow, no change, a held command released or dropped, a duplicate,
        another change in between): the locked path decides then."""
        async with self._raw() as conn:
            known = self._known.get(workflow_id)
            while True:
                if known is not None:
                    tool, before = known
                else:
                    m = await conn.fetchrow(sql.STATE_OF, workflow_id)
                    if m is None:
                        return None
                    tool, before = m["tool"], _state(m)
                decision = decide(tool, before)
                if decision.defer:
                    if known is not None:  # a view that may be stale must not hold an event back
                        known = None
                        continue
                    return Applied(workflow_id, tool, decision, duplicate=False)
                new = decision.state
                if not decision.changed or held_command(before.status, new.status) is not None:
                    return None
                change = Change(workflow_id, new, decision.log).encode(sql.NOTIFY_LIMIT).decode()
                written = await conn.fetch(
                    sql.FOLD_AT_VERSION,
                    workflow_id,
                    before.version,
                    key,
                    kind,
                    new.status.value,
                    data,
                    decision.note,
                    at,
                    new.attempt,
                    new.last_seq,
                    new.progress,
                    new.total,
                    new.message,
                    new.result,
                    new.error,
                    new.version,
                    new.questions,
                    new.answers,
                    new.content,
                    sql.CHANGES_CHANNEL,
                    change,
                )
                if written:
                    break
                self._known.forget(workflow_id)
                if known is None:
                    return None
                known = None  # stale: read the row and decide again
        self._known.wrote(workflow_id, tool, new)
        self._tell([change.encode()])
        return Applied(workflow_id, tool, decision, duplicate=False)

    def _tell(self, changes: list[bytes]) -> None:
        """This process's subscriber hears of changes it just committed, without waiting for PostgreSQL. The change
        is committed whatever the subscriber does: a subscriber that fails is logged, never the writer's failure
        (PostgreSQL's notification of the change still reaches it)."""
        if self._on_change is not None:
            for change in changes:
                try:
                    self._on_change(change)
                except Exception:
                    log.exception("store.local_change_failed")

    async def _transition_in(
        self,
        conn: AsyncConnection,
        workflow_id: str,
        key: str,
        kind: str,
        data: dict[str, Any],
        at: datetime,
        decide: Decide,
        announced: list[bytes] | None = None,
    ) -> Applied | None:
        self._known.forget(workflow_id)  # the locked path writes a state the fast path's view would not know
        m = (await conn.execute(sql.LOCK, {"id": workflow_id})).mappings().first()
        if m is None:
            return None
        decision = decide(m["tool"], _state(m))
        if decision.defer:
            return Applied(workflow_id, m["tool"], decision, duplicate=False)
        new = decision.state
        recorded = await conn.execute(
            sql.RECORD_EVENT,
            {
                "id": workflow_id,
                "key": key,
                "kind": kind,
                "status": new.status.value if decision.changed else None,
                "data": data,
                "note": decision.note,
                "at": at,
            },
        )
        if recorded.first() is None:
            return Applied(workflow_id, m["tool"], decision, duplicate=True)
        if decision.changed:
            change = Change(workflow_id, new, decision.log).encode(sql.NOTIFY_LIMIT).decode()
            if announced is not None:
                announced.append(change.encode())
            await conn.execute(
                sql.UPDATE, {"id": workflow_id, **_state_columns(new), "channel": sql.CHANGES_CHANNEL, "change": change}
            )
        released: list[OutboxMessage] = []
        held = held_command(Status(m["status"]), new.status) if decision.changed else None
        if held == "release":
            released = [_outbox(r) for r in await conn.execute(sql.RELEASE, {"id": workflow_id})]
        elif held == "drop":
            await conn.execute(sql.DROP_HELD, {"id": workflow_id})
        return Applied(workflow_id, m["tool"], decision, duplicate=False, released=released)

    async def reopen(self, reopening: Reopening, decide: Decide) -> tuple[Applied, int | None] | None:
        """Run a workflow again, in one transaction: `decide` (core's `reopen`) under the row lock, refused when
        the workflow changed since `reopening.version` was read; then the new deadline and arguments, and the
        command in the outbox. Returns the decision and the outbox id (None when refused)."""
        expected = reopening.version

        def guarded(tool: str, state: WorkflowState) -> Fold:
            if state.version != expected:
                return Fold(state, False, f"retry refused: the workflow changed meanwhile (version {state.version})")
            return decide(tool, state)

        key = f"retried.{reopening.attempt}"
        data = {"by": reopening.by, "attempt": reopening.attempt, "arguments_changed": reopening.arguments_changed}
        announced: list[bytes] = []
        async with self._transaction() as conn:
            applied = await self._transition_in(
                conn, reopening.workflow_id, key, "retried", data, datetime.now(UTC), guarded, announced
            )
            if applied is None or not applied.fold.changed or applied.duplicate:
                return (applied, None) if applied is not None else None
            command = reopening.command
            outbox_id = (
                await conn.execute(
                    sql.REOPEN,
                    {
                        "id": reopening.workflow_id,
                        "deadline": reopening.deadline,
                        "arguments": reopening.arguments,
                        "subject": command.subject,
                        "msg_id": command.msg_id,
                        "headers": command.headers,
                        "payload": command.payload,
                    },
                )
            ).scalar_one()
        self._tell(announced)
        return applied, int(outbox_id)

    async def get(self, workflow_id: str) -> WorkflowRecord | None:
        async with self._autocommit() as conn:
            query = text(f"SELECT {sql.COLUMNS} FROM workflows WHERE id = :id")
            row = (await conn.execute(query, {"id": workflow_id})).mappings().first()
            return _record(row) if row is not None else None

    async def events(self, workflow_id: str, after_id: int = 0) -> list[EventRecord]:
        async with self._autocommit() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id, workflow_id, event_key, kind, status, data, note, at FROM workflow_events "
                    "WHERE workflow_id = :id AND id > :after ORDER BY id"
                ),
                {"id": workflow_id, "after": after_id},
            )
            return [
                EventRecord(r.id, r.workflow_id, r.event_key, r.kind, r.status, dict(r.data), r.note, r.at)
                for r in rows
            ]

    async def list(
        self, *, status: Status | None = None, caller: str | None = None, limit: int = 50
    ) -> list[WorkflowRecord]:
        return await self.find(WorkflowFilter(status=status, caller=caller, limit=limit))

    async def find(self, query: WorkflowFilter) -> list[WorkflowRecord]:
        values: dict[str, Any] = {
            "status": query.status.value if query.status else None,
            "tool": query.tool,
            "caller": query.caller,
            "since": query.since,
            "limit": query.limit,
        }
        conditions = [f"{column} = :{column}" for column in ("status", "tool", "caller") if values[column] is not None]
        if query.since is not None:
            conditions.append("created_at >= :since")
        if query.before is not None:
            conditions.append("(created_at, id) < (:before_at, :before_id)")
            values["before_at"], values["before_id"] = query.before
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        statement = f"SELECT {sql.COLUMNS} FROM workflows {where} ORDER BY created_at DESC, id DESC LIMIT :limit"
        async with self._autocommit() as conn:
            rows = await conn.execute(text(statement), values)
            return [_record(r) for r in rows.mappings()]

    async def counts(self, *, open_only: bool = False, since: datetime | None = None) -> Counts:
        async with self._autocommit() as conn:
            rows = await conn.execute(sql.COUNTS, {"open_only": open_only, "since": since})
            by = {(r.tool, Status(r.status)): int(r.n) for r in rows}
            outbox = (await conn.execute(sql.OUTBOX_DEPTH)).one()
            letters = int((await conn.execute(text("SELECT count(*) FROM dead_letters"))).scalar_one())
        oldest = float(outbox.oldest) if outbox.oldest is not None else None
        return Counts(by, int(outbox.n), oldest, letters)
