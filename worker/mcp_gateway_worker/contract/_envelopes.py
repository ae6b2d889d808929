"""The command and event envelopes (JSON bodies) and their strict decoding.

Decoding is strict: a body that is not JSON, has an unknown key, a missing field or a wrong type raises
`ContractError` naming the field and what was expected. Unknown *future* versions are refused the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CONTRACT_VERSION",
    "MAX_DEPTH",
    "SYSTEM_FAILURES",
    "Caller",
    "Cancel",
    "ClientAbility",
    "Command",
    "ContractError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "InputAnswer",
    "InputRequest",
    "ResourceRead",
    "ResourceReply",
    "RetryOn",
    "RetryPolicy",
    "decode_answer",
    "decode_cancel",
    "decode_command",
    "decode_event",
    "decode_resource_read",
    "decode_resource_reply",
    "encode",
    "json_depth",
]

CONTRACT_VERSION = 2
"""The contract's version: the `Mcpgw-Schema` header of commands and events. 2 put the tool subject in the event
and answer subjects (`<prefix>.evt.<tool subject>.<workflow id>`), and in the command (`subject`). A body's `v` is
the version of that envelope: commands are at 2; events, cancels, answers and resource reads are unchanged at 1."""

_M = TypeVar("_M", bound=BaseModel)
_TOOL_SUBJECT = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"


class ContractError(ValueError):
    """A message on the bus does not follow the contract."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


ClientAbility = Literal["elicitation", "sampling", "roots"]


class Caller(_Strict):
    """Who asked: the authenticated subject (or `local` under stdio), the MCP request id, and what the calling
    client can answer mid-call (`can_answer`: elicitation, sampling, roots; None when not known)."""

    subject: str = "anonymous"
    request_id: str | None = None
    can_answer: list[ClientAbility] | None = None


RetryOn = Literal["crash", "retryable"]
"""Which failures a retry policy retries: a handler that raised (`crash`), a failure the worker marked
`retryable`. A bus outage never fails the work: the command goes back to JetStream whatever the policy."""


class RetryPolicy(_Strict):
    """How a tool's failed attempts are retried: by the worker, with JetStream's delayed redelivery (a NAK with
    the backoff as its delay); the attempt that fails last is reported `failed` with `retryable`, and the
    gateway then dead-letters the workflow."""

    attempts: int = Field(default=3, ge=1, le=100)
    """Attempts in all, the first included."""
    initial_backoff: float = Field(default=1.0, gt=0, le=3_600)
    max_backoff: float = Field(default=60.0, gt=0, le=86_400)
    multiplier: float = Field(default=2.0, ge=1, le=10)
    failures: list[RetryOn] = Field(default_factory=lambda: ["crash", "retryable"])
    """Which failures retry (not `on`: YAML 1.1 reads that key as true)."""

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the attempt after `attempt` (1 for the first)."""
        return min(self.initial_backoff * self.multiplier ** max(attempt - 1, 0), self.max_backoff)


class Command(_Strict):
    """What the gateway asks a worker to do. Idempotency key: (`workflow_id`, `attempt`).

    A version 1 command (written by a gateway before contract 2, still in the stream or in its outbox at the
    upgrade) has no `subject` and an old-style `reply_subject`; a worker takes the subject from the consumer it
    came through and publishes the events on the version 2 subject built from it."""

    v: Literal[1, 2] = 2
    kind: Literal["execute"] = "execute"
    workflow_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    tool: str
    subject: str | None = Field(default=None, max_length=512, pattern=_TOOL_SUBJECT)
    """The tool's subject (its config's `subject`): the command came on `<prefix>.cmd.<subject>`; events go to
    `<prefix>.evt.<subject>.<workflow id>` (`reply_subject`), answers come on
    `<prefix>.ctl.input.<subject>.<workflow id>`. Required from version 2 on."""
    tool_version: str
    arguments: dict[str, Any]
    caller: Caller
    deadline: datetime
    attempt: int = Field(default=1, ge=1)
    reply_subject: str
    """Where the worker publishes this workflow's events (JetStream): `<prefix>.evt.<subject>.<workflow id>`."""
    retry: RetryPolicy | None = None
    """The tool's retry policy, when it has one (absent: a failure is final)."""

    def model_post_init(self, context: Any, /) -> None:
        if self.v >= 2 and self.subject is None:
            raise ValueError("a version 2 command needs 'subject' (the tool's subject)")


