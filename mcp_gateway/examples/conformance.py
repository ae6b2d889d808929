"""The conformance domain: the fixtures the official MCP conformance suite calls, served through the bus like any
domain tool (their config: `config/conformance/`). Each returns what the suite's scenario expects."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

from mcp_gateway_worker import ToolContext, ToolFailure, ToolResult, Worker
from mcp_gateway_worker.contract import content

__all__ = ["worker"]

worker = Worker("conformance")

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


def _wav() -> bytes:
    """A tenth of a second of silence, 8 kHz, 8-bit mono."""
    samples = b"\x80" * 800
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(samples),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        8000,
        8000,
        1,
        8,
        b"data",
        len(samples),
    )
    return header + samples


@worker.tool("test_simple_text", subject="conformance.simple_text")
async def simple_text(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.text("This is a simple text response for testing.")])


@worker.tool("test_image_content", subject="conformance.image")
async def image(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.image(PNG, "image/png")])


@worker.tool("test_audio_content", subject="conformance.audio")
async def audio(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.audio(_wav(), "audio/wav")])


@worker.tool("test_embedded_resource", subject="conformance.embedded")
async def embedded(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    resource = content.embedded(
        "test://embedded-resource", text="This is an embedded resource content.", mime_type="text/plain"
    )
    return ToolResult([resource])


@worker.tool("test_multiple_content_types", subject="conformance.mixed")
async def mixed(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    data = json.dumps({"test": "data", "value": 123})
    return ToolResult(
        [
            content.text("Multiple content types test:"),
            content.image(PNG, "image/png"),
            content.embedded("test://mixed-content-resource", text=data, mime_type="application/json"),
        ]
    )


@worker.tool("test_error_handling", subject="conformance.error")
async def error(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raise ToolFailure("test_error", "This tool intentionally returns an error for testing")


@worker.tool("test_tool_with_progress", subject="conformance.progress")
async def progress(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    for value in (0, 50, 100):
        await ctx.progress(value, 100, f"progress {value}")
    return ToolResult([content.text("Progress test completed")])


@worker.tool("test_tool_with_logging", subject="conformance.logging")
async def logging_tool(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.log("info", message, "conformance")
        await asyncio.sleep(0.05)
    return ToolResult([content.text("Logging test completed")])


@worker.tool("test_elicitation", subject="conformance.elicitation")
async def elicitation(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    answer = await ctx.ask(args["message"], schema)
    return ToolResult([content.text(f"User response: action={answer.action}, content={json.dumps(answer.content)}")])


_DEFAULTS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
    },
}

_ENUMS = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


async def _elicit(ctx: ToolContext, message: str, schema: dict[str, Any]) -> ToolResult:
    answer = await ctx.ask(message, schema)
    text = f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}"
    return ToolResult([content.text(text)])


@worker.tool("test_elicitation_sep1034_defaults", subject="conformance.elicitation_defaults")
async def elicitation_defaults(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return await _elicit(ctx, "Please review and update the form fields with defaults", _DEFAULTS)


@worker.tool("test_elicitation_sep1330_enums", subject="conformance.elicitation_enums")
async def elicitation_enums(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return await _elicit(ctx, "Please select options from the enum fields", _ENUMS)


@worker.tool("json_schema_2020_12_tool", subject="conformance.json_schema")
async def json_schema(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.text(f"Received: {json.dumps(args)}")])


@worker.resource(subject="conformance.template_data")
async def template_data(uri: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"id": variables["id"], "templateTest": True, "data": f"Data for ID: {variables['id']}"}
    return [content.text_contents(uri, json.dumps(body), "application/json")]


@worker.tool("test_reconnection", subject="conformance.reconnection")
async def reconnection(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    await asyncio.sleep(0.5)  # the gateway closes the client's stream meanwhile (poll_after); it reconnects
    return ToolResult([content.text("Reconnection test completed")])


@worker.tool("test_sampling", subject="conformance.sampling")
async def sampling(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    messages = [{"role": "user", "content": {"type": "text", "text": args["prompt"]}}]
    sampled = await ctx.sample(messages, max_tokens=100)
    reply = sampled.get("content", {})
    text = reply.get("text", "") if isinstance(reply, dict) else json.dumps(reply)
    return ToolResult([content.text(f"LLM response: {text}")])


# Input-required fixtures of the 2026-07-28 suite (SEP-2322): the worker asks; the gateway returns the question as an
# input-required result keyed by the worker's key, and the client's retried call carries the answer back.


@worker.tool("test_input_required_result_elicitation", subject="conformance.ir_elicitation")
async def ir_elicitation(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    answer = await ctx.ask("What is your name?", schema, key="user_name")
    return ToolResult([content.text(f"Hello, {(answer.content or {}).get('name', 'stranger')}!")])


@worker.tool("test_input_required_result_sampling", subject="conformance.ir_sampling")
async def ir_sampling(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    question = [{"role": "user", "content": {"type": "text", "text": "What is the capital of France?"}}]
    sampled = await ctx.sample(question, max_tokens=100, key="capital_question")
    reply = sampled.get("content", {})
    return ToolResult([content.text(reply.get("text", "") if isinstance(reply, dict) else json.dumps(reply))])


@worker.tool("test_input_required_result_multi_round", subject="conformance.ir_multi_round")
async def ir_multi_round(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    first = await ctx.ask("Step 1: your name?", schema, key="step1")
    second = await ctx.ask(
        "Step 2: your city?", {"type": "object", "properties": {"city": {"type": "string"}}}, key="step2"
    )
    return ToolResult([content.text(f"Rounds done: {json.dumps(first.content)} {json.dumps(second.content)}")])


@worker.tool("test_input_required_result_request_state", subject="conformance.ir_request_state")
@worker.tool("test_input_required_result_tampered_state", subject="conformance.ir_request_state")
async def ir_request_state(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    answer = await ctx.ask("Confirm?", schema, key="confirm")
    # The gateway accepted the retried call's requestState (it names this caller's workflow) before this answer.
    return ToolResult([content.text(f"state-ok: {answer.action}")])


@worker.tool("test_input_required_result_list_roots", subject="conformance.ir_list_roots")
async def ir_list_roots(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    roots = await ctx.roots(key="client_roots")
    return ToolResult([content.text(f"Roots: {', '.join(str(r.get('uri')) for r in roots) or 'none'}")])


_NAME = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
_GREETING = [{"role": "user", "content": {"type": "text", "text": "Generate a greeting"}}]


def _sampled_text(sampled: dict[str, Any]) -> str:
    reply = sampled.get("content", {})
    return reply.get("text", "") if isinstance(reply, dict) else json.dumps(reply)


@worker.tool("test_input_required_result_multiple_inputs", subject="conformance.ir_multiple_inputs")
async def ir_multiple_inputs(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    # Asked at the same moment, the three questions reach the client in one input-required round.
    name, greeting, roots = await asyncio.gather(
        ctx.ask("What is your name?", _NAME, key="user_name"),
        ctx.sample(_GREETING, max_tokens=50, key="greeting"),
        ctx.roots(key="client_roots"),
    )
    who = (name.content or {}).get("name", "stranger")
    return ToolResult([content.text(f"{_sampled_text(greeting)} {who} ({len(roots)} roots)")])


@worker.tool("test_input_required_result_capabilities", subject="conformance.ir_capabilities")
async def ir_capabilities(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    # Asks only what the calling client can answer (its declared capabilities reach the worker with the command).
    asks: list[Any] = []
    if ctx.can_ask("sampling"):
        asks.append(ctx.sample(_GREETING, max_tokens=50, key="greeting"))
    if ctx.can_ask("elicitation"):
        asks.append(ctx.ask("What is your name?", _NAME, key="user_name"))
    answers = await asyncio.gather(*asks)
    return ToolResult([content.text(f"Asked {len(answers)} question(s) the client can answer")])


@worker.tool("test_missing_capability", subject="conformance.sampling_required")
async def sampling_required(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    # The gateway refuses clients that cannot sample before the command is written (`requires: [sampling]`).
    return ToolResult([content.text(_sampled_text(await ctx.sample(_GREETING, max_tokens=50)))])


@worker.tool("test_custom_headers", subject="conformance.custom_headers")
async def custom_headers(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.text(f"Routed to {args['region']}: {json.dumps(args, sort_keys=True)}")])


# Tasks-extension fixtures (SEP-2663).


@worker.tool("greet", subject="conformance.greet")
async def greet(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    return ToolResult([content.text(f"Hello, {args['name']}!")])


@worker.tool("slow_compute", subject="conformance.slow_compute")
async def slow_compute(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    await asyncio.sleep(float(args.get("seconds", 1)))  # cancellable: the gateway stops it on tasks/cancel
    return ToolResult([content.text(f"Computed {args.get('label', 'result')} after {args.get('seconds', 1)}s")])


@worker.tool("failing_job", subject="conformance.failing_job")
async def failing_job(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raise ToolFailure("job_failed", "This job always fails")


@worker.tool("confirm_delete", subject="conformance.confirm_delete")
async def confirm_delete(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    answer = await ctx.ask(
        f"Delete {args.get('filename', 'the file')}?",
        {"type": "object", "properties": {"confirm": {"type": "boolean"}}},
        key="confirm",
    )
    return ToolResult([content.text(f"Delete {answer.action}ed")])


@worker.tool("multi_input", subject="conformance.multi_input")
async def multi_input(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    # Two questions pending at once: the task shows both, and stays input_required until both are answered.
    name, confirm = await asyncio.gather(
        ctx.ask("Your name?", {"type": "object", "properties": {"name": {"type": "string"}}}, key="name"),
        ctx.ask("Go ahead?", {"type": "object", "properties": {"confirm": {"type": "boolean"}}}, key="confirm"),
    )
    return ToolResult([content.text(f"Got {json.dumps(name.content)} and {json.dumps(confirm.content)}")])


@worker.tool("protocol_error_job", subject="conformance.protocol_error_job")
async def protocol_error_job(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raise RuntimeError("the handler crashed")  # not a ToolFailure: the task fails with an internal error


@worker.tool("test_tool_with_task", subject="conformance.tool_with_task")
async def tool_with_task(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    # Mode auto: the question comes back as an input-required round; after the answer the work outlasts the
    # tool's timeout, so the retried call hands back a task, whose result names the user.
    answer = await ctx.ask("What is your name?", _NAME, key="user_name")
    await asyncio.sleep(3)
    return ToolResult([content.text(f"Hello, {(answer.content or {}).get('name', 'stranger')}! (done as a task)")])
