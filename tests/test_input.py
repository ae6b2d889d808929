"""Input requests and approvals through the SDK's real Client, on both wires and both transports: elicitation
tied to the open call (2025-11-25), input-required results answered by calling again (2026-07-28)."""

from __future__ import annotations

from typing import Any

import mcp.types as types
import pytest

from mcp_gateway.app import Gateway
from mcp_gateway.contract import Caller
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN, AnswerRefused, Viewer
from tests import workers as test_workers
from tests.conftest import Connect


def answering(*answers: types.ElicitResult) -> tuple[Any, list[str]]:
    """An elicitation callback giving `answers` in turn; and the messages it was shown."""
    shown: list[str] = []
    queue = list(answers)

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        shown.append(params.message)
        return queue.pop(0)

    return callback, shown


async def test_a_worker_question_reaches_the_user_and_back(connect: Connect, gateway: Gateway) -> None:
    callback, shown = answering(
        types.ElicitResult(action="accept", content={"colour": "blue"}),  # breaks the question's schema
        types.ElicitResult(action="accept", content={"colour": "green"}),
    )
    async with connect(elicitation_callback=callback) as client:
        result = await client.call_tool("survey", {})
    assert not result.is_error, result.content
    assert result.structured_content == {"colour": "green"}
    assert shown[0] == "Which colour?"
    assert "does not match what was asked" in shown[1] and "/colour" in shown[1]
    (record,) = await gateway.store.list()
    kinds = [e.kind for e in await gateway.store.events(record.id)]
    assert kinds.count("input_required") == 1 and kinds.count("input_answered") == 1
    assert test_workers.executions[record.id] == 1


async def test_a_declined_question_fails_the_tool(connect: Connect) -> None:
    callback, _ = answering(types.ElicitResult(action="decline"))
    async with connect(elicitation_callback=callback) as client:
        result = await client.call_tool("survey", {})
    assert result.is_error
    assert result.structured_content is not None and result.structured_content["error"] == "declined"


async def test_caller_approval(connect: Connect, gateway: Gateway) -> None:
    callback, shown = answering(types.ElicitResult(action="accept"), types.ElicitResult(action="decline"))
    async with connect(elicitation_callback=callback) as client:
        approved = await client.call_tool("guarded", {"note": "go"})
        denied = await client.call_tool("guarded", {"note": "stop"})
    assert not approved.is_error and approved.structured_content == {"ok": True}
    assert "needs approval" in shown[0] and '"note": "go"' in shown[0]
    assert denied.is_error and denied.structured_content is not None
    assert denied.structured_content["error"] == "denied"
    by_note = {r.arguments["note"]: r for r in await gateway.store.list()}
    assert by_note["stop"].status is Status.CANCELLED
    assert test_workers.executions[by_note["stop"].id] == 0  # the held command never went out
    history = await gateway.store.events(by_note["go"].id)
    answered = [e for e in history if e.kind == "input_answered"]
    assert answered[0].data["action"] == "accept"


async def test_admin_approval(gateway: Gateway) -> None:
    caller = Caller(subject="alice")
    handed = await gateway.service.call("vault", {}, caller=caller)
    assert handed.kind is OutcomeKind.HANDED_BACK and handed.workflow_id is not None
    workflow_id = handed.workflow_id
    assert (await gateway.workflows.get(workflow_id, ADMIN)).status is Status.INPUT_REQUIRED
    with pytest.raises(AnswerRefused, match="admin"):
        await gateway.workflows.answer(workflow_id, Viewer("alice"), "approval", "accept")
    await gateway.workflows.answer(workflow_id, ADMIN, "approval", "accept")
    with pytest.raises(AnswerRefused, match="asks for no input"):  # a second answer to the same question
        await gateway.workflows.answer(workflow_id, ADMIN, "approval", "decline")
    record = await gateway.workflows.wait(workflow_id, ADMIN, 10)
    assert record.status is Status.COMPLETED
    history = await gateway.store.events(workflow_id)
    assert [e.data.get("by") for e in history if e.kind == "input_answered"] == ["admin"]
    assert test_workers.executions[workflow_id] == 1


async def test_an_answer_after_the_end_is_refused(gateway: Gateway) -> None:
    handed = await gateway.service.call("vault", {}, caller=Caller(subject="bob"))
    assert handed.workflow_id is not None
    await gateway.workflows.cancel(handed.workflow_id, ADMIN)
    with pytest.raises(AnswerRefused, match="cancelled; it asks for no input"):
        await gateway.workflows.answer(handed.workflow_id, ADMIN, "approval", "accept")


async def test_answers_are_recorded_for_questions_asked_again(gateway: Gateway) -> None:
    """The answer is kept by question id: a redelivered command asking again gets it (see test_states)."""

    async def ask(question: dict[str, Any]) -> Any:
        from mcp_gateway.core.service import UserAnswer

        return UserAnswer("accept", {"colour": "red"})

    outcome = await gateway.service.call("survey", {}, caller=Caller(subject="x"), on_input=ask)
    assert outcome.result == {"colour": "red"}
    record = await gateway.workflows.get(outcome.workflow_id or "", ADMIN)
    assert record.state.answers["q1"]["content"] == {"colour": "red"}
