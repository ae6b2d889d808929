"""Group commit (the store's creates): alone at light load, together under load, each caller its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mcp_gateway.store._group import GroupCommit


class Writes:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.gate.wait()
        if -1 in items:
            raise OSError("the server went away")
        return [ValueError(f"{i} refused") if i == 13 else i * 10 for i in items]


async def test_alone_at_once_then_together_while_one_is_written() -> None:
    writes = Writes()
    group = GroupCommit(writes.write, max_batch=4)
    assert await group.submit(1) == 10 and writes.batches == [[1]]
    writes.gate.clear()
    first = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)  # the first write is under way (held at the gate)
    rest = [asyncio.create_task(group.submit(i)) for i in range(3, 9)]
    await asyncio.sleep(0)
    writes.gate.set()
    assert await first == 20 and [await t for t in rest] == [30, 40, 50, 60, 70, 80]
    assert writes.batches == [[1], [2], [3, 4, 5, 6], [7, 8]]  # queued ones together, at most max_batch


async def test_each_caller_gets_its_own_error_and_a_failed_write_fails_its_batch_only() -> None:
    writes = Writes()
    group = GroupCommit(writes.write)
    results = await asyncio.gather(*(group.submit(i) for i in (12, 13, 14)), return_exceptions=True)
    assert results[0] == 120 and isinstance(results[1], ValueError) and results[2] == 140
    failed = await asyncio.gather(group.submit(-1), group.submit(5), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in failed)
    assert await group.submit(6) == 60  # the next batch is written as ever


async def test_a_cancelled_caller_does_not_stop_the_write_nor_its_neighbours() -> None:
    writes = Writes()
    writes.gate.clear()
    group = GroupCommit(writes.write)
    gone = asyncio.create_task(group.submit(1))
    stays = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    writes.gate.set()
    assert await stays == 20 and writes.batches == [[1, 2]]
    await group.aclose()
