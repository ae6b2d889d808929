"""What a handler sees: the command, and ways to report progress; and the typed failure it may raise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mcp_gateway_worker._tracing import tracer
from mcp_gateway_worker.contract import (
    SYSTEM_FAILURES,
    Caller,
    ClientAbility,
    Command,
    ErrorInfo,
    EventKind,
    InputAnswer,
    InputRequest,
)

__all__ = ["ToolContext", "ToolFailure", "ToolResult"]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a handler returns when a plain dict (the structured result) is not enough: content blocks (see
    `mcp_gateway_worker.contract.content`) for the client, with or without a structured result."""

    content: list[dict[str, Any]]
    structured: dict[str, Any] | None = None


class ToolFailure(Exception):
    """Raise from a handler to fail the workflow with a stable code the client sees."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, details: dict[str, Any] | None = None):
        if code in SYSTEM_FAILURES:  # raised in a handler, this fails the call as the crash it is
            raise ValueError(f"ToolFailure code {code!r} is reserved for system failures; use a code of your own")
        super().__init__(message)
        self.info = ErrorInfo(code=code, message=message, retryable=retryable, details=details)


Emit = Callable[..., Awaitable[object]]
Ask = Callable[[InputRequest], Awaitable[InputAnswer]]


class ToolContext:
    """One command being handled."""

    def __init__(self, command: Command, emit: Emit, ask: Ask) -> None:
        self._command = command
        self._emit = emit
        self._ask = ask
        self._questions = 0
        self.reported = False
        """Whether the handler has reported anything yet (progress, a question)."""

    @property
    def workflow_id(self) -> str:
        return self._command.workflow_id

    @property
    def idempotency_key(self) -> str:
        """Use it for side effects elsewhere (payments, tickets): the same key on every redelivery."""
        return f"{self._command.workflow_id}.{self._command.attempt}"

    @property
    def tool(self) -> str:
        return self._command.tool

    @property
    def caller(self) -> Caller:
        return self._command.caller

    @property
    def deadline(self) -> datetime:
        return self._command.deadline

    @property
    def attempt(self) -> int:
        return self._command.attempt

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; the client sees it as an MCP progress notification."""
        self.reported = True
        await self._emit(EventKind.PROGRESS, progress=progress, total=total, message=message)

    async def log(self, level: str, message: str, logger: str | None = None) -> None:
        """A log line for the client of the call (MCP `notifications/message`, at or above its chosen level)."""
        await self._emit(EventKind.LOG, level=level, message=message, logger=logger)

    def can_ask(self, ability: ClientAbility) -> bool:
        """Whether the calling client declared it can answer this kind of question (`elicitation` for `ask` and
        `confirm`, `sampling` for `sample`, `roots` for `roots`); True when the gateway does not know. Ask only
        what it can: a question it cannot answer waits for an answer from elsewhere (`workflow_respond`, an
        admin) until the deadline."""
        known = self._command.caller.can_answer
        return known is None or ability in known

    async def _put(self, request: InputRequest) -> InputAnswer:
        """Ask; traced, a span (`worker.question`) from the asking to the answer."""
        self.reported = True
        attributes = {"mcp_gateway.question": request.id, "mcp_gateway.question_kind": request.kind}
        with tracer().span("worker.question", attributes=attributes) as span:
            answer = await self._ask(request)
            span.set_attribute("mcp_gateway.answer", answer.action)
            return answer

    def _key(self, key: str | None) -> str:
        self._questions += 1
        return key or f"q{self._questions}"

    async def ask(self, message: str, schema: dict[str, Any] | None = None, *, key: str | None = None) -> InputAnswer:
        """Ask the user (through the gateway) and wait for the answer: with `schema` (a flat JSON object schema)
        for values, without it for a confirmation. The answer's `action` is accept, decline or cancel; accepted
        values were checked against `schema` by the gateway. Questions are numbered in the order asked (or named
        by `key`, unique within the call), so a redelivered command asking again gets the answer already given.
        Questions asked at the same moment (`asyncio.gather`) reach the client together (see `can_ask`)."""
        kind = "form" if schema else "confirm"
        request = InputRequest(id=self._key(key), kind=kind, message=message, schema=schema)
        return await self._put(request)

    async def sample(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        system_prompt: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Ask the client's model (MCP sampling) and wait: `messages` as MCP writes them (`{role, content}`);
        returns the `CreateMessageResult` (`role`, `content`, `model`, ...). Raises ToolFailure if refused."""
        params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens}
        if system_prompt is not None:
            params["systemPrompt"] = system_prompt
        request = InputRequest(id=self._key(key), kind="sampling", message="sampling", sampling=params)
        answer = await self._put(request)
        if answer.action != "accept" or answer.content is None:
            raise ToolFailure("sampling_refused", f"the client did not sample ({answer.action})")
        return answer.content

    async def roots(self, *, key: str | None = None) -> list[dict[str, Any]]:
        """The client's roots (MCP `roots/list`): `[{"uri": "file:///...", "name"?: ...}, ...]`. Raises
        ToolFailure if the client gave none (declined)."""
        request = InputRequest(id=self._key(key), kind="roots", message="roots")
        answer = await self._put(request)
        if answer.action != "accept" or answer.content is None:
            raise ToolFailure("roots_refused", f"the client did not list its roots ({answer.action})")
        return list(answer.content.get("roots") or [])

    async def confirm(self, message: str) -> bool:
        """Ask for a yes or no; True only when the user accepted."""
        return (await self.ask(message)).action == "accept"
