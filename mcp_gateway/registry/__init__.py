"""The tool registry: tools declared in YAML under `config/`, checked at load, compiled for fast validation."""

from mcp_gateway.registry._loader import load_registry
from mcp_gateway.registry._model import Registry, Tool, ToolConfig
from mcp_gateway.registry._schema import SchemaViolation, close_objects

__all__ = ["Registry", "SchemaViolation", "Tool", "ToolConfig", "close_objects", "load_registry"]
