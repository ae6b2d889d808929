"""Whether any worker listens for a tool's commands: so that a call to a tool nobody serves says so at once,
instead of waiting out its timeout in silence. Answered from a short-lived view of the command stream's
consumers (one JetStream request every `ttl` seconds at most, none on the hot path while workers are there)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from mcp_gateway_worker.contract import Subjects, subject_matches

from mcp_gateway.core.ports import Bus
from mcp_gateway.errors import BusError
from mcp_gateway.registry import Tool

__all__ = ["WorkerPresence"]

RECONNECT_GRACE = 5.0
"""Seconds after (re)connecting to NATS during which no tool is said to lack a worker (consumers look idle until
their workers pull again)."""
MAX_REMEMBERED = 4096
"""Subjects whose answer is kept between refreshes (one per tool in practice)."""

log = structlog.get_logger(__name__)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class WorkerPresence:
    def __init__(self, bus: Bus, subjects: Subjects, *, ttl: float = 2.0) -> None:
        self._bus = bus
        self._subjects = subjects
        self._ttl = ttl
        self._patterns: list[str] = []
        self._at = float("-inf")
        self._answers: dict[str, bool] = {}
        """Subject -> whether a pattern of `_patterns` matches it (the same patterns until the next refresh)."""
        self._asking: asyncio.Future[None] | None = None
        """The bus question in flight, shared by the callers waiting for it."""

    async def _refresh(self) -> None:
        """Ask the bus once for every caller that finds the view stale at the same moment (under load, every
        concurrent call would ask JetStream for the whole consumer list at each expiry)."""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._ask())
            self._asking.add_done_callback(_retrieved)  # all its callers may have been cancelled meanwhile
        await asyncio.shield(self._asking)

    async def _ask(self) -> None:
        patterns = await self._bus.listened_subjects()
        if patterns != self._patterns:
            self._patterns, self._answers = patterns, {}
        self._at = time.monotonic()

    def _matches(self, subject: str) -> bool:
        answer = self._answers.get(subject)
        if answer is None:
            if len(self._answers) >= MAX_REMEMBERED:
                self._answers.clear()
            answer = self._answers[subject] = any(subject_matches(p, subject) for p in self._patterns)
        return answer

    async def served(self, tool: Tool) -> bool:
        """Whether some worker reads the tool's commands now: a positive answer is kept `ttl` seconds, a negative
        one is asked again each time (a worker may just have started). When the bus cannot say, assume so (a
        monitoring failure must not refuse work)."""
        subject = self._subjects.command(tool.config.subject)
        if time.monotonic() - self._at < self._ttl and self._matches(subject):
            return True
        if self._bus.reconnected_for < RECONNECT_GRACE:  # workers re-issue their pulls after a NATS restart
            return True
        try:
            await self._refresh()
        except BusError as exc:
            log.warning("presence.unknown", error=str(exc))
            return True
        return self._matches(subject)

    async def unserved(self, tools: Iterable[Tool]) -> list[Tool]:
        """The tools no worker listens for now (asks the bus once)."""
        await self._refresh()
        return [t for t in tools if not self._matches(self._subjects.command(t.config.subject))]
