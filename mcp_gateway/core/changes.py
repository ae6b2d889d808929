"""Workflow changes: what the store announces after each commit, and the local waiters that listen for them.

Every gateway process receives every change (the store announces each one after its commit, in commit order),
so a call waiting in one process hears about events folded in another. Each waiter has a bounded queue: when it
is full, the oldest progress is dropped; a terminal change always gets in.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from mcp_gateway.core.encoding import dumps, loads
from mcp_gateway.core.states import TERMINAL, Status, WorkflowState

__all__ = ["Change", "Waiters", "Watch"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """A workflow's state after a committed change."""

    workflow_id: str
    state: WorkflowState
    log: dict[str, Any] | None = None
    """A worker's log line that came with this change."""

    @property
    def terminal(self) -> bool:
        return self.state.status in TERMINAL

    def encode(self, max_size: int = 512 * 1024) -> bytes:
        s = self.state
        body: dict[str, Any] = {
            "id": self.workflow_id,
            "status": s.status.value,
            "version": s.version,
            "attempt": s.attempt,
            "progress": s.progress,
            "total": s.total,
            "message": s.message,
            "result": s.result,
            "error": s.error,
            "questions": s.questions,
            "content": s.content,
            "log": self.log,
        }
        data = dumps(body)
        if len(data) > max_size:
            # Too large to fan out: listeners read the full state from the store instead.
            body.update(result=None, content=None, questions=[], truncated=True)
            data = dumps(body)
        if len(data) > max_size:  # a huge message or log line: left out too (the history has them)
            body.update(message=None, log=None, error=None)
            data = dumps(body)
        return data

    @classmethod
    def decode(cls, data: bytes) -> tuple[Change, bool]:
        """The change and whether its result was left out for size."""
        b = loads(data)
        state = WorkflowState(
            status=Status(b["status"]),
            attempt=b["attempt"],
            progress=b["progress"],
            total=b["total"],
            message=b["message"],
            result=b["result"],
            error=b["error"],
            version=b["version"],
            questions=b.get("questions") or [],
            content=b.get("content"),
        )
        return cls(b["id"], state, b.get("log")), bool(b.get("truncated"))


class Watch:
    """The changes of one workflow, as one waiting call sees them, in version order."""

    def __init__(self, workflow_id: str, capacity: int) -> None:
        self.workflow_id = workflow_id
        self._queue: asyncio.Queue[tuple[Change, bool]] = asyncio.Queue(capacity)
        self._version = -1

    def offer(self, change: Change, truncated: bool) -> None:
        if change.state.version <= self._version:
            return  # older than what this watcher already saw (changes from two processes can cross)
        self._version = change.state.version
        while True:
            try:
                self._queue.put_nowait((change, truncated))
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # drop the oldest: a newer state supersedes it

    def seen(self, version: int) -> None:
        """The caller has read the state at `version` (from the store): drop what is older, queued or to come."""
        self._version = max(self._version, version)
        kept: list[tuple[Change, bool]] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item[0].state.version > version:
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)

    async def next(self) -> Change:
        """The next change (waits for it)."""
        return (await self._queue.get())[0]

    async def changes(self) -> AsyncGenerator[tuple[Change, bool]]:
        while True:
            item = await self._queue.get()
            yield item
            if item[0].terminal:
                return


class Waiters:
    """The local waiting calls, by workflow id."""

    def __init__(self, capacity: int = 32, remembered: int = 10_000) -> None:
        self._capacity = capacity
        self._watches: dict[str, set[Watch]] = {}
        self._listeners: list[Callable[[Change], None]] = []
        self._versions: OrderedDict[str, int] = OrderedDict()
        """The newest version delivered of the workflows changed lately: a change may come twice (from this
        process's store at once, then from PostgreSQL's notification), and an older one after a newer."""
        self._remembered = remembered

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Hear every change of every workflow (e.g. to notify resource subscribers); must not block."""
        self._listeners.append(listener)

    @contextmanager
    def watch(self, workflow_id: str) -> Generator[Watch]:
        """Listen for a workflow's changes; register *before* the work can start, so nothing is missed."""
        w = Watch(workflow_id, self._capacity)
        self._watches.setdefault(workflow_id, set()).add(w)
        try:
            yield w
        finally:
            group = self._watches.get(workflow_id)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._watches[workflow_id]

    def deliver(self, change: Change, truncated: bool = False) -> None:
        seen = self._versions.get(change.workflow_id)
        if seen is not None and change.state.version <= seen:
            return
        self._versions[change.workflow_id] = change.state.version
        self._versions.move_to_end(change.workflow_id)
        if len(self._versions) > self._remembered:
            self._versions.popitem(last=False)
        for w in self._watches.get(change.workflow_id, ()):
            w.offer(change, truncated)
        for listener in self._listeners:
            listener(change)

    def on_message(self, data: bytes) -> None:
        """Callback for the store's change subscription."""
        try:
            change, truncated = Change.decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("changes.undecodable", error=str(exc))
            return
        self.deliver(change, truncated)

    def __len__(self) -> int:
        return sum(len(g) for g in self._watches.values())
