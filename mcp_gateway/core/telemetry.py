"""The core's telemetry port: what the core tells about its work as it happens (calls, folds, dead letters,
retries, limits), for an adapter to count (`mcp_gateway.observability.metrics` turns it into Prometheus metrics).

The core calls a `Telemetry` and never imports a metrics library; `NO_TELEMETRY` (the default everywhere) does
nothing. Every method is synchronous and cheap (a counter increment) and must never raise into the core. Label
values are bounded: tool names come from the registry (a name no tool has is counted as `UNKNOWN_TOOL_LABEL`),
outcomes, statuses and reasons from the fixed sets below.

What is read rather than told (workflows by status, the outbox, stored dead letters, the bus consumer, the
background loops' restarts) an adapter asks for at scrape time, from the store's `counts` and the supervisor's
`health`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "NO_TELEMETRY",
    "UNKNOWN_TOOL_LABEL",
    "NoTelemetry",
    "Published",
    "Telemetry",
    "dead_letter_kind",
    "fold_lag",
]

UNKNOWN_TOOL_LABEL: Final = "(unknown)"
"""The tool label of a call to a tool the registry does not have: a client-chosen
name must not become a label value."""


class Telemetry(Protocol):
    """What the core reports. The outcomes a call is counted under (`call_ended`, `call_refused`): `completed`;
    `failed`, `cancelled`, `timed_out`, `dead_lettered` (how its workflow ended); `handed_back` (a handle or a
    task), `still_running` (a sync call past its timeout), `input_required`, `no_worker`; refused:
    `invalid_arguments`, `unknown_tool`, `forbidden` (a tool the caller may not see), `limited` (a calls-in-flight
    limit), `too_large`, `idempotency_conflict`; `unavailable` (PostgreSQL or NATS away); cut short: `cancelled`
    (the client gave up), `interrupted` (the gateway is stopping), `error`."""

    def call_started(self, tool: str) -> None:
        """A call of `tool` began (in flight until `call_ended`)."""
        ...

    def call_accepted(self, tool: str, seconds: float) -> None:
        """The call's arguments were checked and its workflow and command recorded, `seconds` after it began."""
        ...

    def call_progressed(self, tool: str, seconds: float) -> None:
        """The call's first progress reached its client, `seconds` after it began."""
        ...

    def call_ended(self, tool: str, outcome: str, seconds: float, *, result: bool) -> None:
        """The call returned (or was cut short) `seconds` after it began; `result`: it carried the workflow's end
        (completed, failed, ...), not a handle or a refusal. Pairs with `call_started`."""
        ...

    def call_refused(self, tool: str, outcome: str) -> None:
        """A call refused before it began (an unknown or hidden tool, a calls-in-flight limit): counted, never in
        flight."""
        ...

    def event_folded(self, kind: str, lag_seconds: float | None) -> None:
        """A worker event of `kind` was folded; `lag_seconds`: from its publish on the bus to its fold committed
        (None when the bus does not say when it was published)."""
        ...

    def workflow_ended(self, tool: str, status: str) -> None:
        """A workflow ended with `status` (folded here, or ended by the gateway: cancelled, timed out)."""
        ...

    def retried(self, tool: str, by: str) -> None:
        """A workflow's attempt is run again: `by` is `policy` (the tool's retry policy) or `admin`."""
        ...

    def dead_lettered(self, source: str, reason: str) -> None:
        """A message or workflow was dead-lettered. `source`: `event` or `command`; `reason`: a `dead_letter_kind`."""
        ...

    def command_published(self) -> None:
        """A command went out on the bus (right after its call's commit, or later by the outbox relay)."""
        ...

    def commands_relayed(self, count: int) -> None:
        """The outbox relay published `count` commands left behind (a failed publish, a process that died)."""
        ...

    def command_deferred(self) -> None:
        """A command could not be published now: it stays in the outbox for the relay."""
        ...

    def limit_refused(self, limit: str) -> None:
        """A request or call was refused by a limit, named by its setting (`rate_limit`, `max_in_flight`, ...)."""
        ...

    def auth_failed(self, reason: str) -> None:
        """An HTTP request failed authentication: `missing_token`, `invalid_token` or `insufficient_scope`."""
        ...


class NoTelemetry:
    """Tells nobody anything: the default."""

    def call_started(self, tool: str) -> None:
        pass

    def call_accepted(self, tool: str, seconds: float) -> None:
        pass

    def call_progressed(self, tool: str, seconds: float) -> None:
        pass

    def call_ended(self, tool: str, outcome: str, seconds: float, *, result: bool) -> None:
        pass

    def call_refused(self, tool: str, outcome: str) -> None:
        pass

    def event_folded(self, kind: str, lag_seconds: float | None) -> None:
        pass

    def workflow_ended(self, tool: str, status: str) -> None:
        pass

    def retried(self, tool: str, by: str) -> None:
        pass

    def dead_lettered(self, source: str, reason: str) -> None:
        pass

    def command_published(self) -> None:
        pass

    def commands_relayed(self, count: int) -> None:
        pass

    def command_deferred(self) -> None:
        pass

    def limit_refused(self, limit: str) -> None:
        pass

    def auth_failed(self, reason: str) -> None:
        pass


NO_TELEMETRY: Final[Telemetry] = NoTelemetry()


@runtime_checkable
class Published(Protocol):
    """A delivery that knows when the bus stored its message (JetStream's metadata); the core's `Delivery` may."""

    @property
    def published_at(self) -> datetime | None: ...


def fold_lag(delivery: object, now: datetime | None = None) -> float | None:
    """Seconds from the delivery's publish on the bus to `now` (None when the bus does not say; never negative:
    the clocks of NATS and this host may disagree a little)."""
    if not isinstance(delivery, Published):
        return None
    published = delivery.published_at
    if published is None:
        return None
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    return max(((now or datetime.now(UTC)) - published).total_seconds(), 0.0)


_DEAD_LETTER_KINDS: Final = (
    ("no such workflow", "no_workflow"),
    ("refused:", "refused"),
    ("PostgreSQL refused", "store_refused"),
    ("folding failed", "fold_failed"),
    ("max_deliveries", "max_deliveries"),
)


def dead_letter_kind(source: str, reason: str) -> str:
    """A dead letter's reason as a bounded label: `undecodable`, `refused` (its subject or key disagree),
    `no_workflow`, `store_refused`, `fold_failed` (events); `max_deliveries`, `retries_exhausted` (workflows)."""
    for start, kind in _DEAD_LETTER_KINDS:
        if reason.startswith(start):
            return kind
    return "undecodable" if source == "event" else "retries_exhausted"
