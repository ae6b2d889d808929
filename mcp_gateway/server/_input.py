"""Putting a workflow's question to the user, on each wire.

2025-11-25: elicitation, tied to the open call (`related_request_id`), when the client can elicit.
2026-07-28: the server may not ask: the call returns an input-required result carrying the question, with
the workflow id as `requestState`; the client answers and calls again (`resume`). Tasks use `tasks/update`.
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcp_gateway.core.service import InputCallback, UserAnswer

__all__ = [
    "answer_from",
    "elicitation_schema",
    "elicitor",
    "input_required",
    "question_of",
    "request_state",
    "workflow_of",
]

_CONFIRM_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def elicitation_schema(question: dict[str, Any]) -> dict[str, Any]:
    """What the user fills in: nothing for a confirmation (accept or decline), the question's schema for a form."""
    return question.get("schema") or _CONFIRM_SCHEMA


def elicitor(ctx: ServerRequestContext[Any]) -> InputCallback | None:
    """An elicitation callback for this call, or None where the server cannot ask (2026-07-28, or a client
    without elicitation): then the call returns and the caller answers later."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    can_elicit = ctx.session.check_client_capability(
        types.ClientCapabilities(elicitation=types.ElicitationCapability())
    )
    can_sample = ctx.session.check_client_capability(types.ClientCapabilities(sampling=types.SamplingCapability()))
    if not (can_elicit or can_sample):
        return None

    async def ask(question: dict[str, Any]) -> UserAnswer:
        if (question.get("kind") == "sampling" and not can_sample) or (
            question.get("kind") != "sampling" and not can_elicit
        ):
            raise NotImplementedError(f"the client cannot answer a {question.get('kind')} request")
        if question.get("kind") == "sampling":
            sampling = types.CreateMessageRequestParams.model_validate(question.get("sampling") or {})
            sampled = await ctx.session.create_message(  # pyright: ignore[reportDeprecated] - a 2025-11-25 call
                sampling.messages,
                max_tokens=sampling.max_tokens,
                system_prompt=sampling.system_prompt,
                related_request_id=ctx.request_id,
            )
            return UserAnswer("accept", sampled.model_dump(by_alias=True, mode="json", exclude_none=True))
        result = await ctx.session.elicit_form(
            question["message"], elicitation_schema(question), related_request_id=ctx.request_id
        )
        content = dict(result.content) if result.content is not None else None
        return UserAnswer(result.action, content)

    return ask


def input_required(workflow_id: str, question: dict[str, Any]) -> types.InputRequiredResult:
    request: types.InputRequest
    if question.get("kind") == "sampling":
        params = types.CreateMessageRequestParams.model_validate(question.get("sampling") or {})
        request = types.CreateMessageRequest(params=params)
    else:
        form = types.ElicitRequestFormParams(message=question["message"], requested_schema=elicitation_schema(question))
        request = types.ElicitRequest(params=form)
    return types.InputRequiredResult(
        input_requests={question["id"]: request}, request_state=request_state(workflow_id, question)
    )


def request_state(workflow_id: str, question: dict[str, Any]) -> str:
    """`<workflow id>.<question id>`: names the caller's own workflow (unguessable, bound to the caller) and the
    round; a state that names anything else is refused."""
    return f"{workflow_id}.{question['id']}"


def workflow_of(state: str) -> str:
    return state.split(".", 1)[0]


def question_of(state: str) -> str | None:
    parts = state.split(".", 1)
    return parts[1] if len(parts) == 2 else None


def answer_from(responses: dict[str, Any] | None) -> UserAnswer:
    """The user's answer in a retried call's `inputResponses` (the first elicitation result); none: cancel."""
    for response in (responses or {}).values():
        if isinstance(response, dict):  # as the tasks extension's params carry it
            try:
                response = (
                    types.CreateMessageResult.model_validate(response)
                    if "role" in response
                    else types.ElicitResult.model_validate(response)
                )
            except ValidationError:
                continue
        if isinstance(response, types.ElicitResult):
            content = dict(response.content) if response.content is not None else None
            return UserAnswer(response.action, content)
        if isinstance(response, types.CreateMessageResult | types.CreateMessageResultWithTools):
            return UserAnswer("accept", response.model_dump(by_alias=True, mode="json", exclude_none=True))
    return UserAnswer("cancel")
