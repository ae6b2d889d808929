"""Input requests and approvals through the SDK's real Client, on both wires and both transports: elicitation
tied to the open call (2025-11-25), input-required results answered by calling again (2026-07-28)."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError
from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN, AnswerRefused, Viewer
from tests import workers as test_workers
from tests.conftest import Connect, error_detail


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
    assert result.structured_content is None and error_detail(result)["error"] == "declined"


async def test_caller_approval(connect: Connect, gateway: Gateway) -> None:
    callback, shown = answering(types.ElicitResult(action="accept"), types.ElicitResult(action="decline"))
    async with connect(elicitation_callback=callback) as client:
        approved = await client.call_tool("guarded", {"note": "go"})
        denied = await client.call_tool("guarded", {"note": "stop"})
    assert not approved.is_error and approved.structured_content == {"ok": True}
    assert "needs approval" in shown[0] and '"note": "go"' in shown[0]
    assert denied.is_error and error_detail(denied)["error"] == "denied"
    by_note = {r.arguments["note"]: r for r in await gateway.store.list()}
    assert by_note["stop"].status is Status.CANCELLED
    assert test_workers.executions[by_note["stop"].id] == 0  # the held command never went out
    from sqlalchemy import text

    async with gateway.store.engine.connect() as conn:
        query = text("SELECT count(*) FROM outbox WHERE workflow_id = :id")
        held = (await conn.execute(query, {"id": by_note["stop"].id})).scalar_one()
    assert held == 0  # and is gone with its workflow
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


async def test_an_answer_after_the_deadline_is_refused(gateway: Gateway) -> None:
    handed = await gateway.service.call("brief_vault", {}, caller=Caller(subject="erin"))
    assert handed.workflow_id is not None
    record = await gateway.workflows.wait(handed.workflow_id, ADMIN, 10)
    assert record.status is Status.TIMED_OUT
    with pytest.raises(AnswerRefused, match="timed_out; it asks for no input"):
        await gateway.workflows.answer(handed.workflow_id, ADMIN, "approval", "accept")
    assert test_workers.executions[handed.workflow_id] == 0


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


async def test_admin_http_api(gateway: Gateway) -> None:
    import httpx2

    from tests.conftest import admin_token, http_server

    approve_me = await gateway.service.call("vault", {}, caller=Caller(subject="carol"))
    deny_me = await gateway.service.call("vault", {}, caller=Caller(subject="carol"))
    assert approve_me.workflow_id and deny_me.workflow_id
    async with http_server(gateway) as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp") + "/admin/workflows"
        admin = {"Authorization": f"Bearer {await admin_token(gateway)}"}
        assert (await http.post(f"{base}/{approve_me.workflow_id}/approve")).status_code == 401
        wrong = await http.post(f"{base}/{approve_me.workflow_id}/approve", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        approved = await http.post(f"{base}/{approve_me.workflow_id}/approve", headers=admin)
        assert approved.status_code == 200, approved.text
        denied = await http.post(f"{base}/{deny_me.workflow_id}/deny", headers=admin)
        assert denied.json()["workflow"]["status"] == "cancelled"
        again = await http.post(f"{base}/{deny_me.workflow_id}/approve", headers=admin)
        assert again.status_code == 409 and "asks for no input" in again.json()["message"]
        assert (await http.post(f"{base}/{'0' * 32}/cancel", headers=admin)).status_code == 404
        assert (await http.post(f"{base}/{deny_me.workflow_id}/explode", headers=admin)).status_code == 404
    assert (await gateway.workflows.wait(approve_me.workflow_id, ADMIN, 10)).status is Status.COMPLETED
    denied_record = await gateway.workflows.get(deny_me.workflow_id, ADMIN)
    assert denied_record.state.error is not None and denied_record.state.error["code"] == "denied"


async def test_admin_cli_approve_and_cancel(gateway: Gateway, env: Any) -> None:
    import os
    import sys

    handed = await gateway.service.call("vault", {}, caller=Caller(subject="dave"))
    assert handed.workflow_id

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_gateway",
            "workflows",
            *args,
            env={**os.environ, **env.env_vars()},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, out.decode(), err.decode()

    code, out, _ = await cli("approve", handed.workflow_id)
    assert code == 0 and out.split()[0] == handed.workflow_id
    assert out.split()[1] in ("pending", "dispatched", "running", "completed")  # released: it goes on at once
    code, _, err = await cli("approve", handed.workflow_id)
    assert code == 1 and "asks for no input" in err
    assert (await gateway.workflows.wait(handed.workflow_id, ADMIN, 10)).status is Status.COMPLETED
    code, out, _ = await cli("cancel", handed.workflow_id)  # too late: the result stays
    assert code == 0 and out.split()[1] == "completed"


async def test_a_request_state_from_elsewhere_is_refused(gateway: Gateway) -> None:
    """2026-07-28: a retried call must name the caller's own workflow, of the same tool."""
    from mcp import Client

    from tests.conftest import http_server

    other = await gateway.service.call("vault", {}, caller=Caller(subject="mallory"))
    assert other.workflow_id is not None
    async with http_server(gateway) as url, Client(url) as client:
        for state in (other.workflow_id, "0" * 32, "../../etc", f"{other.workflow_id}.approval"):
            with pytest.raises(MCPError, match="requestState refused: no workflow"):
                await client.session.call_tool(
                    "survey", {}, request_state=state, input_responses={}, allow_input_required=True
                )
    assert (await gateway.workflows.get(other.workflow_id, ADMIN)).status is Status.INPUT_REQUIRED


