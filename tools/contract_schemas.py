"""Write the JSON Schemas of the bus contract's envelopes into docs/schemas/, generated from its pydantic models.

    .venv/bin/python tools/contract_schemas.py           # (re)write docs/schemas/*.schema.json
    .venv/bin/python tools/contract_schemas.py --check   # exit 1, naming each file that differs from the models

The models (worker/mcp_gateway_worker/contract/_envelopes.py) are the contract's executable form; these files
are for workers in other languages. Each is the model's JSON Schema (draft 2020-12, validation mode: what the
decoders accept), with the field docstrings as descriptions and the rules the models check in code written out
as schema (`RULES`): what each event kind needs, the reserved question id `approval`, a question's `schema`
being an object schema, a `sampling` question's params. The one rule left to the reader: the ids of an event's
`requests` must differ. The content blocks of a `completed` event are MCP's: their schema is generated from the
MCP SDK's models, which the gateway checks them with (mcp_gateway/registry/_content.py), `type` required.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import itertools
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import mcp.types as mcp_types
from mcp_gateway_worker.contract import (
    CONTRACT_VERSION,
    Caller,
    Cancel,
    Command,
    ErrorInfo,
    Event,
    InputAnswer,
    InputRequest,
    ResourceRead,
    ResourceReply,
)
from pydantic import BaseModel, TypeAdapter

__all__ = ["CONTENT_BLOCK", "ENVELOPES", "FOLDER", "RULES", "check", "render", "write"]

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "schemas"

ENVELOPES: dict[str, tuple[type[BaseModel], str]] = {
    "command.schema.json": (Command, "gateway -> worker, JetStream `<prefix>.cmd.<tool subject>`"),
    "event.schema.json": (
        Event,
        "worker -> gateway, JetStream, the command's `reply_subject`: `<prefix>.evt.<tool subject>.<workflow id>`",
    ),
    "cancel.schema.json": (Cancel, "gateway -> workers, core NATS `<prefix>.ctl.cancel.<workflow id>`"),
    "input-answer.schema.json": (
        InputAnswer,
        "gateway -> worker, core NATS `<prefix>.ctl.input.<tool subject>.<workflow id>`",
    ),
    "resource-read.schema.json": (ResourceRead, "gateway -> worker, core NATS request on `<prefix>.res.<subject>`"),
    "resource-reply.schema.json": (ResourceReply, "worker -> gateway, the reply to a resource read"),
}
"""One file per envelope: the model, and where it travels."""

CONTENT_BLOCK = "content-block.schema.json"
"""One item of a `completed` event's `content`: an MCP content block (text, image, audio, resource,
resource_link), from the MCP SDK's models."""
_BLOCKS = ["TextContent", "ImageContent", "AudioContent", "ResourceLink", "EmbeddedResource"]

_MODELS: list[type[BaseModel]] = [
    Caller,
    Cancel,
    Command,
    ErrorInfo,
    Event,
    InputAnswer,
    InputRequest,
    ResourceRead,
    ResourceReply,
]

Schema = dict[str, Any]


def _kind_needs(kind: str, then: Schema) -> Schema:
    return {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": then}


def _present(field: str, schema: Schema) -> Schema:
    """`field` given and not null (the models treat a null as absent)."""
    return {"required": [field], "properties": {field: schema}}


def _event_rules(schema: Schema) -> None:
    """Event.model_post_init: what each kind needs."""
    schema["allOf"] = [
        _kind_needs(
            "completed",
            {"anyOf": [_present("result", {"type": "object"}), _present("content", {"type": "array"})]},
        ),
        _kind_needs("failed", _present("error", {"type": "object"})),
        _kind_needs("progress", _present("progress", {"type": "number"})),
        _kind_needs("log", {"allOf": [_present("level", {"type": "string"}), _present("message", {"type": "string"})]}),
        _kind_needs("input_required", _present("requests", {"type": "array", "minItems": 1})),
    ]
    blocks = schema["properties"]["content"]["anyOf"][0]["items"]
    blocks["description"] = f"An MCP content block: see {CONTENT_BLOCK}."


def _question_rules(schema: Schema) -> None:
    """InputRequest.model_post_init: `approval` is the gateway's, `schema` an object schema, sampling params."""
    properties = schema["properties"]
    properties["id"]["not"] = {"const": "approval"}
    properties["schema"]["anyOf"][0] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"const": "object"}},
        "additionalProperties": True,
    }
    schema["allOf"] = [
        _kind_needs(
            "sampling",
            _present(
                "sampling",
                {
                    "type": "object",
                    "required": ["messages", "maxTokens"],
                    "properties": {"messages": {"type": "array"}, "maxTokens": {"type": "integer"}},
                },
            ),
        )
    ]


