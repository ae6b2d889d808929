"""The supervisor: every background loop of the gateway runs under it, and none can end silently.

A loop is an async function meant to run until it is stopped. When it raises (anything but its own
cancellation) or returns on its own, the supervisor logs it with the traceback, counts it, and starts it again
after a capped exponential backoff. A loop that has failed `unhealthy_after` times in a row, without running
`stable_after` seconds in between, is reported as failing by `health()`, which readiness turns into a 503 that
names it. Stopping cancels the loops (each may first be asked to finish by its owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import structlog

__all__ = ["LoopHealth", "Supervisor"]

log = structlog.get_logger(__name__)

Loop = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class LoopHealth:
    """What the supervisor knows of one loop."""

    name: str
    restarts: int = 0
    """Unexpected ends since the start (exceptions, or returning on its own)."""
    failures_in_a_row: int = 0
    last_error: str | None = None
    started_at: float = 0.0
    running: bool = False

    def failing(self, unhealthy_after: int) -> bool:
        return self.failures_in_a_row >= unhealthy_after


class Supervisor:
    def __init__(
        self,
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 30.0,
        multiplier: float = 2.0,
        unhealthy_after: int = 3,
        stable_after: float = 30.0,
    ) -> None:
        self._initial = initial_backoff
        self._max = max_backoff
        self._multiplier = multiplier
        self._unhealthy_after = unhealthy_after
        self._stable_after = stable_after
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._health: dict[str, LoopHealth] = {}
        self._finishing: set[str] = set()
        """Loops asked to stop: their return is their end, not a failure."""
        self._closed = False

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        await self.stop(*self._tasks)

    def start(self, name: str, loop: Loop) -> None:
        """Run `loop` under supervision until `stop(name)` or the supervisor's end."""
        if name in self._tasks:
            raise ValueError(f"a loop named {name!r} already runs")
        if self._closed:
            raise RuntimeError(f"the supervisor is closed; cannot start {name!r}")
        self._health[name] = LoopHealth(name)
        self._tasks[name] = asyncio.create_task(self._supervise(name, loop), name=f"supervised:{name}")

    async def stop(self, *names: str, grace: float = 0.0) -> None:
        """End the named loops: those that return within `grace` seconds (their owner asked them to finish)
        end so; the others are cancelled. Either way, this returns once they have ended."""
        self._finishing.update(names)
        tasks = [self._tasks.pop(n) for n in names if n in self._tasks]
        if tasks and grace > 0:
            _, late = await asyncio.wait(tasks, timeout=grace)
            if late:
                log.warning("supervisor.stop_grace_exceeded", loops=sorted(names), grace=grace)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in names:
            if name in self._health:
                self._health[name].running = False

    def health(self) -> dict[str, LoopHealth]:
        """Every loop's health; a loop that has run `stable_after` seconds since its last start is no longer
        counted as failing."""
        now = time.monotonic()
        for h in self._health.values():
            if h.running and h.failures_in_a_row and now - h.started_at >= self._stable_after:
                h.failures_in_a_row = 0
        return dict(self._health)

    def failing(self) -> list[str]:
        """The loops that keep failing (readiness names them)."""
        return [name for name, h in self.health().items() if h.failing(self._unhealthy_after)]

    async def _supervise(self, name: str, loop: Loop) -> None:
        health = self._health[name]
        backoff = self._initial
        bound = log.bind(loop=name)
        while True:
            health.running, health.started_at = True, time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.last_error = f"{type(exc).__name__}: {exc}"
                bound.exception("supervisor.loop_failed", error=health.last_error)
            else:
                if name in self._finishing:  # it was asked to finish, and did
                    health.running = False
                    return
                health.last_error = "the loop returned while it should have run on"
                bound.error("supervisor.loop_ended", error=health.last_error)
            ran = time.monotonic() - health.started_at
            health.running = False
            health.restarts += 1
            if ran >= self._stable_after:  # it had been fine for a while: a fresh failure, a short pause
                health.failures_in_a_row, backoff = 0, self._initial
            health.failures_in_a_row += 1
            if health.failing(self._unhealthy_after):
                bound.error("supervisor.loop_failing", failures_in_a_row=health.failures_in_a_row)
            bound.info("supervisor.loop_restarting", after=round(backoff, 3), restarts=health.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * self._multiplier, self._max)
