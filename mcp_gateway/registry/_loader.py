"""Load the registry from YAML files, collecting every problem with its file, tool and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp.types as types
import yaml
from pydantic import ValidationError

from mcp_gateway.errors import ConfigError, ConfigProblem
from mcp_gateway.registry._model import Registry, Tool, ToolConfig
from mcp_gateway.registry._schema import CompiledSchema, check_schema, close_objects, or_handle

__all__ = ["load_registry"]

_FILE_KEYS = {"tools"}
RESERVED_NAMES = frozenset(
    {"workflow_status", "workflow_result", "workflow_cancel", "workflow_respond", "workflow_list"}
)
"""The gateway's built-in tools (for clients without the tasks extension)."""


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _tool_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _read(path: Path, problems: list[ConfigProblem]) -> list[Any]:
    """The raw tool entries of one file; problems with the file's shape are appended."""
    name = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problems.append(ConfigProblem(name, "not valid YAML: " + " ".join(str(exc).split())))
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(name, f"cannot be read: {exc}"))
        return []
    if document is None:
        return []
    if not isinstance(document, dict):
        problems.append(ConfigProblem(name, f"must be a mapping with a 'tools' list, got {type(document).__name__}"))
        return []
    for key in document:
        if key not in _FILE_KEYS:
            problems.append(ConfigProblem(name, f"unknown top-level key {key!r}; expected one of {sorted(_FILE_KEYS)}"))
    entries = document.get("tools", [])
    if not isinstance(entries, list):
        problems.append(ConfigProblem(name, f"must be a list of tools, got {type(entries).__name__}", key_path="tools"))
        return []
    return entries


def _build(entry: Any, index: int, source: str, problems: list[ConfigProblem]) -> Tool | None:
    label = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{index}"
    base = f"tools[{index}]"
    try:
        config = ToolConfig.model_validate(entry)
    except ValidationError as exc:
        for err in exc.errors():
            message = (
                "unknown key (not allowed here)"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            if err["type"] == "missing":
                message = "required key is missing"
            problems.append(ConfigProblem(source, message, label, _key_path((base, *err["loc"]))))
        return None
    ok = True
    schemas: dict[str, dict[str, Any] | None] = {
        "input_schema": config.input_schema,
        "output_schema": config.output_schema,
    }
    for key, schema in schemas.items():
        if schema is None:
            continue
        for message in check_schema(schema):
            problems.append(ConfigProblem(source, message, label, f"{base}.{key}"))
            ok = False
        if ok and schema.get("type") != "object":
            problems.append(
                ConfigProblem(source, 'must have "type": "object" at its root (MCP)', label, f"{base}.{key}")
            )
            ok = False
    if not ok:
        return None
    served_input = close_objects(config.input_schema) if config.strict else config.input_schema
    served_output = None
    if config.output_schema is not None:
        served_output = close_objects(config.output_schema) if config.strict else config.output_schema
    annotations = None
    if config.annotations is not None:
        annotations = types.ToolAnnotations.model_validate(
            config.annotations.model_dump(exclude_none=True, by_alias=True)
        )
    listed_output = served_output
    if served_output is not None and config.mode != "sync":
        listed_output = or_handle(served_output)
    listing = types.Tool(
        name=config.name,
        title=config.title,
        description=config.description,
        input_schema=served_input,
        output_schema=listed_output,
        annotations=annotations,
        _meta={"io.mcp-gateway/version": config.version},
    )
    return Tool(
        config=config,
        source=source,
        input=CompiledSchema(served_input),
        output=CompiledSchema(served_output) if served_output is not None else None,
        listing=listing,
    )


def load_registry(directory: Path) -> Registry:
    """Load every `*.yaml` under `directory` (recursively). Raises `ConfigError` listing every problem."""
    problems: list[ConfigProblem] = []
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), "tool config folder does not exist")])
    tools: list[Tool] = []
    seen: dict[str, str] = {}
    for path in _tool_files(directory):
        for index, entry in enumerate(_read(path, problems)):
            if not isinstance(entry, dict):
                problems.append(
                    ConfigProblem(
                        str(path), f"must be a mapping, got {type(entry).__name__}", key_path=f"tools[{index}]"
                    )
                )
                continue
            tool = _build(entry, index, str(path), problems)
            if tool is None:
                continue
            if tool.name in RESERVED_NAMES:
                problems.append(
                    ConfigProblem(
                        str(path),
                        f"{tool.name!r} is a built-in tool of the gateway; choose another name",
                        tool.name,
                        f"tools[{index}].name",
                    )
                )
                continue
            if tool.name in seen:
                problems.append(
                    ConfigProblem(
                        str(path),
                        f"duplicate tool name, first declared in {seen[tool.name]}",
                        tool.name,
                        f"tools[{index}].name",
                    )
                )
                continue
            seen[tool.name] = str(path)
            tools.append(tool)
    if problems:
        raise ConfigError(problems)
    return Registry.of(tools)
