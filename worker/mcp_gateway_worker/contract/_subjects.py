"""Subject names and header names of the bus contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Headers", "Subjects", "subject_matches", "worker_durable"]

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
    - events:   `<prefix>.evt.<tool subject>.<workflow id>`; stream `<PREFIX>_EVENTS` captures `<prefix>.evt.>`
    - cancels:  `<prefix>.ctl.cancel.<workflow id>` (core NATS, to every worker; stop that workflow's handler)
    - answers:  `<prefix>.ctl.input.<tool subject>.<workflow id>` (core NATS, to the worker waiting for the
      user's answer)
    - resource reads: `<prefix>.res.<template subject>` (core NATS request/reply, queue group `mcpgw-workers`)
    - dead letters: `<prefix>.dlq.<workflow id>`; stream `<PREFIX>_DEAD_LETTERS` (workflows the gateway gave up on)

    The tool subject (the `subject` of the tool's config, dot-separated tokens) is in every subject a worker
    publishes or listens on for one tool, and the workflow id is the last token, so that NATS itself can hold a
    worker to its tools: a user allowed `<prefix>.evt.<its subject>.*` cannot report on another tool's workflows
    (contract v2; v1 had `<prefix>.evt.<workflow id>` and `<prefix>.ctl.input.<workflow id>`).
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

    def answer(self, tool_subject: str, workflow_id: str) -> str:
        """Where the answers to a workflow's questions come (its tool's subject, then its id)."""
        return f"{self.prefix}.ctl.input.{tool_subject}.{workflow_id}"

    def tool_answers(self, tool_subject: str) -> str:
        """The answers to every workflow of one tool subject (a worker user's subscribe permission)."""
        return f"{self.prefix}.ctl.input.{tool_subject}.*"

    def command(self, tool_subject: str) -> str:
        return f"{self.prefix}.cmd.{tool_subject}"

    def event(self, tool_subject: str, workflow_id: str) -> str:
        """Where a worker publishes a workflow's events (its tool's subject, then its id)."""
        return f"{self.prefix}.evt.{tool_subject}.{workflow_id}"

    def tool_events(self, tool_subject: str) -> str:
        """The events of every workflow of one tool subject (a worker user's publish permission)."""
        return f"{self.prefix}.evt.{tool_subject}.*"

    def split_event(self, subject: str) -> tuple[str, str] | None:
        """(tool subject, workflow id) of an event subject; None when `subject` is not one (no tool part, or
        not under `<prefix>.evt.`)."""
        head = f"{self.prefix}.evt."
        if not subject.startswith(head):
            return None
        tool_subject, dot, workflow_id = subject[len(head) :].rpartition(".")
        return (tool_subject, workflow_id) if dot and tool_subject and workflow_id else None


def worker_durable(tool_subject: str) -> str:
    """The durable pull consumer every worker of a tool subject shares: `mcpgw-worker-<subject, dots as _>` (the
    literal `mcpgw-worker-`, whatever the prefix: each prefix has its own stream)."""
    return "mcpgw-worker-" + tool_subject.replace(".", "_")


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
