"""The deadline keeper: every `interval` seconds, workflows past their deadline end as timed out.

Any gateway process may run it; the store decides each ending once, under the workflow's lock.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import structlog

from mcp_gateway.core._background import cancel_and_wait
from mcp_gateway.core.workflows import Workflows
from mcp_gateway.errors import StoreError

__all__ = ["DeadlineKeeper"]

log = structlog.get_logger(__name__)


class DeadlineKeeper:
    def __init__(self, workflows: Workflows, *, interval: float = 1.0) -> None:
        self._workflows = workflows
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeadlineKeeper:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self._workflows.expire_overdue()
            except StoreError as exc:
                log.warning("deadlines.failed", error=str(exc))
            await asyncio.sleep(self._interval)
