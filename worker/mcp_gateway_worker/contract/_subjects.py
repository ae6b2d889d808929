"""Subject names and header names of the bus contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Headers", "Subjects", "subject_matches"]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class Headers:
    """NATS header names the contract uses."""

    MSG_ID = "Nats-Msg-Id"
    """JetStream de-duplication id: the workflow id for a command's first attempt, `<id>.<attempt>` after."""
    SCHEMA = "Mcpgw-Schema"
    """The contract version of the body, e.g. `1`."""
    WORKFLOW_ID = "Mcpgw-Workflow-Id"
    TOOL = "Mcpgw-Tool"
    TRACEPARENT = "traceparent"
    """W3C trace context, carried from the client through the gateway to the worker and back."""


@dataclass(frozen=True, slots=True)
class Subjects:
    """Every subject of the contract, under one configurable prefix (default `mcpgw`).

    - commands: `<prefix>.cmd.<tool subject>`; stream `<PREFIX>_COMMANDS` captures `<prefix>.cmd.>`
    - events:   `<prefix>.evt.<workflow id>`;   stream `<PREFIX>_EVENTS` captures `<prefix>.evt.>`
    - cancels:  `<prefix>.ctl.cancel.<workflow id>` (core NATS, to every worker; stop that workflow's handler)
    - answers:  `<prefix>.ctl.input.<workflow id>` (core NATS, to the worker waiting for the user's answer)
    - resource reads: `<prefix>.res.<template subject>` (core NATS request/reply, queue group `mcpgw-workers`)
    - dead letters: `<prefix>.dlq.<workflow id>`; stream `<PREFIX>_DEAD_LETTERS` (workflows the gateway gave up on)
    """

    prefix: str = "mcpgw"

    def __post_init__(self) -> None:
        if not all(_TOKEN.match(part) for part in self.prefix.split(".")):
            raise ValueError(f"subject prefix {self.prefix!r} must be dot-separated tokens of [A-Za-z0-9_-]")

    @property
    def command_stream(self) -> str:
        return self.prefix.replace(".", "_").upper() + "_COMMANDS"

    @property
    def event_stream(self) -> str:
        return self.prefix.replace(".", "_").upper() + "_EVENTS"

    @property
    def all_commands(self) -> str:
        return f"{self.prefix}.cmd.>"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.evt.>"

    @property
    def dead_letter_stream(self) -> str:
        return self.prefix.replace(".", "_").upper() + "_DEAD_LETTERS"

    @property
    def all_dead_letters(self) -> str:
        return f"{self.prefix}.dlq.>"

    def dead_letter(self, workflow_id: str) -> str:
        return f"{self.prefix}.dlq.{workflow_id}"

    @property
    def all_cancels(self) -> str:
        return f"{self.prefix}.ctl.cancel.*"

    def cancel(self, workflow_id: str) -> str:
        return f"{self.prefix}.ctl.cancel.{workflow_id}"

    def resource(self, template_subject: str) -> str:
        return f"{self.prefix}.res.{template_subject}"

    def answer(self, workflow_id: str) -> str:
        return f"{self.prefix}.ctl.input.{workflow_id}"

    def command(self, tool_subject: str) -> str:
        return f"{self.prefix}.cmd.{tool_subject}"

    def event(self, workflow_id: str) -> str:
        return f"{self.prefix}.evt.{workflow_id}"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS delivers `subject` to a subscription (or consumer filter) on `pattern`: `*` stands for one
    token, a final `>` for one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)
