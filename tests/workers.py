"""Workers for the tools in tests/tools: count executions, so tests can prove nothing ran twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from mcp_gateway_worker import ToolContext, ToolFailure, ToolResult, Worker
from mcp_gateway_worker.contract import content

executions: Counter[str] = Counter()
gates: dict[str, asyncio.Event] = {}

worker = Worker("testing", max_concurrency=32)


@worker.tool("steps", subject="testing.steps")
async def steps(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    for i in range(1, args["count"] + 1):
        await ctx.progress(i, args["count"], f"step {i}")
        if i == 1 and "log" in args:
            await ctx.log("info", args["log"], "steps")
        if i == 1 and args.get("gate") in gates:
            await gates[args["gate"]].wait()
    return {"count": args["count"]}


stopped: list[str] = []
"""Workflows whose handler the gateway stopped (cancelled or timed out)."""


@worker.tool("slow", subject="testing.slow")
@worker.tool("long", subject="testing.slow")
@worker.tool("background", subject="testing.slow")
async def slow(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    gate = gates.get(args.get("gate", ""))
    try:
        if gate is not None:
            await gate.wait()
        else:
            await asyncio.sleep(args["seconds"])
    except asyncio.CancelledError:
        stopped.append(ctx.workflow_id)
        raise
    return {"slept": args["seconds"]}


@worker.tool("bad_output", subject="testing.bad_output")
async def bad_output(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    return {"answer": "forty-two"}


@worker.tool("explode", subject="testing.explode")
async def explode(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    if args.get("crash"):
        raise RuntimeError("the handler crashed")
    raise ToolFailure("out_of_stock", "the warehouse is empty", details={"sku": "KB-01"})


@worker.tool("survey", subject="testing.survey")
@worker.tool("quiz", subject="testing.survey")
async def survey(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green"]}}}
    answer = await ctx.ask("Which colour?", {**schema, "required": ["colour"]})
    if answer.action != "accept" or answer.content is None:
        raise ToolFailure("declined", f"the user chose to {answer.action}")
    return {"colour": answer.content["colour"]}


@worker.tool("interview", subject="testing.interview")
async def interview(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    answer = await ctx.ask("Your name?", {"type": "object", "properties": {"name": {"type": "string"}}})
    await gates.setdefault(args["gate"], asyncio.Event()).wait()
    return {"name": (answer.content or {}).get("name")}


@worker.tool("guarded", subject="testing.noop")
@worker.tool("ledger", subject="testing.noop")
@worker.tool("vault", subject="testing.noop")
@worker.tool("brief_vault", subject="testing.noop")
async def noop(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    executions[ctx.workflow_id] += 1
    return {"ok": True}


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


@worker.tool("media", subject="testing.media")
async def media(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    executions[ctx.workflow_id] += 1
    if args.get("broken"):
        return ToolResult(content=[{"type": "image", "mimeType": "image/png"}])  # no data
    return ToolResult(
        content=[
            content.text("Here is everything."),
            content.image(PNG, "image/png"),
            content.audio(b"RIFF....WAVE", "audio/wav"),
            content.embedded("test://embedded", text="embedded text", mime_type="text/plain"),
            content.resource_link("test://linked", "linked"),
        ]
    )


shaky_attempts: Counter[str] = Counter()


@worker.tool("shaky", subject="testing.shaky")
async def shaky(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    shaky_attempts[args["key"]] += 1
    if shaky_attempts[args["key"]] <= args["crashes"]:
        raise RuntimeError(f"crash {shaky_attempts[args['key']]} of {args['crashes']}")
    return {"attempts": shaky_attempts[args["key"]]}
