"""Load the registry from YAML files, collecting every problem with its file, tool and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, cast

import mcp.types as types
import yaml
from mcp.shared.inbound import find_invalid_x_mcp_header
from pydantic import BaseModel, ValidationError

from mcp_gateway.errors import ConfigError, ConfigProblem
from mcp_gateway.registry._model import Registry, Tool, ToolConfig
from mcp_gateway.registry._prompts import Prompt, PromptConfig, placeholders
from mcp_gateway.registry._redaction import sensitivity_problems
from mcp_gateway.registry._resources import Resource, ResourceConfig, Template, TemplateConfig
from mcp_gateway.registry._schema import CompiledSchema, check_schema, close_objects, or_handle

__all__ = ["load_registry"]

_M = TypeVar("_M", bound=BaseModel)

_FILE_KEYS = {"tools", "prompts", "resources", "resource_templates"}
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


def _read(path: Path, problems: list[ConfigProblem]) -> dict[str, list[Any]]:
    """The raw entries of one file by section (tools, prompts, ...); problems with its shape are appended."""
    name = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problems.append(ConfigProblem(name, "not valid YAML: " + " ".join(str(exc).split())))
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(name, f"cannot be read: {exc}"))
        return {}
    except RecursionError:
        problems.append(ConfigProblem(name, "nests too deeply to read (YAML nested hundreds of levels)"))
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        problems.append(
            ConfigProblem(name, f"must be a mapping with a 'tools' (or 'prompts') list, got {type(document).__name__}")
        )
        return {}
    sections: dict[str, list[Any]] = {}
    for key, entries in document.items():
        if key not in _FILE_KEYS:
            problems.append(ConfigProblem(name, f"unknown top-level key {key!r}; expected one of {sorted(_FILE_KEYS)}"))
        elif not isinstance(entries, list):
            problems.append(ConfigProblem(name, f"must be a list of {key}, got {type(entries).__name__}", key_path=key))
        else:
            sections[key] = entries
    return sections


def _build_prompt(entry: Any, index: int, source: str, problems: list[ConfigProblem]) -> Prompt | None:
    config = _validated("prompts", PromptConfig, entry, index, source, problems)
    if config is None:
        return None
    label, base = config.name, f"prompts[{index}]"
    declared = {a.name for a in config.arguments}
    before = len(problems)
    for position, message in enumerate(config.messages):
        for name in sorted(placeholders(message.content) - declared):
            problems.append(
                ConfigProblem(
                    source,
                    f"{{{name}}} names no argument of the prompt (declared: {sorted(declared)})",
                    label,
                    f"{base}.messages[{position}].content",
                    "prompt",
                )
            )
    return Prompt.of(config, source) if len(problems) == before else None


def _validated(
    kind: str, model: type[_M], entry: Any, index: int, source: str, problems: list[ConfigProblem]
) -> _M | None:
    """Validate one entry of a section (tools, prompts, resources, ...), naming every problem by key path."""
    if not isinstance(entry, dict):
        problems.append(
            ConfigProblem(source, f"must be a mapping, got {type(entry).__name__}", key_path=f"{kind}[{index}]")
        )
        return None
    entry = cast(dict[str, Any], entry)
    label = str(entry.get("uri") or entry.get("uri_template") or entry.get("name") or f"#{index}")
    try:
        return model.model_validate(entry)
    except ValidationError as exc:
        for err in exc.errors():
            key_path = _key_path((f"{kind}[{index}]", *err["loc"]))
            problems.append(ConfigProblem(source, _message(err), label, key_path, kind.removesuffix("s")))
        return None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not allowed here)"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def _build(entry: Any, index: int, source: str, problems: list[ConfigProblem]) -> Tool | None:
    config = _validated("tools", ToolConfig, entry, index, source, problems)
    if config is None:
        return None
    label, base = config.name, f"tools[{index}]"
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
        if ok:
            for message in sensitivity_problems(schema, output=key == "output_schema"):
                problems.append(ConfigProblem(source, message, label, f"{base}.{key}"))
                ok = False
    header_problem = find_invalid_x_mcp_header(config.input_schema) if ok else None
    if header_problem is not None:  # SEP-2243; the SDK's own rule, so that what loads is what it serves
        problems.append(ConfigProblem(source, header_problem, label, f"{base}.input_schema"))
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
    prompts: list[Prompt] = []
    resources: list[Resource] = []
    templates: list[Template] = []
    seen: dict[tuple[str, str], str] = {}

    def first(kind: str, name: str, source: str, key_path: str) -> bool:
        """Whether `name` is the first of its kind; a repeat is a problem naming where the first was declared."""
        if (kind, name) in seen:
            what = f"duplicate {kind} {key_path.rsplit('.', 1)[1]}, first declared in {seen[kind, name]}"
            problems.append(ConfigProblem(source, what, name, key_path, kind))
            return False
        seen[kind, name] = source
        return True

    for path in _tool_files(directory):
        sections = _read(path, problems)
        source = str(path)
        for index, entry in enumerate(sections.get("tools", [])):
            tool = _build(entry, index, source, problems)
            if tool is None:
                continue
            if tool.name in RESERVED_NAMES:
                message = f"{tool.name!r} is a built-in tool of the gateway; choose another name"
                problems.append(ConfigProblem(source, message, tool.name, f"tools[{index}].name"))
            elif first("tool", tool.name, source, f"tools[{index}].name"):
                tools.append(tool)
        for index, entry in enumerate(sections.get("prompts", [])):
            prompt = _build_prompt(entry, index, source, problems)
            if prompt and first("prompt", prompt.config.name, source, f"prompts[{index}].name"):
                prompts.append(prompt)
        for index, entry in enumerate(sections.get("resources", [])):
            resource = _validated("resources", ResourceConfig, entry, index, source, problems)
            if resource and first("resource", resource.uri, source, f"resources[{index}].uri"):
                resources.append(Resource.of(resource))
        for index, entry in enumerate(sections.get("resource_templates", [])):
            template = _validated("resource_templates", TemplateConfig, entry, index, source, problems)
            if template and first("resource template", template.name, source, f"resource_templates[{index}].name"):
                templates.append(Template.of(template))
    if problems:
        raise ConfigError(problems)
    return Registry.of(tools, prompts, resources, templates)
