"""The workflow states this process wrote last, so that folding the next event needs no read first.

A workflow's `version` grows by one with every write of its state, under the row's lock, so a version names one
state. An entry is what this process wrote at that version (a create, the relay's mark, a fold). It may be stale
(another gateway, or this process's locked path, wrote since): the fold's write is conditional on the version, so a
stale entry costs a failed write and a read, never a wrong decision.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from mcp_gateway.core.states import TERMINAL, Status, WorkflowState

__all__ = ["KnownStates"]

KNOWN_STATES = 20_000
"""Entries kept (open workflows this process touched; the oldest go first)."""


class KnownStates:
    def __init__(self, size: int = KNOWN_STATES) -> None:
        self._size = size
        self._states: OrderedDict[str, tuple[str, WorkflowState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, workflow_id: str) -> tuple[str, WorkflowState] | None:
        """The tool and the state this process last wrote, if it still keeps them."""
        return self._states.get(workflow_id)

    def wrote(self, workflow_id: str, tool: str, state: WorkflowState) -> None:
        """This process committed `state` (at its version). An ended workflow is not kept: its events are late."""
        if state.status in TERMINAL:
            self._states.pop(workflow_id, None)
            return
        self._states[workflow_id] = (tool, state)
        self._states.move_to_end(workflow_id)
        while len(self._states) > self._size:
            self._states.popitem(last=False)

    def dispatched(self, workflow_ids: list[str]) -> None:
        """The relay's mark moved these from pending to dispatched (one version on), as its statement does."""
        for workflow_id in workflow_ids:
            known = self._states.get(workflow_id)
            if known is not None and known[1].status is Status.PENDING:
                tool, state = known
                self._states[workflow_id] = (
                    tool,
                    dataclasses.replace(state, status=Status.DISPATCHED, version=state.version + 1),
                )

    def forget(self, workflow_id: str) -> None:
        self._states.pop(workflow_id, None)
