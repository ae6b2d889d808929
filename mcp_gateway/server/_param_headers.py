"""Checking `Mcp-Param-*` headers against the arguments they mirror (SEP-2243, streamable HTTP, 2026-07-28).

A value is sent literally, or Base64-encoded as `=?base64?<data>?=` (for non-ASCII text or surrounding
whitespace). An argument present in the body must come with its header, and the two must agree: otherwise the
call is refused (-32020, HTTP 400) before anything is recorded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from mcp_gateway.registry import Tool

__all__ = ["param_header_problem"]

_PREFIX, _SUFFIX = "=?base64?", "?="


def _decoded(raw: str) -> str:
    if not (raw.startswith(_PREFIX) and raw.endswith(_SUFFIX) and len(raw) >= len(_PREFIX) + len(_SUFFIX)):
        return raw  # no complete wrapper: a literal value
    try:
        return base64.b64decode(raw[len(_PREFIX) : -len(_SUFFIX)], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{raw!r} is not valid Base64 of UTF-8 text ({exc})") from None


def _as_header(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def param_header_problem(tool: Tool, arguments: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """What is wrong with the request's `Mcp-Param-*` headers for this call, or None."""
    for prop, name in tool.param_headers.items():
        value = arguments.get(prop)
        if value is None:
            continue  # omitted or null: no header is expected
        raw = headers.get(f"mcp-param-{name.lower()}")
        if raw is None:
            return f"header Mcp-Param-{name} is missing, but argument {prop!r} is in the request body"
        try:
            sent = _decoded(raw.strip())
        except ValueError as exc:
            return f"header Mcp-Param-{name}: {exc}"
        if sent != _as_header(value):
            return f"header Mcp-Param-{name} is {sent!r}, but argument {prop!r} is {_as_header(value)!r}"
    return None
