"""Putting a workflow's questions to the client, on each wire.

2025-11-25: elicitation, sampling or roots/list requests tied to the open call (`related_request_id`), when
the client has the capability. 2026-07-28: the server may not ask: the call returns an input-required result
carrying the open questions, with a `requestState` naming the workflow and them; the client answers and calls
again (`resume`). Tasks use `tasks/update`. Workers see what the calling client can answer (`Caller.can_answer`).
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server import ServerRequestContext
from mcp_gateway_worker.contract import ClientAbility
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcp_gateway.core.service import InputCallback, UserAnswer
from mcp_gateway.registry import CompiledSchema, Prompt

__all__ = [
    "CLIENT_CAPABILITIES",
    "answers_from",
    "can_answer",
    "elicitation_schema",
    "elicitor",
    "input_requests",
    "input_required",
    "parse_request_state",
    "prompt_arguments",
    "request_state",
]

CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
"""Where a 2026-07-28 request declares its client's capabilities (in `_meta`)."""

_ABILITY = {"confirm": "elicitation", "form": "elicitation", "sampling": "sampling", "roots": "roots"}
"""Which client capability answers which kind of question."""

_ABILITIES: dict[ClientAbility, types.ClientCapabilities] = {
    "elicitation": types.ClientCapabilities(elicitation=types.ElicitationCapability()),
    "sampling": types.ClientCapabilities(sampling=types.SamplingCapability()),
    "roots": types.ClientCapabilities(roots=types.RootsCapability()),
}


def can_answer(ctx: ServerRequestContext[Any]) -> list[ClientAbility] | None:
    """What the calling client can answer mid-call: on 2026-07-28 from the request's declared capabilities,
    before that from the session's (None when the request declares none)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        declared = (ctx.meta or {}).get(CLIENT_CAPABILITIES)
        if not isinstance(declared, dict):
            return None
        return [name for name in _ABILITIES if name in declared]
    return [name for name, needed in _ABILITIES.items() if ctx.session.check_client_capability(needed)]


_CONFIRM_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def elicitation_schema(question: dict[str, Any]) -> dict[str, Any]:
    """What the user fills in: nothing for a confirmation (accept or decline), the question's schema for a form."""
    return question.get("schema") or _CONFIRM_SCHEMA


