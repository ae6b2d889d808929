"""Sensitive values in a tool's arguments: `x-sensitive: true` on a node of the input schema marks the values that
node describes (a property, every item of an array, a `$defs` entry wherever a `$ref` reaches it), and the gateway
keeps, shows and logs those arguments only with each such value replaced by `MARKER`.

Conservative by design: a value is sensitive when any schema that may apply to it marks it (every branch of
`anyOf`/`oneOf`/`allOf`, `if`/`then`/`else`, `dependentSchemas`; local `$ref`s followed), so a doubt redacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

__all__ = ["KEYWORD", "MARKER", "Redactor", "holds_marker", "sensitivity_problems"]

KEYWORD = "x-sensitive"
MARKER = "[redacted]"
"""What a sensitive value becomes wherever the gateway keeps or shows the arguments."""

_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SINGLES = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
)
_SAME_VALUE_LISTS = ("allOf", "anyOf", "oneOf")
"""Sub-schemas that apply to the very value their parent applies to (with the single ones below and `$ref`)."""
_SAME_VALUE_SINGLES = ("if", "then", "else", "not")


def _escape(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _schema_nodes(schema: Any) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """Every schema object in `schema` (the root, and each sub-schema at a schema position, never inside `enum`,
    `const`, `default` or `examples` values), with its JSON pointer and whether it lies under `propertyNames`;
    found without recursion."""
    stack: list[tuple[Any, str, bool]] = [(schema, "", False)]
    while stack:
        node, at, names = stack.pop()
        if not isinstance(node, dict):
            continue
        node = cast(dict[str, Any], node)
        yield node, at, names
        for key in _MAPS:
            children = node.get(key)
            if isinstance(children, dict):
                for name, child in cast(dict[str, Any], children).items():
                    stack.append((child, f"{at}/{key}/{_escape(name)}", names))
        for key in _LISTS:
            children = node.get(key)
            if isinstance(children, list):
                for i, child in enumerate(cast(list[Any], children)):
                    stack.append((child, f"{at}/{key}/{i}", names))
        for key in _SINGLES:
            if key in node:
                stack.append((node[key], f"{at}/{key}", names or key == "propertyNames"))


def sensitivity_problems(schema: dict[str, Any], *, output: bool = False) -> list[str]:
    """What is wrong with the `x-sensitive` marks of a tool's schema (empty when nothing is). A mark must be a
    boolean; it may not be on the root (mark the properties that hold secrets), nor under `propertyNames` (keys
    are never redacted), nor anywhere in an output schema (results are not redacted)."""
    problems: list[str] = []
    for node, at, under_names in _schema_nodes(schema):
        if KEYWORD not in node:
            continue
        mark = node[KEYWORD]
        where = at or "/"
        if not isinstance(mark, bool):
            problems.append(f"at {where}: {KEYWORD} must be true or false, got {mark!r}")
        elif not mark:
            continue
        elif output:
            problems.append(
                f"at {where}: {KEYWORD} is read in input_schema only (results are not redacted; the worker must "
                "not return secrets)"
            )
        elif not at:
            problems.append(f"at /: {KEYWORD} cannot mark the whole arguments; mark the properties that hold secrets")
        elif under_names:
            problems.append(f"at {where}: {KEYWORD} under propertyNames marks keys, and keys are never redacted")
    return problems


def holds_marker(value: Any) -> bool:
    """Whether `value` holds `MARKER` anywhere (arguments kept redacted, which cannot be sent to a worker again)."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if node == MARKER:
            return True
        if isinstance(node, dict):
            stack.extend(cast(dict[str, Any], node).values())
        elif isinstance(node, list):
            stack.extend(cast(list[Any], node))
    return False


