"""Whether any worker listens for a tool's commands: so that a call to a tool nobody serves says so at once,
instead of waiting out its timeout in silence. Answered from a short-lived view of the command stream's
consumers (one JetStream request every `ttl` seconds at most, none on the hot path while workers are there)."""

from __future__ import annotations

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

log = structlog.get_logger(__name__)


class WorkerPresence:
    def __init__(self, bus: Bus, subjects: Subjects, *, ttl: float = 2.0) -> None:
        self._bus = bus
        self._subjects = subjects
        self._ttl = ttl
        self._patterns: list[str] = []
        self._at = float("-inf")

    async def _refresh(self) -> None:
        self._patterns = await self._bus.listened_subjects()
        self._at = time.monotonic()

    def _matches(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self._patterns)

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
