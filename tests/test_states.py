"""The state machine and the contract's decoding: plain code, no servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from mcp_gateway_worker.contract import ContractError, Event, EventKind, decode_command, decode_event

from mcp_gateway.core.changes import Change, Waiters
from mcp_gateway.core.states import TERMINAL, Status, WorkflowState, can_move, fold

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def event(kind: EventKind, seq: int, attempt: int = 1, **fields: Any) -> Event:
    return Event(workflow_id="w1", attempt=attempt, seq=seq, kind=kind, at=NOW, **fields)


def test_terminal_states_never_move() -> None:
    for status in TERMINAL:
        assert not any(can_move(status, target) for target in Status)
    assert can_move(Status.PENDING, Status.DISPATCHED)
    assert not can_move(Status.RUNNING, Status.DISPATCHED)
    assert not can_move(Status.RUNNING, Status.PENDING)


def test_a_normal_run() -> None:
    state = WorkflowState(Status.DISPATCHED)
    state = fold(state, event(EventKind.STARTED, 0)).state
    assert state.status is Status.RUNNING
    state = fold(state, event(EventKind.PROGRESS, 1, progress=1, total=2, message="half")).state
    assert (state.progress, state.total, state.message) == (1, 2, "half")
    done = fold(state, event(EventKind.COMPLETED, 2, result={"ok": True}))
    assert done.changed and done.state.status is Status.COMPLETED and done.state.result == {"ok": True}
    assert done.state.version == 3


def test_events_after_the_end_change_nothing() -> None:
    ended = fold(WorkflowState(Status.RUNNING), event(EventKind.COMPLETED, 1, result={})).state
    late = fold(ended, event(EventKind.FAILED, 2, error={"code": "x", "message": "late"}))
    assert not late.changed and late.state == ended and late.note == "ignored: workflow already completed"


def test_older_progress_does_not_win_over_newer() -> None:
    state = fold(WorkflowState(Status.RUNNING), event(EventKind.PROGRESS, 3, progress=3)).state
    older = fold(state, event(EventKind.PROGRESS, 2, progress=2))
    assert not older.changed and older.state.progress == 3


def test_a_late_started_still_marks_running() -> None:
    state = WorkflowState(Status.DISPATCHED, last_seq=1)
    assert fold(state, event(EventKind.STARTED, 0)).state.status is Status.RUNNING


def test_events_of_an_older_attempt_are_stale() -> None:
    state = WorkflowState(Status.RUNNING, attempt=2)
    stale = fold(state, event(EventKind.COMPLETED, 5, attempt=1, result={}))
    assert not stale.changed and stale.note is not None and stale.note.startswith("stale")


def test_a_result_that_breaks_the_output_schema_fails_the_workflow() -> None:
    ended = fold(WorkflowState(Status.RUNNING), event(EventKind.COMPLETED, 1, result={"a": 1}), lambda r: ["/a: bad"])
    assert ended.state.status is Status.FAILED
    assert ended.state.error is not None and ended.state.error["code"] == "invalid_output"
    assert ended.state.error["details"] == {"violations": ["/a: bad"]}


def test_an_event_that_skips_ahead_is_deferred_when_allowed() -> None:
    state = WorkflowState(Status.RUNNING, last_seq=1)
    early = event(EventKind.COMPLETED, 3, result={})
    assert fold(state, early, may_defer=True).defer
    assert fold(state, early, may_defer=False).state.status is Status.COMPLETED
    assert not fold(state, event(EventKind.PROGRESS, 2, progress=2), may_defer=True).defer


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", "body is not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"workflow_id": "w", "seq": 0, "kind": "started"}', "at: Field required"),
        (b'{"workflow_id": "w", "seq": 0, "kind": "exploded", "at": "2026-01-01T00:00:00Z"}', "kind: Input should be"),
        (b'{"workflow_id": "w", "seq": 1, "kind": "completed", "at": "2026-01-01T00:00:00Z"}', "needs 'result'"),
        (b'{"workflow_id": "w.x", "seq": 1, "kind": "started", "at": "2026-01-01T00:00:00Z"}', "workflow_id"),
        (b'{"workflow_id": "w", "seq": 0, "kind": "started", "at": "2026-01-01T00:00:00Z", "x": 1}', "x: Extra"),
        (b'{"v": 2, "workflow_id": "w", "seq": 0, "kind": "started", "at": "2026-01-01T00:00:00Z"}', "v: Input"),
    ],
)
def test_bad_events_are_refused_with_the_reason(body: bytes, expected: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_event(body)
    assert expected in str(info.value)
    assert str(info.value).startswith("invalid event")


def test_bad_command_is_refused() -> None:
    with pytest.raises(ContractError, match="invalid command: workflow_id: Field required"):
        decode_command(b'{"tool": "t"}')


def test_waiters_deliver_in_version_order_and_drop_the_oldest_when_full() -> None:
    waiters = Waiters(capacity=2)
    with waiters.watch("w1") as watch:
        for version in (1, 3, 2, 4):  # 2 arrives after 3: dropped
            waiters.on_message(Change("w1", WorkflowState(Status.RUNNING, version=version)).encode())
        waiters.on_message(b"garbage")  # logged, ignored
        queued = [watch._queue.get_nowait()[0].state.version for _ in range(watch._queue.qsize())]  # pyright: ignore[reportPrivateUsage]
    assert queued == [3, 4]
    assert len(waiters) == 0


def test_large_changes_leave_their_result_to_the_store() -> None:
    big = Change("w1", WorkflowState(Status.COMPLETED, result={"blob": "x" * 10_000}, version=1))
    change, truncated = Change.decode(big.encode(max_size=1000))
    assert truncated and change.state.result is None and change.state.status is Status.COMPLETED


def test_questions_answers_and_approvals() -> None:
    from mcp_gateway_worker.contract import InputRequest

    from mcp_gateway.core.states import answer

    sure = InputRequest(id="q1", kind="confirm", message="Sure?")
    asked = fold(WorkflowState(Status.RUNNING, last_seq=0), event(EventKind.INPUT_REQUIRED, 1, requests=[sure])).state
    assert asked.status is Status.INPUT_REQUIRED and [q["id"] for q in asked.questions] == ["q1"]
    refused = answer(asked, "q2", "accept", None)
    assert not refused.changed and refused.note is not None and "'q1'" in refused.note  # not an open question
    answered = answer(asked, "q1", "accept", None).state
    assert answered.status is Status.RUNNING and answered.questions == []
    assert not answer(answered, "q1", "decline", None).changed  # two answers to one question
    again = fold(answered, event(EventKind.INPUT_REQUIRED, 1, attempt=2, requests=[sure]))
    assert again.resend == [{"request_id": "q1", "action": "accept", "content": None}]
    assert again.state.status is Status.RUNNING and again.state.last_seq == 1  # nothing new is open

    approval = {"id": "approval", "kind": "confirm", "approval": True, "by": "caller", "message": "ok?"}
    held = WorkflowState(Status.INPUT_REQUIRED, questions=[approval])
    assert answer(held, "approval", "accept", None).state.status is Status.PENDING
    denied = answer(held, "approval", "decline", None).state
    assert denied.status is Status.CANCELLED and denied.error == {
        "code": "denied",
        "message": "the approval was declined",
    }


def test_questions_asked_together_are_answered_one_by_one() -> None:
    from mcp_gateway_worker.contract import InputRequest

    from mcp_gateway.core.states import answer

    name = InputRequest(id="name", kind="form", message="Name?", schema={"type": "object"})
    roots = InputRequest(id="roots", kind="roots", message="roots")
    asked = fold(WorkflowState(Status.RUNNING, last_seq=0), event(EventKind.INPUT_REQUIRED, 1, requests=[name, roots]))
    assert [q["id"] for q in asked.state.questions] == ["name", "roots"]
    half = answer(asked.state, "roots", "accept", {"roots": []}).state
    assert half.status is Status.INPUT_REQUIRED and [q["id"] for q in half.questions] == ["name"]
    # A redelivered command asks both again: the answered one is re-sent, the open one stays open once.
    again = fold(half, event(EventKind.INPUT_REQUIRED, 2, requests=[name, roots]))
    assert again.resend == [{"request_id": "roots", "action": "accept", "content": {"roots": []}}]
    assert [q["id"] for q in again.state.questions] == ["name"]
    done = answer(again.state, "name", "accept", {"name": "Ada"}).state
    assert done.status is Status.RUNNING and done.questions == [] and set(done.answers) == {"name", "roots"}
    ended = fold(half, event(EventKind.COMPLETED, 2, result={}))
    assert ended.state.status is Status.COMPLETED and ended.state.questions == []  # an ending closes them


def test_an_input_required_event_needs_distinct_questions() -> None:
    body = {"workflow_id": "w1", "seq": 0, "kind": "input_required", "at": "2026-11-21T00:00:00Z"}
    with pytest.raises(ContractError, match="requests"):
        decode_event(json.dumps(body).encode())
    twice = {"id": "a", "kind": "confirm", "message": "Sure?"}
    with pytest.raises(ContractError, match="must differ"):
        decode_event(json.dumps({**body, "requests": [twice, twice]}).encode())


def test_the_older_single_request_is_still_read() -> None:
    body = {"workflow_id": "w1", "seq": 0, "kind": "input_required", "at": "2026-11-21T00:00:00Z"}
    question = {"id": "q1", "kind": "confirm", "message": "Sure?"}
    event = decode_event(json.dumps({**body, "request": question}).encode())
    assert event.requests is not None and [r.id for r in event.requests] == ["q1"]
    with pytest.raises(ContractError, match="not both"):
        decode_event(json.dumps({**body, "request": question, "requests": [question]}).encode())


def test_questions_are_checked_on_the_way_in() -> None:
    body = {"workflow_id": "w1", "seq": 0, "kind": "input_required", "at": "2026-11-21T00:00:00Z"}
    cases = {
        "is the gateway's": {"id": "approval", "kind": "confirm", "message": "Sure?"},
        "needs 'sampling' with 'messages'": {"id": "s", "kind": "sampling", "message": "sampling"},
        "JSON object schema": {"id": "f", "kind": "form", "message": "?", "schema": {"type": "string"}},
    }
    for expected, question in cases.items():
        with pytest.raises(ContractError, match=expected):
            decode_event(json.dumps({**body, "requests": [question]}).encode())
    progress = {**body, "kind": "progress", "progress": 1, "request": None}  # a null field, as some write them
    assert decode_event(json.dumps(progress).encode()).requests is None


async def test_a_watch_drops_changes_older_than_what_was_read() -> None:
    waiters = Waiters()
    with waiters.watch("w1") as watch:
        for version in (1, 2, 3):
            waiters.deliver(Change("w1", WorkflowState(Status.RUNNING, version=version)))
        watch.seen(2)  # the caller read version 2 from the store
        waiters.deliver(Change("w1", WorkflowState(Status.RUNNING, version=2)))  # late, from another process
        waiters.deliver(Change("w1", WorkflowState(Status.COMPLETED, version=4)))
        versions = [change.state.version async for change, _ in watch.changes()]
    assert versions == [3, 4]


def test_a_tool_cannot_pass_its_failure_off_as_a_system_failure() -> None:
    from mcp_gateway_worker import ToolFailure

    with pytest.raises(ValueError, match="reserved for system failures"):
        ToolFailure("worker_error", "pretending to crash")
    assert ToolFailure("out_of_stock", "none left").info.code == "out_of_stock"


def test_a_question_whose_schema_cannot_check_answers_fails_the_workflow() -> None:
    from mcp_gateway_worker.contract import InputRequest

    broken = InputRequest(id="q1", kind="form", message="?", schema={"type": "object", "minProperties": "two"})
    folded = fold(WorkflowState(Status.RUNNING, last_seq=0), event(EventKind.INPUT_REQUIRED, 1, requests=[broken]))
    assert folded.state.status is Status.FAILED and folded.state.questions == []
    assert folded.state.error is not None and folded.state.error["code"] == "invalid_question"
    assert "q1: invalid JSON Schema" in folded.state.error["details"]["problems"][0]


def test_a_held_command_is_released_by_an_approval_and_dropped_by_an_ending() -> None:
    from mcp_gateway.core.states import held_command

    assert held_command(Status.INPUT_REQUIRED, Status.PENDING) == "release"
    for ending in (Status.CANCELLED, Status.TIMED_OUT, Status.FAILED):
        assert held_command(Status.INPUT_REQUIRED, ending) == "drop"
    assert held_command(Status.INPUT_REQUIRED, Status.RUNNING) is None  # a worker's question answered
    assert held_command(Status.RUNNING, Status.CANCELLED) is None  # nothing was held
