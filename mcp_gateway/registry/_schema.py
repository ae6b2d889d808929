"""JSON Schema 2020-12 handling: checking a schema, closing open objects, compiled validation."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import jsonschema_rs

from mcp_gateway.registry._redaction import KEYWORD, Redactor

__all__ = [
    "FORMATS",
    "HANDLE_SCHEMA",
    "CompiledSchema",
    "SchemaViolation",
    "check_schema",
    "close_objects",
    "or_handle",
]

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
FORMATS = (
    "date",
    "date-time",
    "duration",
    "email",
    "hostname",
    "idn-email",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "iri",
    "iri-reference",
    "json-pointer",
    "regex",
    "relative-json-pointer",
    "time",
    "uri",
    "uri-reference",
    "uri-template",
    "uuid",
)
"""The `format` values asserted (a value that breaks one is refused); a schema naming any other is refused."""
_OPENNESS_KEYWORDS = ("additionalProperties", "unevaluatedProperties", "patternProperties")
_COMBINATORS = ("allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_SINGLE = ("items", "not", "if", "then", "else", "contains", "additionalProperties", "propertyNames")


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way a JSON value breaks a schema: where in the value (a JSON pointer) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def check_schema(schema: Any) -> list[str]:
    """Problems with `schema` itself as a JSON Schema 2020-12 document (empty when it is fine)."""
    if not isinstance(schema, dict):
        return [f"must be a JSON Schema object, got {type(schema).__name__}"]
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
        return [f"$schema must be {DRAFT_2020_12!r} (JSON Schema 2020-12), got {declared!r}"]
    if (odd := _not_json(schema)) is not None:
        return [f"invalid JSON Schema at {odd[0] or '/'}: {odd[1]}"]
    try:
        jsonschema_rs.meta.validate({"$schema": DRAFT_2020_12, **schema})
    except jsonschema_rs.ValidationError as exc:
        where = _pointer(list(exc.instance_path)) or "/"
        return [f"invalid JSON Schema at {where}: {exc.message}"]
    except (ValueError, TypeError) as exc:
        return [f"invalid JSON Schema: {exc}"]
    try:
        jsonschema_rs.Draft202012Validator(schema, validate_formats=True, ignore_unknown_formats=False)
    except jsonschema_rs.ValidationError as exc:
        if exc.message.startswith("Unknown format"):
            where = _pointer(list(exc.schema_path)[:-1]) or "/"
            return [
                f"invalid JSON Schema at {where}: format {exc.instance!r} is not one the gateway checks "
                f"(it checks: {', '.join(FORMATS)})"
            ]
        return [f"invalid JSON Schema: {exc}"]
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        return [f"invalid JSON Schema: {exc}"]
    return []


def _not_json(value: Any) -> tuple[str, str] | None:
    """Where `value` holds something JSON has not (a key that is not a string, a set, a date, a lone surrogate),
    as (JSON pointer, what), found without recursion; None when it is plain JSON."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            for key, child in cast(dict[Any, Any], node).items():
                if not isinstance(key, str):
                    return _pointer(at), f"a key must be a string, got {key!r} ({type(key).__name__})"
                stack.append((child, [*at, key]))
        elif isinstance(node, list):
            stack.extend((child, [*at, i]) for i, child in enumerate(cast(list[Any], node)))
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return _pointer(at), "a string holds a lone surrogate (not valid Unicode)"
        elif node is not None and not isinstance(node, bool | int | float):
            return _pointer(at), f"{type(node).__name__} is not a JSON value (write a list or a mapping)"
    return None


