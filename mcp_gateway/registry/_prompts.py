"""Prompts from config: typed arguments, messages whose strings name arguments as `{name}`, completions.

An argument with `ask` that the caller leaves out is asked of the user (one form for all of them): by
elicitation on 2025-11-25, as an input-required result on 2026-07-28 (the retried request carries the answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import mcp.types as types
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_gateway.registry._content import CONTENT_BLOCK, content_block_problem
from mcp_gateway.registry._scopes import Scope

__all__ = ["ASK_KEY", "Prompt", "PromptConfig", "PromptError", "placeholders"]

ASK_KEY = "arguments"
"""The id of the question that asks for a prompt's missing arguments."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PromptError(ValueError):
    """A get-prompt request whose arguments do not fit the prompt."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptArgument(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str | None = None
    required: bool = False
    completions: list[str] = Field(default_factory=list[str], description="values offered by completion/complete")
    ask: str | None = Field(default=None, min_length=1, description="left out by the caller: ask the user this")


class PromptMessage(_Strict):
    role: Literal["user", "assistant"]
    content: dict[str, Any] = Field(description="an MCP content block; strings may use {argument}")

    @field_validator("content")
    @classmethod
    def _is_a_block(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = content_block_problem(value)
        if problem is not None:
            raise ValueError(f"not an MCP content block: {problem}")
        return value


class PromptConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    title: str | None = None
    description: str | None = None
    arguments: list[PromptArgument] = Field(default_factory=list[PromptArgument])
    messages: list[PromptMessage] = Field(min_length=1)
    scopes: list[Scope] = Field(
        default_factory=list[Scope],
        description="scopes a caller needs, all of them, to see and use this prompt (none: every caller)",
    )


def placeholders(value: Any) -> set[str]:
    """Every `{name}` used in the strings of a JSON value."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set()


def _fill(value: Any, arguments: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: arguments.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _fill(v, arguments) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, arguments) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Prompt:
    config: PromptConfig
    source: str
    listing: types.Prompt

    @classmethod
    def of(cls, config: PromptConfig, source: str) -> Prompt:
        arguments = [
            types.PromptArgument(name=a.name, description=a.description, required=a.required) for a in config.arguments
        ]
        listing = types.Prompt(
            name=config.name, title=config.title, description=config.description, arguments=arguments or None
        )
        return cls(config, source, listing)

    def render(self, arguments: dict[str, str] | None) -> types.GetPromptResult:
        given = dict(arguments or {})
        declared = {a.name for a in self.config.arguments}
        unknown = sorted(set(given) - declared)
        if unknown:
            raise PromptError(f"prompt {self.config.name!r} has no argument(s) {unknown}; it takes {sorted(declared)}")
        missing = [a.name for a in self.config.arguments if a.required and a.name not in given]
        if missing:
            raise PromptError(f"prompt {self.config.name!r} needs argument(s) {missing}")
        filled = {name: given.get(name, "") for name in declared}
        messages = [
            types.PromptMessage(role=m.role, content=CONTENT_BLOCK.validate_python(_fill(m.content, filled)))
            for m in self.config.messages
        ]
        return types.GetPromptResult(description=self.config.description, messages=messages)

    def question(self, arguments: dict[str, str] | None) -> dict[str, Any] | None:
        """The form asking for the arguments with `ask` the caller left out (None when none is missing)."""
        missing = [a for a in self.config.arguments if a.ask and a.name not in (arguments or {})]
        if not missing:
            return None
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {a.name: {"type": "string", "description": a.ask} for a in missing},
            "required": [a.name for a in missing if a.required],
        }
        message = " ".join(a.ask for a in missing if a.ask)
        return {"id": ASK_KEY, "kind": "form", "message": message, "schema": schema}

    def answered(self, arguments: dict[str, str] | None, content: dict[str, Any] | None) -> dict[str, str]:
        """The caller's arguments with the user's answer to `question` added (strings, asked arguments only)."""
        asked = {a.name for a in self.config.arguments if a.ask}
        given = {k: str(v) for k, v in (content or {}).items() if k in asked and v is not None}
        return {**given, **(arguments or {})}

    def complete(self, argument: str, prefix: str) -> list[str]:
        for a in self.config.arguments:
            if a.name == argument:
                return [v for v in a.completions if v.startswith(prefix)][:100]
        return []