async def test_sampling_is_relayed_to_the_client(connect: Connect) -> None:
    asked: list[str] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        first = params.messages[0].content
        asked.append(first.text if isinstance(first, types.TextContent) else "?")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text="Paris."), model="test-model", stop_reason="endTurn"
        )

    async with connect(sampling_callback=sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
    assert not result.is_error, result.content
    assert asked == ["Capital of France?"]
    assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "LLM response: Paris."


def _sampled(text: str) -> Any:
    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text=text), model="test-model")

    return sample


async def _roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root.model_validate({"uri": "file:///work", "name": "work"})])


async def test_questions_asked_together(connect: Connect, gateway: Gateway) -> None:
    """A worker asks for a form, a sample and the client's roots at once (`asyncio.gather`): one event, one round
    on 2026-07-28 (three input requests), three requests tied to the call on 2025-11-25; each answered once."""
    callback, shown = answering(types.ElicitResult(action="accept", content={"name": "Ada"}))
    async with connect(
        elicitation_callback=callback, sampling_callback=_sampled("Hi"), list_roots_callback=_roots
    ) as c:
        result = await c.call_tool("test_input_required_result_multiple_inputs", {})
    assert not result.is_error, result.content
    assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "Hi Ada (1 roots)"
    assert shown == ["What is your name?"]
    (record,) = await gateway.store.list()
    assert set(record.state.answers) == {"user_name", "greeting", "client_roots"}
    assert record.state.answers["client_roots"]["content"] == {"roots": [{"uri": "file:///work", "name": "work"}]}
    kinds = [e.kind for e in await gateway.store.events(record.id)]
    assert kinds.count("input_required") == 1 and kinds.count("input_answered") == 3


