"""How many tool calls may be in flight at once: per caller, and in all.

A call takes a slot for as long as it runs (`async with limits.slot(caller): ...`); a call that would pass
either maximum is refused at once with `LimitExceeded`, never queued: a flooding caller gets its refusals and
the other callers keep their share. Plain asyncio: the counters are checked and changed with no await in
between, so no lock is needed and none is held while the call runs.
"""

from __future__ import annotations

from types import TracebackType

from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry
from mcp_gateway.errors import GatewayError

__all__ = ["CallLimits", "LimitExceeded"]


class LimitExceeded(GatewayError):
    """A call refused by a limit. `limit` is the setting that set it (`max_in_flight_per_caller`,
    `max_in_flight`, `rate_limit`), `maximum` its value, `caller` who was refused; `retry_after` (seconds) is
    when trying again may succeed, None when that depends on other calls ending."""

    def __init__(self, message: str, *, limit: str, caller: str, maximum: int, retry_after: float | None = None):
        super().__init__(message)
        self.limit = limit
        self.caller = caller
        self.maximum = maximum
        self.retry_after = retry_after


class _Slot:
    """One call's place under the limits, from `__aenter__` to `__aexit__` (which runs on cancellation too)."""

    __slots__ = ("_caller", "_limits", "_taken")

    def __init__(self, limits: CallLimits, caller: str) -> None:
        self._limits = limits
        self._caller = caller
        self._taken = False

    async def __aenter__(self) -> None:
        self._limits.acquire(self._caller)
        self._taken = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._taken:
            self._taken = False
            self._limits.release(self._caller)


class CallLimits:
    """At most `max_in_flight_per_caller` calls in flight per caller and `max_in_flight_total` in all. Each
    refusal is told to `telemetry` by the limit's setting (`max_in_flight_per_caller`, `max_in_flight`)."""

    def __init__(
        self, max_in_flight_per_caller: int, max_in_flight_total: int, *, telemetry: Telemetry = NO_TELEMETRY
    ) -> None:
        if max_in_flight_per_caller < 1 or max_in_flight_total < 1:
            raise ValueError(
                "in-flight limits are at least 1, got "
                f"max_in_flight_per_caller={max_in_flight_per_caller}, max_in_flight_total={max_in_flight_total}"
            )
        self.max_in_flight_per_caller = max_in_flight_per_caller
        self.max_in_flight_total = max_in_flight_total
        self._by_caller: dict[str, int] = {}
        self._total = 0
        self._telemetry = telemetry

    def slot(self, caller: str) -> _Slot:
        """`async with limits.slot(caller):` around a call; raises `LimitExceeded` on entry when it is refused."""
        return _Slot(self, caller)

    def in_flight(self, caller: str | None = None) -> int:
        """Calls in flight: the caller's, or (with none named) all."""
        return self._total if caller is None else self._by_caller.get(caller, 0)

    def acquire(self, caller: str) -> None:
        """Take a slot now (raises `LimitExceeded`); pair it with `release`. `slot()` does both for you."""
        mine = self._by_caller.get(caller, 0)
        if mine >= self.max_in_flight_per_caller:
            self._telemetry.limit_refused("max_in_flight_per_caller")
            raise LimitExceeded(
                f"caller {caller!r} already has {mine} tool calls in flight, the most allowed per caller "
                f"(max_in_flight_per_caller={self.max_in_flight_per_caller}); retry when one of them has ended",
                limit="max_in_flight_per_caller",
                caller=caller,
                maximum=self.max_in_flight_per_caller,
            )
        if self._total >= self.max_in_flight_total:
            self._telemetry.limit_refused("max_in_flight")
            raise LimitExceeded(
                f"the gateway already has {self._total} tool calls in flight, the most it takes "
                f"(max_in_flight={self.max_in_flight_total}); caller {caller!r}: retry in a moment",
                limit="max_in_flight",
                caller=caller,
                maximum=self.max_in_flight_total,
                retry_after=1.0,
            )
        self._by_caller[caller] = mine + 1
        self._total += 1

    def release(self, caller: str) -> None:
        """Give back a slot taken with `acquire`."""
        left = self._by_caller.get(caller, 0) - 1
        if left < 0:
            raise RuntimeError(f"release without acquire for caller {caller!r}")
        if left:
            self._by_caller[caller] = left
        else:
            del self._by_caller[caller]
        self._total -= 1
