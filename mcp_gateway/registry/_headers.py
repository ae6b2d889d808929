"""`x-mcp-header` annotations (SEP-2243): a tool argument mirrored into an HTTP header, `Mcp-Param-<name>`.

On a property of a tool's input schema, `"x-mcp-header": "Region"` asks clients to send the argument's value
as `Mcp-Param-Region` too, so that HTTP intermediaries can route on it. Only string, integer and boolean
properties at the top level may carry one; names are HTTP tokens (no spaces, colons or control characters),
unique regardless of case.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ANNOTATION", "param_headers"]

ANNOTATION = "x-mcp-header"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PRIMITIVE = {"string", "integer", "boolean"}


def param_headers(input_schema: dict[str, Any]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """`{property: header name}` for the annotated properties, and the problems as (key path, message)."""
    found: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    properties = input_schema.get("properties")
    for prop, schema in (properties or {}).items() if isinstance(properties, dict) else ():
        if not isinstance(schema, dict) or ANNOTATION not in schema:
            continue
        where = f"properties.{prop}.{ANNOTATION}"
        name = schema[ANNOTATION]
        if not isinstance(name, str) or not _TOKEN.match(name):
            problems.append((where, f"{name!r} is not a header name (ASCII letters, digits and !#$%&'*+.^_`|~-)"))
            continue
        kind = schema.get("type")
        if kind not in _PRIMITIVE:
            problems.append((where, f"only string, integer and boolean properties may carry one, not {kind!r}"))
            continue
        if name.lower() in seen:
            problems.append((where, f"{name!r} is also the header of property {seen[name.lower()]!r} (case aside)"))
            continue
        seen[name.lower()] = prop
        found[prop] = name
    return found, problems