async def test_answers_given_in_parts(gateway: Gateway) -> None:
    """2026-07-28: a retry answering some of the open questions gets the rest asked again (its requestState names
    only those; an older state still works, answering what is open); a response to a question not asked is
    ignored; the last answer completes the call."""
    from mcp import Client

    from tests.conftest import http_server

    name = {"action": "accept", "content": {"name": "Ada"}}
    sampled = {"role": "assistant", "content": {"type": "text", "text": "Hi"}, "model": "m"}
    tool = "test_input_required_result_multiple_inputs"
    async with http_server(gateway) as url, Client(url) as client:
        first = await client.session.call_tool(tool, {}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.request_state is not None
        asked = first.input_requests or {}
        assert set(asked) == {"user_name", "greeting", "client_roots"} and asked["client_roots"].method == "roots/list"
        with pytest.raises(MCPError, match="requestState refused"):  # names a question never asked
            await client.session.call_tool(
                tool, {}, request_state=first.request_state + "-TAMPERED", input_responses={}, allow_input_required=True
            )
        responses: dict[str, Any] = {"user_name": name, "greeting": sampled, "unasked": name}
        second = await client.session.call_tool(
            tool, {}, request_state=first.request_state, input_responses=responses, allow_input_required=True
        )
        assert isinstance(second, types.InputRequiredResult) and second.request_state is not None
        assert set(second.input_requests or {}) == {"client_roots"}  # an unasked key answers nothing
        again = await client.session.call_tool(  # the earlier state, retried: what is still open is asked again
            tool, {}, request_state=first.request_state, input_responses={}, allow_input_required=True
        )
        assert isinstance(again, types.InputRequiredResult) and set(again.input_requests or {}) == {"client_roots"}
        roots: Any = {"client_roots": {"roots": []}}
        done = await client.session.call_tool(tool, {}, request_state=second.request_state, input_responses=roots)
    assert isinstance(done, types.CallToolResult) and not done.is_error, done
    assert isinstance(done.content[0], types.TextContent) and done.content[0].text == "Hi Ada (0 roots)"


async def test_workers_ask_only_what_the_client_can_answer(connect: Connect, gateway: Gateway) -> None:
    """The client's declared capabilities reach the worker (`Caller.can_answer`, `ctx.can_ask`): a client that can
    sample but not elicit is asked for a sample only."""
    async with connect(sampling_callback=_sampled("Hello")) as client:
        result = await client.call_tool("test_input_required_result_capabilities", {})
    assert not result.is_error, result.content
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "Asked 1 question(s) the client can answer"
    (record,) = await gateway.store.list()
    assert set(record.state.answers) == {"greeting"}


def test_responses_are_read_by_their_shape() -> None:
    from mcp_gateway.server._input import answers_from

    given = answers_from(
        {
            "form": {"action": "accept", "content": {"name": "Ada"}},
            "sample": {"role": "assistant", "content": {"type": "text", "text": "Hi"}, "model": "m"},
            "roots": {"roots": [{"uri": "file:///work"}]},
            "junk": {"bogus": True},
            "number": 12345,
        }
    )
    assert set(given) == {"form", "sample", "roots"}
    assert given["form"].content == {"name": "Ada"} and given["roots"].content == {"roots": [{"uri": "file:///work"}]}
    assert given["sample"].action == "accept" and given["sample"].content is not None


async def test_a_question_the_client_cannot_take_is_handed_back_at_once(gateway: Gateway) -> None:
    """The client could not be asked (it cannot elicit, or the request failed): the call returns the open
    question for workflow_respond, instead of waiting out its timeout."""

    async def cannot_ask(question: dict[str, Any]) -> Any:
        raise NotImplementedError("the client cannot answer a form request")

    async with asyncio.timeout(5):  # the tool's timeout is longer
        outcome = await gateway.service.call("survey", {}, caller=Caller(subject="tester"), on_input=cannot_ask)
    assert outcome.kind is OutcomeKind.INPUT_REQUIRED and [q["id"] for q in outcome.questions] == ["q1"]
    assert outcome.workflow_id is not None
    record = await gateway.workflows.answer(outcome.workflow_id, Viewer("tester"), "q1", "accept", {"colour": "red"})
    assert record.status is Status.RUNNING
    done = await gateway.workflows.wait(outcome.workflow_id, Viewer("tester"), 10)
    assert done.state.result == {"colour": "red"}