class Redactor:
    """The `x-sensitive` marks of one schema, ready to apply to values of it. `active` is False for a schema that
    marks nothing: then `redact` hands back its input and costs nothing."""

    __slots__ = ("_root", "active")

    def __init__(self, schema: dict[str, Any]) -> None:
        self._root = schema
        self.active = any(node.get(KEYWORD) is True for node, _, _ in _schema_nodes(schema))

    def redact(self, value: Any) -> Any:
        """A copy of `value` with each sensitive value replaced by `MARKER`; `value` itself is never changed (and is
        handed back as it is when the schema marks nothing)."""
        if not self.active:
            return value
        return self._walked(value, [])

    def sensitive_paths(self, value: Any) -> list[str]:
        """The JSON pointers of the sensitive values in `value` (the places `redact` would replace)."""
        found: list[str] = []
        if self.active:
            self._walked(value, found)
        return found

    def _walked(self, value: Any, found: list[str]) -> Any:
        try:
            return self._walk(value, [self._root], "", found)
        except RecursionError:  # nested past what can be walked: nothing of it is shown
            if isinstance(value, dict):
                found.extend(f"/{_escape(k)}" for k in cast(dict[str, Any], value))
                return dict.fromkeys(cast(dict[str, Any], value), MARKER)
            found.append("")
            return MARKER

    def _expand(self, nodes: list[Any]) -> list[dict[str, Any]]:
        """The schemas that apply to the same value as `nodes`: themselves, their combinators' branches, and what
        their local `$ref`s point at (each once)."""
        out: list[dict[str, Any]] = []
        seen: set[int] = set()
        stack = list(nodes)
        while stack:
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            node = cast(dict[str, Any], node)
            seen.add(id(node))
            out.append(node)
            for key in _SAME_VALUE_LISTS:
                branches = node.get(key)
                if isinstance(branches, list):
                    stack.extend(cast(list[Any], branches))
            stack.extend(node[key] for key in _SAME_VALUE_SINGLES if key in node)
            dependent = node.get("dependentSchemas")
            if isinstance(dependent, dict):
                stack.extend(cast(dict[str, Any], dependent).values())
            for key in ("$ref", "$dynamicRef"):
                target = self._resolve(node.get(key))
                if target is not None:
                    stack.append(target)
        return out

    def _resolve(self, ref: Any) -> Any:
        """The sub-schema a local reference (`#`, `#/$defs/name`, any `#/json/pointer`) names; None otherwise."""
        if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and not ref.startswith("#/")):
            return None
        node: Any = self._root
        for raw in ref[2:].split("/") if len(ref) > 1 else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = cast(dict[str, Any], node)[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(cast(list[Any], node)):
                node = cast(list[Any], node)[int(token)]
            else:
                return None
        return node

    def _walk(self, value: Any, nodes: list[Any], at: str, found: list[str]) -> Any:
        schemas = self._expand(nodes)
        if at and any(s.get(KEYWORD) is True for s in schemas):
            found.append(at)
            return MARKER
        if isinstance(value, dict):
            return {
                key: self._walk(child, _property_schemas(schemas, key), f"{at}/{_escape(key)}", found)
                for key, child in cast(dict[str, Any], value).items()
            }
        if isinstance(value, list):
            return [
                self._walk(child, _item_schemas(schemas, i), f"{at}/{i}", found)
                for i, child in enumerate(cast(list[Any], value))
            ]
        return value


def _matches(pattern: str, key: str) -> bool:
    try:
        return re.search(pattern, key) is not None
    except re.error:  # an ECMA-262 pattern Python cannot read: assume it may apply (a doubt redacts)
        return True


def _property_schemas(schemas: list[dict[str, Any]], key: str) -> list[Any]:
    """The sub-schemas of `schemas` that apply to the value of property `key`."""
    found: list[Any] = []
    for schema in schemas:
        properties = schema.get("properties")
        patterns = schema.get("patternProperties")
        named = isinstance(properties, dict) and key in properties
        if named:
            found.append(cast(dict[str, Any], properties)[key])
        matched = False
        if isinstance(patterns, dict):
            for pattern, child in cast(dict[str, Any], patterns).items():
                if _matches(pattern, key):
                    found.append(child)
                    matched = True
        if not named and not matched:
            found.extend(schema[k] for k in ("additionalProperties", "unevaluatedProperties") if k in schema)
    return found


def _item_schemas(schemas: list[dict[str, Any]], index: int) -> list[Any]:
    """The sub-schemas of `schemas` that apply to the array item at `index` (`contains` counts for every item)."""
    found: list[Any] = []
    for schema in schemas:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and index < len(cast(list[Any], prefix)):
            found.append(cast(list[Any], prefix)[index])
        else:
            found.extend(schema[k] for k in ("items", "unevaluatedItems") if k in schema)
        if "contains" in schema:
            found.append(schema["contains"])
    return found