class Cancel(_Strict):
    """Stop working on a workflow: it was cancelled, or its deadline passed. Sent on core NATS, best effort."""

    v: Literal[1] = 1
    workflow_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    reason: Literal["cancelled", "timed_out"]
    attempt: int | None = Field(default=None, ge=1)
    """The attempts it stops: this one and those before (absent: all). A later attempt (an admin's retry) runs."""


def decode_cancel(data: bytes) -> Cancel:
    return _decode(data, Cancel, "cancel")


LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


class EventKind(StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    INPUT_REQUIRED = "input_required"
    LOG = "log"
    RETRYING = "retrying"
    """An attempt failed and another follows after `retry_in` seconds (`error` says why)."""
    COMPLETED = "completed"
    FAILED = "failed"


class InputRequest(_Strict):
    """A question a worker asks mid-way: the user's confirmation or values (a small JSON Schema), the client's
    model (sampling), or the client's roots. `id` is unique within the workflow (`approval` is the gateway's)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["confirm", "form", "sampling", "roots"]
    message: str = Field(min_length=1, max_length=4000)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """For `form`: a flat JSON object schema (elicitation rules); `confirm` asks yes or no."""
    sampling: dict[str, Any] | None = None
    """For `sampling`: MCP `sampling/createMessage` params (`messages`, `maxTokens`, `systemPrompt`, ...); the
    answer's `content` is the client's `CreateMessageResult` (`role`, `content`, `model`, `stopReason`).
    For `roots` (MCP `roots/list`), the answer's `content` is `{"roots": [{"uri", "name"?}, ...]}`."""

    def model_post_init(self, context: Any, /) -> None:
        if self.id == "approval":
            raise ValueError("the question id 'approval' is the gateway's (for approvals); use another")
        if self.kind == "sampling":
            params = self.sampling or {}
            if not isinstance(params.get("messages"), list) or not isinstance(params.get("maxTokens"), int):
                raise ValueError("a 'sampling' question needs 'sampling' with 'messages' (a list) and 'maxTokens'")
        if self.schema_ is not None and self.schema_.get("type") != "object":
            raise ValueError('a question\'s \'schema\' must be a JSON object schema ({"type": "object", ...})')


class InputAnswer(_Strict):
    """The user's answer, sent to the worker on `<prefix>.ctl.input.<tool subject>.<workflow id>` (core NATS)."""

    v: Literal[1] = 1
    workflow_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    request_id: str
    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None


class ResourceRead(_Strict):
    """A read of a resource template's URI, asked of a worker (request/reply)."""

    v: Literal[1] = 1
    uri: str
    variables: dict[str, Any]
    caller: Caller


class ResourceReply(_Strict):
    """The worker's answer: the resource's contents (`{uri, mimeType, text | blob}`), or an error."""

    v: Literal[1] = 1
    contents: list[dict[str, Any]] | None = None
    error: ErrorInfo | None = None


def decode_resource_read(data: bytes) -> ResourceRead:
    return _decode(data, ResourceRead, "resource read")


def decode_resource_reply(data: bytes) -> ResourceReply:
    return _decode(data, ResourceReply, "resource reply")


def decode_answer(data: bytes) -> InputAnswer:
    return _decode(data, InputAnswer, "input answer")


SYSTEM_FAILURES = frozenset(
    {"worker_error", "invalid_output", "invalid_content", "invalid_question", "unknown_tool", "deadline_exceeded"}
)
"""Failure codes that mean the tool did not run as it should: a handler crashed or returned no object
(`worker_error`), a worker broke the contract (`invalid_output`, `invalid_content`, `invalid_question`: set by the
gateway) or has no
handler (`unknown_tool`), the command came too late (`deadline_exceeded`). A tool's own failures use other codes."""


class ErrorInfo(_Strict):
    """A failure, as a worker reports it: a stable code, a message for people, optional details."""

    code: str = Field(min_length=1, max_length=100)
    message: str
    retryable: bool = False
    details: dict[str, Any] | None = None


class Event(_Strict):
    """What a worker reports about a workflow. (`workflow_id`, `attempt`, `seq`) is unique per event."""

    v: Literal[1] = 1
    workflow_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    attempt: int = Field(default=1, ge=1)
    seq: int = Field(ge=0)
    kind: EventKind
    at: datetime
    progress: float | None = None
    total: float | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    """The structured result (checked against the tool's output_schema)."""
    content: list[dict[str, Any]] | None = Field(default=None, max_length=100)
    """MCP content blocks for the client (text, image, audio, resource, resource_link), as MCP writes them."""
    error: ErrorInfo | None = None
    requests: list[InputRequest] | None = Field(default=None, min_length=1, max_length=16)
    """For `input_required`: the questions asked together (each answered on its own, by id)."""
    level: LogLevel | None = None
    """For `log`: the MCP log level (debug ... emergency); `message` carries the text, `logger` the source."""
    logger: str | None = Field(default=None, max_length=200)
    retry_in: float | None = Field(default=None, ge=0)
    """For `retrying`: seconds until the next attempt."""

    @model_validator(mode="before")
    @classmethod
    def _one_request(cls, data: Any) -> Any:
        """`request` (one question), as the first workers wrote it, is read as `requests` with that one."""
        if isinstance(data, dict) and "request" in data:
            body = {k: v for k, v in cast(dict[str, Any], data).items() if k != "request"}
            if data["request"] is None:
                return body
            if body.get("requests") is not None:
                raise ValueError("give 'requests' or the older 'request', not both")
            return {**body, "requests": [data["request"]]}
        return data

    @property
    def key(self) -> str:
        """The event's idempotency key (also its `Nats-Msg-Id`)."""
        return f"{self.workflow_id}.{self.attempt}.{self.seq}"

    def model_post_init(self, context: Any, /) -> None:
        if self.kind is EventKind.COMPLETED and self.result is None and self.content is None:
            raise ValueError("a 'completed' event needs 'result' (a JSON object) or 'content' (MCP content blocks)")
        if self.kind in (EventKind.FAILED, EventKind.RETRYING) and self.error is None:
            raise ValueError(f"a '{self.kind.value}' event needs 'error' ({{code, message}})")
        if self.kind is EventKind.PROGRESS and self.progress is None:
            raise ValueError("a 'progress' event needs 'progress' (a number)")
        if self.kind is EventKind.LOG and (self.level is None or self.message is None):
            raise ValueError("a 'log' event needs 'level' and 'message'")
        if self.kind is EventKind.INPUT_REQUIRED and not self.requests:
            raise ValueError("an 'input_required' event needs 'requests' ([{id, kind, message, schema?}, ...])")
        ids = [r.id for r in self.requests or ()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"the ids of 'requests' must differ, got {ids}")


def encode(model: BaseModel) -> bytes:
    """The wire form of an envelope: compact JSON, no null fields."""
    return model.model_dump_json(exclude_none=True, by_alias=True).encode()


def _describe(error: ValidationError, what: str) -> str:
    parts: list[str] = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(body)"
        parts.append(f"{path}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


MAX_DEPTH = 64
"""How deeply a body's JSON may nest (arrays and objects); a deeper one is refused, never parsed further."""


def json_depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value, measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            children = cast(dict[str, Any], node).values() if isinstance(node, dict) else cast(list[Any], node)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _decode(data: bytes, model: type[_M], what: str) -> _M:
    """Decode and check one message body. Whatever the bytes, the only error is ContractError."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"invalid {what}: body is not JSON ({exc})") from None
    except RecursionError:
        raise ContractError(f"invalid {what}: body nests deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # anything else the decoder may raise on hostile input
        raise ContractError(f"invalid {what}: body cannot be decoded ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ContractError(f"invalid {what}: body must be a JSON object, got {type(raw).__name__}")
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and json_depth(raw) > MAX_DEPTH:  # fewer: cannot be deeper
        raise ContractError(f"invalid {what}: body nests deeper than {MAX_DEPTH} levels")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(_describe(exc, what)) from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise ContractError(f"invalid {what}: {type(exc).__name__}: {exc}") from None


def decode_command(data: bytes) -> Command:
    return _decode(data, Command, "command")


def decode_event(data: bytes) -> Event:
    return _decode(data, Event, "event")
