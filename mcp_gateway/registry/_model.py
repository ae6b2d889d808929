"""What a tool is: its config (as written in YAML) and the compiled form the gateway serves."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import mcp.types as types
from mcp_gateway_worker.contract import ClientAbility, RetryPolicy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_gateway.registry._prompts import Prompt
from mcp_gateway.registry._resources import Resource, Template
from mcp_gateway.registry._schema import CompiledSchema
from mcp_gateway.registry._scopes import Scope

__all__ = ["Annotations", "Registry", "Tool", "ToolConfig"]

# MCP tool-name rules (2025-11-25): 1-128 characters of ASCII letters, digits, '_', '-', '.'.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# A NATS subject under the command prefix: dot-separated tokens, no wildcards, no spaces.
SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Annotations(_Strict):
    """MCP tool annotations (hints for clients, never security)."""

    title: str | None = None
    read_only_hint: bool | None = Field(default=None, alias="readOnlyHint")
    destructive_hint: bool | None = Field(default=None, alias="destructiveHint")
    idempotent_hint: bool | None = Field(default=None, alias="idempotentHint")
    open_world_hint: bool | None = Field(default=None, alias="openWorldHint")


class ToolConfig(_Strict):
    """One tool as a backend team declares it in `config/tools/*.yaml`."""

    name: str = Field(description="MCP tool name: 1-128 of A-Z a-z 0-9 _ - .")
    title: str | None = None
    description: str = Field(min_length=1)
    version: str = "1"
    subject: str = Field(description="NATS subject the command goes to, under '<prefix>.cmd.'")
    mode: Literal["sync", "async", "auto", "task"] = Field(
        default="auto",
        description="sync: wait for the result (up to timeout); async: hand back a workflow handle at once; "
        "auto: wait up to timeout (questions come back as input rounds), then hand back a handle (a task for "
        "task-capable clients); task: only as a task (clients without the tasks extension are refused with -32021)",
    )
    timeout: float = Field(default=30.0, gt=0, le=86_400, description="seconds a call waits for the result")
    deadline: float | None = Field(
        default=None, gt=0, description="seconds the work may take; default: timeout (sync), 1 hour or timeout"
    )
    strict: bool = Field(default=True, description="close object schemas that do not say otherwise")
    poll_after: float | None = Field(
        default=None,
        gt=0,
        description="seconds after which a waiting call's SSE stream is closed so the client polls (SEP-1699); "
        "it reconnects with Last-Event-ID and misses nothing (2025-11-25 streamable HTTP)",
    )
    approval: Literal["none", "caller", "admin"] = Field(
        default="none", description="hold each call before dispatch until the caller, or an admin, approves it"
    )
    requires: list[ClientAbility] = Field(
        default_factory=list[ClientAbility],
        description="client capabilities the tool cannot do without: a client that did not declare them is "
        "refused (-32021, naming them) before anything is recorded",
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="retry failed attempts with backoff (attempts, initial_backoff, max_backoff, multiplier, failures: "
        "[crash, retryable]); when the last fails, the workflow is dead-lettered",
    )
    annotations: Annotations | None = None
    scopes: list[Scope] = Field(
        default_factory=list[Scope],
        description="scopes a caller needs, all of them, to see and use this tool (none: every caller)",
    )
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name_rules(cls, value: str) -> str:
        if not TOOL_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid MCP tool name (1-128 characters of A-Z a-z 0-9 _ - .)")
        return value

    @field_validator("subject")
    @classmethod
    def _subject_rules(cls, value: str) -> str:
        if not SUBJECT.match(value):
            raise ValueError(f"{value!r} is not a NATS subject (dot-separated tokens of A-Z a-z 0-9 _ -, no wildcards)")
        return value


@dataclass(frozen=True, slots=True)
class Tool:
    """A checked tool, ready to serve: compiled validators and the MCP listing built once."""

    config: ToolConfig
    source: str
    input: CompiledSchema
    output: CompiledSchema | None
    listing: types.Tool

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sensitive(self) -> bool:
        """Whether the tool's input schema marks any value `x-sensitive` (its arguments are kept redacted)."""
        return self.input.sensitive

    def redact(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments as the gateway keeps, shows and logs them: each value marked `x-sensitive` in the input
        schema replaced by `MARKER`, in a copy (`arguments` is never changed; a tool that marks nothing hands them
        back as they are). Only the command carries them whole."""
        return cast(dict[str, Any], self.input.redact(arguments))

    @property
    def deadline_seconds(self) -> float:
        if self.config.deadline is not None:
            return self.config.deadline
        return self.config.timeout if self.config.mode == "sync" else max(self.config.timeout, 3_600.0)


@dataclass(frozen=True, slots=True)
class Registry(Mapping[str, Tool]):
    """Every tool (and prompt) by name, in the order the files declared them."""

    tools: dict[str, Tool] = field(default_factory=dict[str, "Tool"])
    listing: tuple[types.Tool, ...] = ()
    prompts: dict[str, Prompt] = field(default_factory=dict[str, Prompt])
    resources: dict[str, Resource] = field(default_factory=dict[str, Resource])
    templates: tuple[Template, ...] = ()

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    @classmethod
    def of(
        cls,
        tools: list[Tool],
        prompts: list[Prompt] | None = None,
        resources: list[Resource] | None = None,
        templates: list[Template] | None = None,
    ) -> Registry:
        return cls(
            {t.name: t for t in tools},
            tuple(t.listing for t in tools),
            {p.config.name: p for p in prompts or []},
            {r.config.uri: r for r in resources or []},
            tuple(templates or ()),
        )

    def template_for(self, uri: str) -> tuple[Template, dict[str, Any]] | None:
        """The first resource template matching `uri`, with the values of its variables."""
        for template in self.templates:
            values = template.match(uri)
            if values is not None:
                return template, values
        return None