def _command_rules(schema: Schema) -> None:
    """Command.model_post_init: from version 2 on (`v` absent is 2), `subject` is required."""
    schema["if"] = {"required": ["v"], "properties": {"v": {"const": 1}}}
    schema["else"] = _present("subject", {"type": "string"})


RULES: dict[str, Callable[[Schema], None]] = {
    "Command": _command_rules,
    "Event": _event_rules,
    "InputRequest": _question_rules,
}
"""The checks the models make in code (model_post_init), by model name, written into its schema."""


def _field_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstrings written under fields (`name: type = ...` then `\"\"\"...\"\"\"`), by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    body = cast(ast.ClassDef, tree.body[0]).body
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _describe(schema: Schema, model: type[BaseModel]) -> None:
    docs = _field_docs(model)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if name in docs and key in schema["properties"]:
            schema["properties"][key].setdefault("description", docs[name])


def _finish(schema: Schema, model: type[BaseModel]) -> None:
    _describe(schema, model)
    rule = RULES.get(model.__name__)
    if rule is not None:
        rule(schema)


def schema_of(model: type[BaseModel], where: str, filename: str) -> Schema:
    generated = copy.deepcopy(model.model_json_schema(by_alias=True, mode="validation"))
    by_name = {m.__name__: m for m in _MODELS}
    _finish(generated, model)
    for name, sub in cast(dict[str, Schema], generated.get("$defs", {})).items():
        if name in by_name:
            _finish(sub, by_name[name])
    head: Schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:mcp-gateway:contract:v{CONTRACT_VERSION}:{filename.removesuffix('.schema.json')}",
        "$comment": f"Generated by tools/contract_schemas.py from mcp_gateway_worker.contract.{model.__name__}; "
        f"do not edit. Travels {where}.",
    }
    return {**head, **generated}


def content_block_schema() -> Schema:
    generated = copy.deepcopy(TypeAdapter(mcp_types.ContentBlock).json_schema(by_alias=True, mode="validation"))
    for name in _BLOCKS:  # the gateway picks the block's model by its `type`: it must be there
        block = generated["$defs"][name]
        block["required"] = ["type", *block.get("required", [])]
    head: Schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:mcp-gateway:contract:v{CONTRACT_VERSION}:content-block",
        "$comment": "Generated by tools/contract_schemas.py from the MCP SDK's mcp.types.ContentBlock; do not edit. "
        "One item of a `completed` event's `content`.",
        "title": "ContentBlock",
        "description": inspect.cleandoc(CONTENT_BLOCK_DOC),
    }
    return {**head, **generated}


CONTENT_BLOCK_DOC = """An MCP content block, as MCP writes it: `{"type": "text", "text"}`, `{"type": "image" | "audio",
    "data": <base64>, "mimeType"}`, `{"type": "resource", "resource": {"uri", "mimeType", "text" | "blob"}}`,
    `{"type": "resource_link", "uri", "name"}`. A block that is not one fails the workflow with code
    `invalid_content`."""


def render() -> dict[str, str]:
    """Every schema file's text, by file name."""
    schemas = {filename: schema_of(model, where, filename) for filename, (model, where) in ENVELOPES.items()}
    schemas[CONTENT_BLOCK] = content_block_schema()
    return {name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n" for name, schema in schemas.items()}


def check(folder: Path = FOLDER) -> list[str]:
    """The files that differ from the models: missing, changed, or left over from an envelope gone."""
    wanted = render()
    differ = [name for name, text in wanted.items() if _read(folder / name) != text]
    stale = sorted(p.name for p in folder.glob("*.schema.json") if p.name not in wanted)
    return differ + stale


def write(folder: Path = FOLDER) -> list[str]:
    """Write each schema file that differs, remove left-over ones; what was done, a line each."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    done: list[str] = []
    for name, text in wanted.items():
        if _read(folder / name) != text:
            (folder / name).write_text(text, encoding="utf-8")
            done.append(f"wrote {folder / name}")
    for path in sorted(folder.glob("*.schema.json")):
        if path.name not in wanted:
            path.unlink()
            done.append(f"removed {path}")
    return done


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    parser.add_argument("--folder", type=Path, default=FOLDER, help=f"where the schemas are (default {FOLDER})")
    args = parser.parse_args(argv)
    if args.check:
        differ = check(args.folder)
        for name in differ:
            print(f"{args.folder / name}: differs from the contract's models", file=sys.stderr)
        if differ:
            print("run: .venv/bin/python tools/contract_schemas.py", file=sys.stderr)
        return 1 if differ else 0
    for line in write(args.folder):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
