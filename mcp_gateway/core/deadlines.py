"""The deadline keeper: every `interval` seconds, workflows past their deadline end as timed out.

Any gateway process may run it; the store decides each ending once, under the workflow's lock.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import structlog

from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.core.workflows import Workflows
from mcp_gateway.errors import BusError, StoreError

__all__ = ["DeadlineKeeper"]

log = structlog.get_logger(__name__)


class DeadlineKeeper:
    def __init__(self, workflows: Workflows, supervisor: Supervisor, *, interval: float = 1.0) -> None:
        self._workflows = workflows
        self._supervisor = supervisor
        self._interval = interval

    async def __aenter__(self) -> DeadlineKeeper:
        self._supervisor.start("deadlines", self._run)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._supervisor.stop("deadlines")

    async def _run(self) -> None:
        while True:
            try:
                await self._workflows.expire_overdue()
            except (StoreError, BusError) as exc:
                log.warning("deadlines.failed", error=str(exc))
            await asyncio.sleep(self._interval)
