"""Workflows the gateway gave up on: their retries ran out, or JetStream stopped redelivering their command
(`max_deliver` reached, the MAX_DELIVERIES advisory). Each ends `dead_lettered`, is kept in `dead_letters` for an
admin, and is announced on the dead-letter stream for independent consumers; an admin redrives it
(`mcp-gateway dlq redrive`, `workflows retry`, `POST /admin/workflows/{id}/retry`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog

from mcp_gateway.core.ports import Bus, DeadLetter, WorkflowStore
from mcp_gateway.core.states import Status
from mcp_gateway.core.telemetry import NO_TELEMETRY, Telemetry, dead_letter_kind
from mcp_gateway.errors import BusError, StoreError

__all__ = ["DeadLetterOffice"]

log = structlog.get_logger(__name__)


class DeadLetterOffice:
    def __init__(self, store: WorkflowStore, bus: Bus, telemetry: Telemetry = NO_TELEMETRY) -> None:
        self._store = store
        self._bus = bus
        self._telemetry = telemetry

    async def given_up(self, workflow_id: str, tool: str, attempt: int, error: dict[str, Any] | None) -> None:
        """Keep and announce a workflow that has just ended `dead_lettered`."""
        code = (error or {}).get("code", "dead_lettered")
        reason = f"{code}: {(error or {}).get('message', '')} (attempt {attempt})"
        record = {
            "workflow_id": workflow_id,
            "tool": tool,
            "attempt": attempt,
            "error": error,
            "at": datetime.now(UTC).isoformat(),
        }
        body = json.dumps(record, ensure_ascii=False).encode()
        letter = DeadLetter(
            source="command",
            subject=self._bus.subjects.dead_letter(workflow_id),
            reason=reason,
            head=body,
            size=len(body),
            workflow_id=workflow_id,
            delivered=attempt,
        )
        try:
            letter_id = await self._store.dead_letter(letter)
        except StoreError as exc:  # the workflow is dead-lettered in its row anyway; the listing misses it
            log.warning("dead_letter.not_kept", workflow_id=workflow_id, error=str(exc))
            letter_id = None
        try:
            await self._bus.publish_dead_letter(workflow_id, body)
        except BusError as exc:
            log.warning("dead_letter.not_announced", workflow_id=workflow_id, error=str(exc))
        log.error("workflow.dead_lettered", workflow_id=workflow_id, tool=tool, reason=reason, dead_letter=letter_id)
        self._telemetry.dead_lettered("command", dead_letter_kind("command", reason))

    async def exhausted(self, workflow_id: str, deliveries: int, consumer: str) -> None:
        """JetStream stopped redelivering the workflow's command: end it dead-lettered (unless it ended)."""
        message = (
            f"the command was delivered {deliveries} times without a result (its workers crashed or did not "
            f"answer in time; consumer {consumer})"
        )
        applied = await self._store.end(workflow_id, Status.DEAD_LETTERED, "max_deliveries", message, by="jetstream")
        if applied is not None and applied.fold.changed and not applied.duplicate:
            self._telemetry.workflow_ended(applied.tool, Status.DEAD_LETTERED.value)
            state = applied.fold.state
            await self.given_up(workflow_id, applied.tool, state.attempt, state.error)