def close_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` where every plain object schema that says nothing about extra properties refuses them.

    A node is closed when it declares `properties` or `type: object`, sets none of `additionalProperties`,
    `unevaluatedProperties`, `patternProperties`, and is not composed (`allOf`, `anyOf`, `oneOf`, `$ref`, `if`):
    closing a composed node would reject properties its parts allow. Sub-schemas are closed the same way.
    """
    closed = copy.deepcopy(schema)
    _close(closed)
    return closed


def _close(node: Any) -> None:
    if not isinstance(node, dict):
        return
    is_object = "properties" in node or node.get("type") == "object"
    composed = any(k in node for k in _COMBINATORS)
    if is_object and not composed and not any(k in node for k in _OPENNESS_KEYWORDS):
        node["additionalProperties"] = False
    for key in _SUBSCHEMA_MAPS:
        children = node.get(key)
        if isinstance(children, dict):
            for child in children.values():
                _close(child)
    for key in _SUBSCHEMA_LISTS:
        children = node.get(key)
        if isinstance(children, list):
            for child in children:
                _close(child)
    for key in _SUBSCHEMA_SINGLE:
        _close(node.get(key))


_KEYS_ONLY = frozenset({"required", "dependentRequired", "additionalProperties", "unevaluatedProperties"})
"""Keywords whose violation messages name keys, never values: kept whole even next to a sensitive value."""


class CompiledSchema:
    """A schema compiled once (jsonschema-rs, Rust) and used for every call; `format` is asserted. Values its
    `x-sensitive` marks describe are never in a violation's message, and `redact` hides them."""

    __slots__ = ("_redactor", "_validator", "schema")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
        self._redactor = Redactor(schema)

    @property
    def sensitive(self) -> bool:
        """Whether the schema marks any value `x-sensitive`."""
        return self._redactor.active

    def redact(self, value: Any) -> Any:
        """`value` with each value marked `x-sensitive` replaced by the marker, in a copy (`value` is unchanged)."""
        return self._redactor.redact(value)

    def violations(self, value: Any, limit: int = 50) -> list[SchemaViolation]:
        """Every violation (up to `limit`), each with its JSON pointer; empty when `value` is valid. A value the
        validator cannot walk (nested hundreds of levels, a lone surrogate) is one violation, never an error.
        A message that would quote a sensitive value (or a value holding one) says only which keyword failed."""
        try:
            if self._validator.is_valid(value):
                return []
            hidden = self._redactor.sensitive_paths(value)
            found: list[SchemaViolation] = []
            for error in self._validator.iter_errors(value):
                at = _pointer(list(error.instance_path))
                message = error.message
                keyword = next((str(p) for p in reversed(list(error.schema_path)) if isinstance(p, str)), "")
                if keyword not in _KEYS_ONLY and any(_overlap(at, s) for s in hidden):
                    message = f"the value does not satisfy {keyword!r} (not shown: it holds a value marked {KEYWORD})"
                found.append(SchemaViolation(at, message))
                if len(found) >= limit:
                    break
            return found
        except (ValueError, UnicodeError, RecursionError) as exc:
            if self._redactor.active:
                return [SchemaViolation("", f"the value cannot be checked ({type(exc).__name__})")]
            return [SchemaViolation("", f"the value cannot be checked: {exc}")]


def _overlap(at: str, sensitive: str) -> bool:
    """Whether the value at pointer `at` is, holds, or lies inside the sensitive value at `sensitive`."""
    return at == sensitive or sensitive.startswith(at + "/") or at.startswith(sensitive + "/")


HANDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The work continues: follow it with the workflow tools or the workflow:// resource",
    "properties": {
        "workflow": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string"},
                "uri": {"type": "string"},
                "message": {"type": "string"},
            },
            "required": ["id", "status", "uri"],
        }
    },
    "required": ["workflow"],
    "additionalProperties": False,
}


def or_handle(output_schema: dict[str, Any]) -> dict[str, Any]:
    """The output schema a client sees for a tool that may hand back a workflow handle: the result, or a handle.

    `$defs` (and `$schema`) move to the root so that `#/$defs/...` references still resolve; any other reference
    into the document (`#/properties/...`) is rewritten to where the declared schema now stands (`#/anyOf/0/...`)."""
    declared = _moved_refs({k: v for k, v in output_schema.items() if k not in ("$defs", "$schema")})
    wrapper: dict[str, Any] = {"type": "object", "anyOf": [declared, HANDLE_SCHEMA]}
    for key in ("$schema", "$defs"):
        if key in output_schema:
            wrapper[key] = _moved_refs(output_schema[key]) if key == "$defs" else output_schema[key]
    return wrapper


def _moved_refs(node: Any) -> Any:
    if isinstance(node, list):
        return [_moved_refs(child) for child in cast(list[Any], node)]
    if not isinstance(node, dict):
        return node
    moved: dict[str, Any] = {}
    for key, value in cast(dict[str, Any], node).items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/") and not value.startswith("#/$defs/"):
            moved[key] = "#/anyOf/0/" + value[2:]
        else:
            moved[key] = _moved_refs(value)
    return moved
