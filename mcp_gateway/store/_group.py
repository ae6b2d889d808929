"""Group commit: writes that arrive while one is under way go together in the next, one statement and one commit.

A write that finds nothing under way goes at once, alone (no added latency at light load); under load, each
round trip carries every write that queued during the previous one, up to `max_batch`. A caller that is
cancelled while its write is queued or under way does not stop it (it is written, like a statement already sent);
the others in its batch are not affected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]], *, max_batch: int = 64
    ) -> None:
        """`write` commits a batch and answers one result per item, in order (an exception: that item's caller
        gets it raised); what it raises, every caller of the batch gets."""
        self._write = write
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._writing: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        result.add_done_callback(_retrieved)  # its caller may be gone (cancelled) when it is settled
        self._queue.append((item, result))
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain())
        return await asyncio.shield(result)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self.batches += 1
                self.items += len(batch)
                try:
                    results = await self._write([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, result in batch:
                        result.cancel()
                    raise
                except Exception as exc:  # every caller of the batch hears it
                    for _, result in batch:
                        if not result.done():
                            result.set_exception(exc)
                    continue
                for (_, result), value in zip(batch, results, strict=True):
                    if result.done():
                        continue
                    if isinstance(value, Exception):
                        result.set_exception(value)
                    else:
                        result.set_result(value)
        finally:
            self._writing = None
            for _, result in self._queue:  # only left when cancelled: nothing of these was written
                result.cancel()
            self._queue = []

    async def aclose(self) -> None:
        """Wait for the writes queued and under way (a store closing finishes them first)."""
        while self._writing is not None:
            await asyncio.wait({self._writing})


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