def elicitor(ctx: ServerRequestContext[Any]) -> InputCallback | None:
    """A callback that asks the client during the call, or None where the server cannot ask (2026-07-28, or a
    client that can neither elicit, sample nor list roots): then the call returns and the caller answers later."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    can = set(can_answer(ctx) or ())
    if not can:
        return None

    async def ask(question: dict[str, Any]) -> UserAnswer:
        kind = question.get("kind", "confirm")
        if _ABILITY.get(kind) not in can:
            raise NotImplementedError(f"the client cannot answer a {kind} request")
        if kind == "sampling":
            sampling = types.CreateMessageRequestParams.model_validate(question.get("sampling") or {})
            sampled = await ctx.session.create_message(  # pyright: ignore[reportDeprecated] - a 2025-11-25 call
                sampling.messages,
                max_tokens=sampling.max_tokens,
                system_prompt=sampling.system_prompt,
                related_request_id=ctx.request_id,
            )
            return UserAnswer("accept", sampled.model_dump(by_alias=True, mode="json", exclude_none=True))
        if kind == "roots":
            roots = await ctx.session.list_roots()  # pyright: ignore[reportDeprecated] - a 2025-11-25 call
            return UserAnswer("accept", roots.model_dump(by_alias=True, mode="json", exclude_none=True))
        result = await ctx.session.elicit_form(
            question["message"], elicitation_schema(question), related_request_id=ctx.request_id
        )
        content = dict(result.content) if result.content is not None else None
        return UserAnswer(result.action, content)

    return ask


def _input_request(question: dict[str, Any]) -> types.InputRequest:
    kind = question.get("kind", "confirm")
    if kind == "sampling":
        return types.CreateMessageRequest(
            params=types.CreateMessageRequestParams.model_validate(question.get("sampling") or {})
        )
    if kind == "roots":
        return types.ListRootsRequest()
    form = types.ElicitRequestFormParams(message=question["message"], requested_schema=elicitation_schema(question))
    return types.ElicitRequest(params=form)


def input_requests(questions: list[dict[str, Any]]) -> dict[str, Any]:
    """The wire form of the open questions: `{question id: {method, params}}`."""
    return {q["id"]: _input_request(q).model_dump(by_alias=True, mode="json", exclude_none=True) for q in questions}


def input_required(workflow_id: str, questions: list[dict[str, Any]]) -> types.InputRequiredResult:
    return types.InputRequiredResult(
        input_requests={q["id"]: _input_request(q) for q in questions},
        request_state=request_state(workflow_id, questions),
    )


def request_state(workflow_id: str, questions: list[dict[str, Any]]) -> str:
    """`<workflow id>.<question id>[,<question id>...]`: names the caller's own workflow (unguessable, bound to
    the caller) and the questions of this round; a state naming anything else is refused."""
    return f"{workflow_id}.{','.join(q['id'] for q in questions)}"


def parse_request_state(state: str) -> tuple[str, list[str]]:
    """The workflow id and the question ids a `requestState` names."""
    workflow_id, _, asked = state.partition(".")
    return workflow_id, [a for a in asked.split(",") if a]


def _user_answer(response: object) -> UserAnswer | None:
    """A response of `inputResponses` (or `tasks/update`) as an answer, by its shape: an elicitation result, a
    sampled message, or the client's roots; None when it is none of these."""
    if isinstance(response, types.ElicitResult):
        return UserAnswer(response.action, dict(response.content) if response.content is not None else None)
    if isinstance(response, types.CreateMessageResult | types.CreateMessageResultWithTools | types.ListRootsResult):
        return UserAnswer("accept", response.model_dump(by_alias=True, mode="json", exclude_none=True))
    if not isinstance(response, dict):
        return None
    shapes: list[type[types.Result]] = [types.ElicitResult]
    if "roots" in response:
        shapes = [types.ListRootsResult]
    elif "role" in response:
        shapes = [types.CreateMessageResult, types.CreateMessageResultWithTools]
    for shape in shapes:
        try:
            return _user_answer(shape.model_validate(response))
        except ValidationError:
            continue
    return None


def answers_from(responses: dict[str, Any] | None) -> dict[str, UserAnswer]:
    """The answers in a retried call's `inputResponses` (or a `tasks/update`), by question id; a response that
    is no elicitation, sampling or roots result is left out (its question stays open, and is asked again)."""
    answers: dict[str, UserAnswer] = {}
    for key, response in (responses or {}).items():
        given = _user_answer(response)
        if given is not None:
            answers[key] = given
    return answers


async def prompt_arguments(
    ctx: ServerRequestContext[Any], prompt: Prompt, params: types.GetPromptRequestParams
) -> dict[str, str] | types.InputRequiredResult:
    """The prompt's arguments, with those it asks for when left out (`ask`) answered by the user: asked by
    elicitation (2025-11-25, when the client can), or returned as an input-required result whose answer the
    retried request carries (2026-07-28; nothing is kept meanwhile, so no `requestState`). Raises ValueError
    when the user declines, or the answer does not fit."""
    question = prompt.question(params.arguments)
    if question is None:
        return dict(params.arguments or {})
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        given = answers_from(params.input_responses).get(question["id"])
        if given is None:
            return types.InputRequiredResult(input_requests={question["id"]: _input_request(question)})
    else:
        ask = elicitor(ctx)
        try:
            if ask is None:
                raise NotImplementedError
            given = await ask(question)
        except NotImplementedError:  # nobody to ask: the prompt renders with what it has
            return dict(params.arguments or {})
    if given.action != "accept":
        raise ValueError(f"the user chose to {given.action} the prompt's questions")
    problems = CompiledSchema(question["schema"]).violations(given.content or {})
    if problems:
        raise ValueError(f"the answer does not match what was asked ({'; '.join(str(p) for p in problems)})")
    return prompt.answered(params.arguments, given.content)
