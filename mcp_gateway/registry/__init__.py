"""The tool registry: tools declared in YAML under `config/`, checked at load, compiled for fast validation."""

from mcp_gateway.registry._loader import RESERVED_NAMES, load_registry
from mcp_gateway.registry._model import Registry, Tool, ToolConfig
from mcp_gateway.registry._prompts import Prompt, PromptError
from mcp_gateway.registry._redaction import MARKER, holds_marker
from mcp_gateway.registry._schema import HANDLE_SCHEMA, CompiledSchema, SchemaViolation, check_schema, close_objects

__all__ = [
    "HANDLE_SCHEMA",
    "MARKER",
    "RESERVED_NAMES",
    "CompiledSchema",
    "Prompt",
    "PromptError",
    "Registry",
    "SchemaViolation",
    "Tool",
    "ToolConfig",
    "check_schema",
    "close_objects",
    "holds_marker",
    "load_registry",
]
