"""Checking MCP content blocks (from config files and from workers) with messages that name the field."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = ["CONTENT_BLOCK", "content_block_problem"]

CONTENT_BLOCK: TypeAdapter[types.ContentBlock] = TypeAdapter(types.ContentBlock)
_BY_TYPE: dict[str, type[BaseModel]] = {
    "text": types.TextContent,
    "image": types.ImageContent,
    "audio": types.AudioContent,
    "resource": types.EmbeddedResource,
    "resource_link": types.ResourceLink,
}


def content_block_problem(block: Any) -> str | None:
    """What is wrong with `block` as an MCP content block, or None when it is one."""
    if not isinstance(block, dict):
        return f"must be an object, got {type(block).__name__}"
    kind = block.get("type")
    model = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if model is None:
        return f"type must be one of {sorted(_BY_TYPE)}, got {kind!r}"
    try:
        model.model_validate(block)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(block)"
        return f"{where}: {first['msg']}"
    return None
