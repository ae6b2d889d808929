"""Fuzz (hypothesis): whatever a client, a worker or a config file sends, nothing crashes, nothing hangs, nothing is
half-written.

1. Tool arguments against the shipped tools' schemas: `violations` never raises and names JSON pointers into the
   value; through the real service, an invalid call writes nothing and a valid one records exactly one workflow.
2. Worker events: the pure fold never raises, never leaves an ending, never lowers the attempt; hostile bodies on
   a real workflow's event subject are dead-lettered or recorded with a note, and break nothing.
3. Config files: `load_registry` and `load_settings` return, or raise a `ConfigError` naming the file.

Examples that hit the real servers are few (each one costs real round trips) and every wait is bounded. The
explicit examples are the minimal inputs of the bugs this file found (all fixed since): deep values and
arguments, a NUL in arguments, deep YAML, non-string keys and sets in schemas, NUL paths, non-string keys and
non-UTF-8 bytes in settings files.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, cast

import nats
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from mcp_gateway_worker.contract import (
    MAX_DEPTH,
    Caller,
    ContractError,
    ErrorInfo,
    Event,
    EventKind,
    Headers,
    InputRequest,
    Subjects,
    decode_event,
    json_depth,
)

from mcp_gateway.app import Gateway
from mcp_gateway.bus._nats import FOLD_CONSUMER
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import TERMINAL, Status, WorkflowState, can_move, fold
from mcp_gateway.errors import ConfigError
from mcp_gateway.registry import Registry, SchemaViolation, Tool, load_registry
from mcp_gateway.settings import Settings, load_settings
from mcp_gateway.store import DeadLetter
from tests import workers as test_workers
from tests.conftest import ROOT, Env

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "mcp-gateway-hypothesis")
"""Hypothesis' caches go to the temporary folder, not into the checkout."""
FUZZ = Caller(subject="fuzz")
PURE = settings(database=None, deadline=None, derandomize=os.environ.get("CI") == "true")
"""No example database: each local run explores afresh, and a failure shows its input in the report; CI runs the
same examples every time (derandomized), so that what lands was proved and a landing never depends on a draw."""
REAL_SERVERS = settings(
    PURE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FOUND = settings(PURE, phases=[Phase.explicit, Phase.generate], max_examples=5, report_multiple_bugs=False)
"""For the bugs this file found: their minimal input first, then a few more; no shrinking."""


# --- JSON values -------------------------------------------------------------------------------------------------

NASTY = ["", "\x00", "a\x00b", "\u202e\u0301", "\U0001f600" * 3, "\uffff", "\U0010ffff", "~1/~0", "/", "~", "ORD-1001"]
"""Strings that have broken parsers and pointers before (NUL, bidi and combining marks, astral planes, `~`, `/`)."""


@cache
def texts(*, nul: bool = True, max_size: int = 12) -> st.SearchStrategy[str]:
    """Any text (hypothesis' alphabet has NUL and every plane, never a lone surrogate: JSON parsers refuse those)."""
    if nul:
        return st.text(max_size=max_size) | st.sampled_from(NASTY)
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=max_size) | st.sampled_from(
        [t for t in NASTY if "\x00" not in t]
    )


huge_ints = st.integers(min_value=2**63 - 2, max_value=2**63 + 2) | st.sampled_from([2**64, -(2**63) - 1, 10**40])
json_ints = st.integers() | huge_ints
json_floats = st.floats(allow_nan=False, allow_infinity=False)


@cache
def json_values(*, nul: bool = True) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | json_ints | json_floats | texts(nul=nul)
    keys = texts(nul=nul)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20
    )


def nest(depth: int, style: str, leaf: Any = None) -> Any:
    """`leaf` inside `depth` levels of lists or objects (without recursion)."""
    value: Any = leaf
    for _ in range(depth):
        value = [value] if style == "list" else {"a": value}
    return value


@cache
def deep_values(low: int, high: int) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | json_ints
    return st.builds(nest, st.integers(low, high), st.sampled_from(["list", "dict"]), leaves)


def resolves(value: Any, pointer: str) -> bool:
    """Whether `pointer` is a JSON pointer (RFC 6901) to a place that exists in `value`."""
    if pointer == "":
        return True
    if not pointer.startswith("/"):
        return False
    node = value
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = cast(dict[str, Any], node)[token]
        elif isinstance(node, list) and re.fullmatch(r"0|[1-9][0-9]*", token) and int(token) < len(node):
            node = cast(list[Any], node)[int(token)]
        else:
            return False
    return True


# --- 1. tool arguments -------------------------------------------------------------------------------------------

TOOL_FOLDERS = (ROOT / "config" / "tools", ROOT / "tests" / "tools", ROOT / "config" / "conformance")
"""What the test gateway serves (tests/conftest.py copies these three folders into one)."""


@cache
def shipped_tools() -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for folder in TOOL_FOLDERS:
        tools.update(load_registry(folder).tools)
    return tools


def _property(schema: dict[str, Any], nul: bool) -> st.SearchStrategy[Any]:
    """Values aimed at one property's schema (often valid, often just off), or anything."""
    kind = schema.get("type")
    aimed: st.SearchStrategy[Any]
    alphabet = st.characters(codec="utf-8", exclude_characters="" if nul else "\x00")
    if kind == "string" and "pattern" in schema:
        aimed = st.from_regex(schema["pattern"], fullmatch=True, alphabet=alphabet)
    elif kind == "string":
        low = schema.get("minLength", 0)
        aimed = st.text(alphabet, min_size=low, max_size=low + 12)
    elif kind == "integer":
        aimed = st.integers(schema.get("minimum"), schema.get("maximum"))
    elif kind == "number":
        aimed = st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        aimed = st.booleans()
    elif "enum" in schema:
        aimed = st.sampled_from(cast(list[Any], schema["enum"]))
    else:
        aimed = json_values(nul=nul)
    return st.one_of(aimed, aimed, aimed, json_values(nul=nul))


def arguments_for(tool: Tool, *, nul: bool = True, objects: bool = False) -> st.SearchStrategy[Any]:
    """Arguments for `tool`: shaped by its schema (valid or nearly), with junk keys, deep ones, anything at all
    (with `objects`, only JSON objects, mostly shaped: what a call carries)."""
    key = (tool.name, nul, objects)
    if key not in _ARGUMENTS:
        _ARGUMENTS[key] = _arguments(tool.input.schema, nul, objects)
    return _ARGUMENTS[key]


_ARGUMENTS: dict[tuple[str, bool, bool], st.SearchStrategy[Any]] = {}


def _arguments(schema: dict[str, Any], nul: bool, objects: bool) -> st.SearchStrategy[Any]:
    properties = cast(dict[str, dict[str, Any]], schema.get("properties") or {})
    required = set(cast(list[str], schema.get("required") or []))
    shaped = st.fixed_dictionaries(
        {k: _property(v, nul) for k, v in properties.items() if k in required},
        optional={k: _property(v, nul) for k, v in properties.items() if k not in required},
    )
    junk = st.dictionaries(texts(nul=nul), json_values(nul=nul), max_size=2)
    if objects:
        return st.one_of(
            shaped,
            shaped,
            shaped,
            shaped,
            shaped,
            st.tuples(shaped, junk).map(lambda pair: {**pair[1], **pair[0]}),
            st.builds(_with_deep, shaped, deep_values(50, 250)),
            junk,
        )
    return st.one_of(
        shaped,
        st.tuples(shaped, junk).map(lambda pair: {**pair[1], **pair[0]}),
        json_values(nul=nul),
        deep_values(1, 250),
        st.builds(_with_deep, shaped, deep_values(50, 250)),
    )


def _with_deep(arguments: dict[str, Any], deep: Any) -> dict[str, Any]:
    return {**arguments, "deep": deep}


def check_violations(tool: Tool, value: Any) -> list[SchemaViolation]:
    found = tool.input.violations(value)
    assert isinstance(found, list)
    for violation in found:
        assert isinstance(violation, SchemaViolation) and isinstance(violation.message, str) and violation.message
        assert resolves(value, violation.path), f"{violation.path!r} points nowhere in the value"
    return found


@settings(PURE, max_examples=200)
@given(data=st.data())
def test_validating_any_json_value_never_raises_and_points_into_it(data: st.DataObject) -> None:
    tools = shipped_tools()
    name = data.draw(st.sampled_from(sorted(tools)), label="tool")
    value = data.draw(arguments_for(tools[name]) | st.floats() | st.lists(st.floats()), label="value")  # nan, inf
    check_violations(tools[name], value)


@FOUND
@example(depth=256, style="list")
@given(depth=st.integers(256, 3000), style=st.sampled_from(["list", "dict"]))
def test_validating_a_value_nested_past_256_levels_never_raises(depth: int, style: str) -> None:
    check_violations(shipped_tools()["echo"], nest(depth, style))


SERVICE_TOOLS = ("echo", "lookup_order", "classify_ticket", "explode", "steps", "bad_output", "media", "sink")
"""Tools whose valid calls end by themselves within a second (no question, no gate, no long sleep)."""


async def count_workflows(gateway: Gateway) -> int:
    return len(await gateway.store.list(limit=100_000))


async def call_and_check(gateway: Gateway, name: str, arguments: Any) -> None:
    tool = gateway.registry[name]
    expected = tool.input.violations(arguments)
    if not expected and isinstance(arguments, dict) and json_depth(arguments) > MAX_DEPTH - 2:
        expected = [SchemaViolation("", "too deep")]
    if not expected and "\\u0000" in json.dumps(arguments):  # PostgreSQL's JSON cannot hold a NUL: refused
        expected = [SchemaViolation("", "a NUL character")]
    before = await count_workflows(gateway)
    async with asyncio.timeout(30):
        outcome = await gateway.service.call(name, arguments, caller=FUZZ)
    after = await count_workflows(gateway)
    tally(f"{name}: {outcome.kind.value}")
    if expected:
        assert outcome.kind is OutcomeKind.INVALID_ARGUMENTS and outcome.violations, outcome
        assert after == before, "an invalid call wrote a workflow"
        return
    assert outcome.kind not in (OutcomeKind.INVALID_ARGUMENTS, OutcomeKind.UNKNOWN_TOOL), outcome
    assert outcome.workflow_id is not None and after == before + 1, (outcome, before, after)
    record = await gateway.store.get(outcome.workflow_id)
    assert record is not None and record.tool == name and record.arguments == (arguments or {})


@settings(REAL_SERVERS, max_examples=50)
@given(data=st.data())
async def test_a_call_records_one_workflow_exactly_when_its_arguments_are_valid(
    gateway: Gateway, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(SERVICE_TOOLS), label="tool")
    arguments = data.draw(arguments_for(gateway.registry[name], nul=False, objects=True), label="arguments")
    await call_and_check(gateway, name, arguments)


@settings(REAL_SERVERS, phases=[Phase.explicit, Phase.generate], max_examples=3)
@example(name="echo", text="\x00")
@given(name=st.sampled_from(["echo", "nobody_home", "sink"]), text=texts(max_size=5).map(lambda t: t + "\x00"))
async def test_a_call_with_a_nul_character_is_refused_as_invalid(gateway: Gateway, name: str, text: str) -> None:
    key = "payload" if name == "sink" else "text"
    await call_and_check(gateway, name, {key: text})


@settings(REAL_SERVERS, phases=[Phase.explicit, Phase.generate], max_examples=3)
@example(depth=255)
@given(depth=st.integers(255, 2000))
async def test_a_call_nested_past_256_levels_is_refused(gateway: Gateway, depth: int) -> None:
    await call_and_check(gateway, "echo", {"text": "x", "deep": nest(depth, "list")})


# --- 2. worker events: the pure fold -----------------------------------------------------------------------------

AT = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
WORKFLOW = "w1"
FORM_SCHEMAS = st.sampled_from(
    [
        {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green"]}}},
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]},
        {"type": "object", "properties": {"a": {"type": "no-such-type"}}},  # not a JSON Schema: invalid_question
        {"type": "object", "properties": {"a": {"type": "string", "format": "credit-card"}}},
        {"type": "object", "properties": 5},
    ]
)


QUESTION_IDS = st.lists(
    st.from_regex(r"\A[A-Za-z0-9_.-]{1,6}\Z").filter(lambda i: i != "approval"), min_size=1, max_size=3, unique=True
)
ERROR_CODES = st.from_regex(r"\A[a-z_]{1,12}\Z")
NUMBERS = st.floats(allow_nan=False) | st.integers(-(2**70), 2**70)
"""Progress figures: any finite float, infinities, integers far past 2**63."""
RESULTS = st.dictionaries(texts(), json_values(), max_size=3)
BLOCKS = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts()}), max_size=2)


@st.composite
def questions(draw: st.DrawFn) -> list[InputRequest]:
    ids = draw(QUESTION_IDS)
    asked: list[InputRequest] = []
    for request_id in ids:
        kind = draw(st.sampled_from(["confirm", "form", "roots"]))
        body: dict[str, Any] = {"id": request_id, "kind": kind, "message": draw(texts(max_size=8)) or "?"}
        if kind == "form":
            body["schema"] = draw(FORM_SCHEMAS)
        asked.append(InputRequest.model_validate(body))
    return asked


FOLDED_KINDS = [
    EventKind.STARTED,
    EventKind.PROGRESS,
    EventKind.LOG,
    EventKind.INPUT_REQUIRED,
    EventKind.COMPLETED,
    EventKind.FAILED,
]


@st.composite
def events(draw: st.DrawFn, workflow_id: str = WORKFLOW) -> Event:
    """Any event the contract accepts: each kind with its required fields, any seq and attempt."""
    kind = draw(st.sampled_from(FOLDED_KINDS))
    body: dict[str, Any] = {
        "workflow_id": workflow_id,
        "attempt": draw(st.integers(1, 4)),
        "seq": draw(st.integers(0, 12)),
        "kind": kind,
        "at": draw(AT),
    }
    if kind is EventKind.PROGRESS:
        body |= {"progress": draw(NUMBERS), "total": draw(st.none() | NUMBERS), "message": draw(st.none() | texts())}
    elif kind is EventKind.LOG:
        body |= {"level": draw(st.sampled_from(["debug", "info", "error"])), "message": draw(texts())}
    elif kind is EventKind.INPUT_REQUIRED:
        body["requests"] = draw(questions())
    elif kind is EventKind.COMPLETED:
        result = draw(st.none() | RESULTS)
        content = draw(BLOCKS if result is None else st.none() | BLOCKS)
        body |= {"result": result, "content": content}
    elif kind is EventKind.FAILED:
        body["error"] = ErrorInfo(code=draw(ERROR_CODES), message=draw(texts()), retryable=draw(st.booleans()))
    return Event.model_validate(body)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Events as a bus delivers them: some honest runs, replayed (duplicates), reordered, from other attempts."""
    base = draw(st.lists(events(), min_size=1, max_size=10))
    order = draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=24))
    return [base[i] for i in order]


def _bad_output(result: dict[str, Any]) -> list[str]:
    return ["/: not what the tool promised"] if len(result) % 2 else []


def _bad_content(blocks: list[dict[str, Any]]) -> list[str]:
    return ["0: not a block"] if any(b.get("text") == "" for b in blocks) else []


@settings(PURE, max_examples=200)
@given(
    start=st.builds(
        WorkflowState,
        status=st.sampled_from([Status.DISPATCHED, Status.RUNNING]),
        attempt=st.integers(1, 2),
        last_seq=st.integers(-1, 3),
    ),
    history=histories(),
    may_defer=st.lists(st.booleans(), min_size=24, max_size=24),
    check_output=st.sampled_from([None, _bad_output]),
    check_content=st.sampled_from([None, _bad_content]),
)
def test_folding_any_history_never_raises_never_reopens_an_ending(
    start: WorkflowState,
    history: list[Event],
    may_defer: list[bool],
    check_output: Callable[[dict[str, Any]], list[str]] | None,
    check_content: Callable[[list[dict[str, Any]]], list[str]] | None,
) -> None:
    state = start
    for event, defer in zip(history, may_defer, strict=False):
        folded = fold(state, event, check_output, may_defer=defer, check_content=check_content)
        new = folded.state
        if state.status in TERMINAL:
            assert new == state and not folded.changed, "an ended workflow moved"
        assert new.attempt >= state.attempt, "the attempt went down"
        if folded.defer:
            assert defer and new == state and not folded.changed
        if not folded.changed:
            assert new == state, "a fold that changed nothing changed the state"
        else:
            assert new.version == state.version + 1
            assert new.status is state.status or can_move(state.status, new.status), (state.status, new.status)
        if new.attempt == state.attempt:
            assert new.last_seq >= state.last_seq, "progress went backwards"
        if new.status in TERMINAL:
            assert new.questions == [], "an ended workflow still asks"
        if new.status is Status.INPUT_REQUIRED:
            assert new.questions, "waiting for input without a question"
        state = new


# --- 2. worker events: hostile bodies on a real workflow's subject ----------------------------------------------

HOSTILE_KINDS = ("garbage", "json", "deep", "oversized", "foreign", "no_such", "msg_id", "replay", "ahead", "attempt")
SAFE_AT = st.datetimes(
    datetime(2000, 1, 1),
    datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=13, minutes=45))]),
).map(datetime.isoformat)
HOSTILE_AT = st.sampled_from(
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", 0]
)
"""Times at the ends of the range (no UTC form), naive, impossible, a Unix time."""
FIELD_TEXT = texts(max_size=8)
HOSTILE_NUMBERS = st.floats() | st.integers(-(2**80), 2**80) | st.sampled_from([2**63, 2**64 + 1, 1e308])
"""NaN and infinities too (Python's json writes them as NaN/Infinity, which its reader accepts)."""


@st.composite
def event_fields(draw: st.DrawFn) -> dict[str, Any]:
    """An event body but for `workflow_id`, `attempt`, `seq`: any kind, hostile values, mostly within the contract."""
    kind = draw(st.sampled_from(["started", "progress", "log", "input_required", "completed", "failed"]))
    body: dict[str, Any] = {"v": 1, "kind": kind, "at": draw(HOSTILE_AT if draw(st.integers(0, 4)) == 0 else SAFE_AT)}
    if kind == "progress":
        body |= {"progress": draw(HOSTILE_NUMBERS), "total": draw(st.none() | HOSTILE_NUMBERS)}
        body["message"] = draw(st.none() | FIELD_TEXT)
    elif kind == "log":
        body |= {"level": draw(st.sampled_from(["info", "error", "emergency", "loud"])), "message": draw(FIELD_TEXT)}
    elif kind == "input_required":
        body["requests"] = [q.model_dump(by_alias=True, exclude_none=True) for q in draw(questions())]
    elif kind == "completed":
        body["result"] = draw(st.dictionaries(FIELD_TEXT, json_values() | HOSTILE_NUMBERS, max_size=3))
    elif kind == "failed":
        body["error"] = {"code": draw(ERROR_CODES), "message": draw(FIELD_TEXT), "details": draw(RESULTS)}
    if draw(st.integers(0, 3)) == 0:  # a field the kind does not take, or a value of the wrong type
        body[draw(st.sampled_from(["total", "logger", "surprise", "request"]))] = draw(json_values())
    return body


REAL_SUBJECT = "testing.slow"
"""The tool subject of the real workflow's tool (`long`): its events come on `<prefix>.evt.testing.slow.<id>`."""


@dataclass(frozen=True)
class Hostile:
    """One hostile message, drawn before the workflow it targets exists (`build` aims it)."""

    kind: str
    raw: bytes = b""
    fields: dict[str, Any] = field(default_factory=dict[str, Any])
    seq: int = 0
    attempt: int = 1
    size: int = 0
    style: str = ""

    def build(self, real: str, subjects: Subjects, tag: str) -> Message:
        """The message, aimed at workflow `real`; `tag` is unique to this message (JetStream de-duplicates by
        `Nats-Msg-Id`)."""
        other = f"fuzz{tag}"  # a workflow that does not exist
        on_real = subjects.event(REAL_SUBJECT, real)  # the real workflow's event subject

        def body(workflow_id: str, seq: int, **more: Any) -> bytes:
            event = {"workflow_id": workflow_id, "attempt": self.attempt, "seq": seq, **self.fields, **more}
            return json.dumps(event).encode()

        match self.kind:
            case "garbage":
                return Message(on_real, self.raw)
            case "json":
                return Message(on_real, json.dumps(self.fields.get("value")).encode())
            case "deep":
                opening, closing = {"list": (b"[", b"]"), "dict": (b'{"a":', b"}")}.get(self.style, (b'{"a":', b"}"))
                inner = opening * self.size + b"1" + closing * self.size
                if self.style == "event":  # a well-formed event of the real workflow, its result nested too deep
                    return Message(on_real, body(real, 2 + self.seq)[:-1] + b', "result": ' + inner + b"}")
                return Message(on_real, inner)
            case "oversized":
                filler = "y" * self.size
                if self.style == "filler":
                    return Message(on_real, filler.encode())
                if self.style == "foreign":
                    return Message(on_real, body(other, 0, kind="log", level="info", message=filler))
                return Message(on_real, body(real, 0, kind="log", level="info", message=filler))
            case "foreign":  # a well-formed event naming another workflow, on the real one's subject
                return Message(on_real, body(other, self.seq))
            case "no_such":  # a well-formed event of a workflow that does not exist, on its own subject
                return Message(subjects.event(REAL_SUBJECT, other), body(other, self.seq))
            case "msg_id":  # a replay whose Nats-Msg-Id is not its key
                return Message(on_real, body(real, 0), {Headers.MSG_ID: f"{real}.1.0.x{tag}"})
            case "replay":  # the key of the worker's own `started` (attempt 1, seq 0), any body
                return Message(on_real, body(real, 0))
            case "attempt":  # an attempt past what the store's column takes (2**31 and beyond)
                return Message(on_real, body(real, self.seq))
            case _:  # "ahead": attempt 1, past the worker's next seq (1): waits for a gap, the workflow ends first
                return Message(on_real, body(real, self.seq))


@dataclass(frozen=True)
class Message:
    subject: str
    body: bytes
    headers: dict[str, str] | None = None


def hostile() -> st.SearchStrategy[Hostile]:
    fields = event_fields()
    return st.one_of(
        st.builds(
            Hostile,
            st.just("garbage"),
            raw=st.binary(max_size=64) | st.sampled_from([b"", b"\x00", b"null", b"[]", b'"x"', b"\xff\xfe{}"]),
        ),
        st.builds(
            Hostile,
            st.just("json"),
            fields=st.fixed_dictionaries(
                {
                    "value": json_values()
                    | st.dictionaries(st.sampled_from(["workflow_id", "seq", "kind", "at", "v"]), json_values())
                }
            ),
        ),
        st.builds(
            Hostile,
            st.just("deep"),
            fields=fields,
            size=st.integers(MAX_DEPTH, 20_000),
            style=st.sampled_from(["list", "dict", "event"]),
        ),
        st.builds(
            Hostile,
            st.just("oversized"),
            fields=st.just({"v": 1, "at": "2026-01-01T00:00:00Z"}),
            size=st.integers(100_000, 900_000),
            style=st.sampled_from(["filler", "foreign", "replay"]),
        ),
        st.builds(Hostile, st.just("foreign"), fields=fields, seq=st.integers(0, 5)),
        st.builds(Hostile, st.just("no_such"), fields=fields, seq=st.integers(0, 5)),
        st.builds(Hostile, st.just("msg_id"), fields=fields),
        st.builds(Hostile, st.just("replay"), fields=fields),
        st.builds(Hostile, st.just("ahead"), fields=fields, seq=st.integers(2, 40) | st.integers(2**31, 2**70)),
        st.builds(Hostile, st.just("attempt"), fields=fields, seq=st.integers(0, 3), attempt=st.integers(2**31, 2**70)),
    )


def unstorable(value: Any) -> bool:
    """Whether PostgreSQL's JSONB refuses the value (a NUL in a string or key, NaN or an infinity)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            return True
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(cast(dict[str, Any], node).keys())
            stack.extend(cast(dict[str, Any], node).values())
        elif isinstance(node, list):
            stack.extend(cast(list[Any], node))
    return False


def in_utc(at: datetime) -> bool:
    """Whether the time has a UTC form (0001-01-01T00:00+01:00 has none: PostgreSQL's driver refuses it)."""
    try:
        at.astimezone(UTC)
    except OverflowError:
        return False
    return True


def expected_fate(message: Message, real: str, subjects: Subjects) -> tuple[str, str]:
    """What the gateway must do with the message, and the event's key: `dead` (a dead letter), `noted` (kept in
    the real workflow's history with a note: it came after the ending), `duplicate` (its key is in the history
    already), `dead_or_noted` (PostgreSQL refuses it while the workflow runs, it is kept once the workflow ended)."""
    try:
        event = decode_event(message.body)
    except ContractError:
        return "dead", ""
    if message.subject != subjects.event(REAL_SUBJECT, event.workflow_id) or event.workflow_id != real:
        return "dead", event.key
    if message.headers is not None and message.headers.get(Headers.MSG_ID) != event.key:
        return "dead", event.key
    if unstorable(event.model_dump(mode="json", exclude_none=True)) or not in_utc(event.at):
        return "dead", event.key  # refused by PostgreSQL MAX_TRIES times
    if event.attempt > 2**31 - 1:  # folded while the workflow runs, its attempt does not fit the column
        return "dead_or_noted", event.key
    assert event.attempt == 1 and event.seq != 1, "the generator never makes an event that would change the workflow"
    return ("duplicate" if event.seq == 0 else "noted"), event.key


async def wait_for(what: str, check: Callable[[], Any], seconds: float, missing: list[str] | None = None) -> None:
    """Poll `check` (an async predicate) until it holds; fail naming `what` (and what is `missing`) after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while not await check():  # noqa: ASYNC110 - polling the database and JetStream: no event to await
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {seconds} s: {what}; missing: {missing}") from None


async def start_gated(gateway: Gateway, env: Env) -> tuple[str, asyncio.Event]:
    """A real workflow of the gated test tool, running (its worker's `started`, seq 0, folded)."""
    gate_name = f"{env.prefix}-{uuid.uuid4().hex[:8]}"
    gate = test_workers.gates.setdefault(gate_name, asyncio.Event())
    outcome = await gateway.service.call("long", {"seconds": 0, "gate": gate_name}, caller=FUZZ, wait=False)
    assert outcome.workflow_id is not None
    workflow_id = outcome.workflow_id

    async def running() -> bool:
        record = await gateway.store.get(workflow_id)
        return record is not None and record.status is Status.RUNNING

    await wait_for("the gated workflow runs", running, 15)
    return workflow_id, gate


def letter_key(letter: DeadLetter) -> tuple[str, int, bytes]:
    return letter.subject, letter.size, letter.head


@settings(REAL_SERVERS, max_examples=5)
@example(
    batch=[
        Hostile(
            kind,
            raw=b"\xff",
            fields={"v": 1, "kind": "started", "at": "2026-01-01T00:00:00Z"},
            seq=2,
            attempt=2**31 if kind == "attempt" else 1,
            size=70_000 if kind in ("deep", "oversized") else 0,
            style="event" if kind == "deep" else "replay",
        )
        for kind in HOSTILE_KINDS
    ]
)
@given(batch=st.lists(hostile(), min_size=4, max_size=12))
async def test_hostile_event_bodies_are_refused_and_break_nothing(
    gateway: Gateway, env: Env, batch: list[Hostile]
) -> None:
    subjects = Subjects(env.prefix)
    letters_before = {letter.id for letter in await gateway.store.dead_letters(limit=100_000)}
    real, gate = await start_gated(gateway, env)
    tag = uuid.uuid4().hex[:8]
    messages = [h.build(real, subjects, f"{tag}{i}") for i, h in enumerate(batch)]
    fates = [expected_fate(m, real, subjects) for m in messages]
    for h, (fate, _) in zip(batch, fates, strict=True):
        tally(f"{h.kind}: {fate}")
    letter_of = [(m.subject, len(m.body), m.body[:1024]) for m in messages]
    dead = Counter(lk for lk, (fate, _) in zip(letter_of, fates, strict=True) if fate == "dead")
    either = [(lk, key) for lk, (fate, key) in zip(letter_of, fates, strict=True) if fate == "dead_or_noted"]
    noted = {key for fate, key in fates if fate == "noted"}
    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(30):
            for m in messages:
                await js.publish(m.subject, m.body, headers=m.headers)
        gate.set()  # the real work finishes now; events that wait for a gap find the workflow ended
        async with asyncio.timeout(15):
            echo = await gateway.service.call("echo", {"text": "still fine"}, caller=FUZZ)
        assert echo.kind is OutcomeKind.COMPLETED, echo

        async def ended() -> bool:
            record = await gateway.store.get(real)
            return record is not None and record.status in TERMINAL

        await wait_for("the real workflow ends", ended, 15)
        missing: list[str] = []

        async def accounted() -> bool:
            letters = [x for x in await gateway.store.dead_letters(limit=100_000) if x.id not in letters_before]
            history = {e.event_key: e for e in await gateway.store.events(real)}
            found = Counter(map(letter_key, letters))
            spare = found - dead
            missing[:] = [f"a dead letter {k[0]} {k[1]} B {k[2][:80]!r} x{n}" for k, n in (dead - found).items()]
            for lk, key in either:
                if spare[lk] > 0:
                    spare[lk] -= 1
                elif key not in history:
                    missing.append(f"a dead letter or a note for {key}")
            missing.extend(f"a note for {key}" for key in noted if key not in history)
            missing.extend(f"no dead letter {x.reason!r} {x.head[:80]!r}" for x in letters if spare[letter_key(x)] > 0)
            info = await js.consumer_info(subjects.event_stream, FOLD_CONSUMER)
            if info.num_pending or info.num_ack_pending:
                missing.append(f"a drained consumer ({info.num_pending} pending, {info.num_ack_pending} unacked)")
            return not missing

        await wait_for("every message dead-lettered or noted, the consumer drained", accounted, 30, missing)
    finally:
        gate.set()
        await nc.close()
    record = await gateway.store.get(real)
    assert record is not None and record.status is Status.COMPLETED and record.state.result == {"slept": 0}, record
    history = await gateway.store.events(real)
    keys = Counter(e.event_key for e in history)
    assert keys[f"{real}.1.0"] == 1 and keys[f"{real}.1.1"] == 1 and max(keys.values()) == 1, keys
    for e in history:
        if e.event_key in noted or e.event_key in {key for _, key in either}:
            assert e.status is None and e.note == "ignored: workflow already completed", e
    assert all(value == "ok" for value in (await gateway.ready()).values()), await gateway.ready()


# --- 3. config files ---------------------------------------------------------------------------------------------

Loaded = TypeVar("Loaded")


@cache
def yaml_values_of(*, nul: bool = True) -> st.SearchStrategy[Any]:
    """What YAML says with string keys: every scalar (NUL, NaN, integers past 2**63), lists, mappings."""
    scalars = st.none() | st.booleans() | json_ints | st.floats() | texts(nul=nul, max_size=10)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(nul=nul), inner, max_size=3),
        max_leaves=12,
    )


yaml_values = yaml_values_of()
GOOD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}, "required": ["email"]},
    {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
    {"type": "object", "$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a"}}},
]
BAD_SCHEMAS: list[Any] = [
    {"type": "nonsense"},
    {"type": "string"},
    {"type": "object", "properties": 5},
    {"type": "object", "properties": {"a": {"type": "string", "format": "credit-card"}}},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
    {"type": "object", "$ref": "#/$defs/missing"},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"},
    {"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "not a token!"}}},
    {"type": "object", "properties": {"a": {"type": "array", "x-mcp-header": "A"}}},
    {"type": "object", "required": "a", "minProperties": -1},
    {"type": "object", "properties": {"a": nest(40, "dict", {"type": "string"})}},
    [],
    "object",
]


def mutated(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(
            ["type", "properties", "required", "format", "pattern", "$ref", "items", "enum", "x-mcp-header"]
        )
        | texts(),
        yaml_values,
        max_size=2,
    ).map(lambda extra: {**schema, **extra})


listed_schemas = st.sampled_from(GOOD_SCHEMAS + BAD_SCHEMAS)
schemas = st.one_of(listed_schemas, listed_schemas, st.sampled_from(GOOD_SCHEMAS).flatmap(mutated), yaml_values)
TOOL_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["fuzz_tool", "fuzz.tool-2", "t3", "", "bad name", "workflow_status", "x" * 129]) | texts(),
    "title": texts(),
    "description": st.sampled_from(["", "d"]) | texts(),
    "version": texts() | json_ints,
    "subject": st.sampled_from(["fuzz.tool", "fuzz.*", "a..b", "fuzz.>"]) | texts(),
    "mode": st.sampled_from(["sync", "async", "auto", "task", "later"]) | yaml_values,
    "timeout": st.sampled_from([0, -1, 0.001, 86_401, 2**64, float("nan")]) | yaml_values,
    "deadline": st.sampled_from([0, 1, float("inf")]) | yaml_values,
    "strict": st.booleans() | yaml_values,
    "poll_after": st.sampled_from([0, 0.5]) | yaml_values,
    "approval": st.sampled_from(["none", "caller", "admin", "root"]) | yaml_values,
    "requires": st.lists(st.sampled_from(["elicitation", "sampling", "roots", "telepathy"]), max_size=3) | yaml_values,
    "annotations": st.fixed_dictionaries({}, optional={"readOnlyHint": yaml_values, "title": yaml_values}),
    "input_schema": schemas,
    "output_schema": schemas | st.none(),
}
BASE_TOOL = {"name": "fuzz_tool", "description": "d", "subject": "fuzz.tool", "input_schema": {"type": "object"}}


@st.composite
def tool_entries(draw: st.DrawFn) -> Any:
    """A tool entry: a valid one with its schemas and a key or two changed, one dropped or added, or anything."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(yaml_values)
    entry: dict[str, Any] = {**BASE_TOOL, "input_schema": draw(schemas)}
    if draw(st.booleans()):
        entry["output_schema"] = draw(schemas)
    for key in draw(st.lists(st.sampled_from(sorted(TOOL_KEYS)), max_size=2, unique=True)):
        entry[key] = draw(TOOL_KEYS[key])
    if roll == 1:
        entry.pop(draw(st.sampled_from(sorted(BASE_TOOL))))
    if roll == 2:
        entry[draw(texts())] = draw(yaml_values)
    return entry


SECTIONS = {
    "tools": st.lists(tool_entries(), max_size=3),
    "prompts": st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["p", "bad name"]) | texts()},
            optional={
                "messages": st.lists(
                    st.fixed_dictionaries(
                        {"role": st.sampled_from(["user", "robot"]), "content": yaml_values},
                    ),
                    max_size=2,
                ),
                "arguments": yaml_values,
            },
        )
        | yaml_values,
        max_size=2,
    ),
    "resources": st.lists(
        st.fixed_dictionaries({"uri": st.sampled_from(["test://a", "nope"]) | texts(), "name": texts()}) | yaml_values,
        max_size=2,
    ),
    "resource_templates": st.lists(
        st.fixed_dictionaries(
            {"uri_template": st.sampled_from(["test://{id}", "test://{", "{+x}{"]) | texts(), "name": texts()},
            optional={"subject": TOOL_KEYS["subject"]},
        )
        | yaml_values,
        max_size=2,
    ),
}


def _one_tool(number: int, input_schema: Any, output: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{**BASE_TOOL, "name": f"tool_{number}", "input_schema": input_schema, **output}]}


one_tool = st.builds(
    _one_tool, st.integers(0, 10**6), schemas, st.fixed_dictionaries({}, optional={"output_schema": schemas})
)
"""One tool that is fine but for its schemas (distinct names: several files of these may all load)."""
documents = st.one_of(
    one_tool,
    one_tool,
    st.fixed_dictionaries({"tools": SECTIONS["tools"]}, optional={k: v for k, v in SECTIONS.items() if k != "tools"}),
    st.fixed_dictionaries({}, optional={**SECTIONS, "tool": yaml_values, "": yaml_values}),
)


def _dumped(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True).encode()


def yaml_file() -> st.SearchStrategy[bytes]:
    """A file's bytes: a tool document, any YAML value, random text or bytes (not UTF-8, not YAML)."""
    dumped = st.one_of(documents, documents, documents, yaml_values).map(_dumped)
    return st.one_of(dumped, dumped, dumped, texts(max_size=40).map(str.encode), st.binary(max_size=40))


def loaded_or_refused(load: Callable[[Path], Loaded], path: Path) -> Loaded | ConfigError:
    """What loading gives: the loaded value or the ConfigError; any other exception escapes (a bug)."""
    try:
        return load(path)
    except ConfigError as exc:
        return exc


def check_registry_folder(files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        written: set[str] = set()
        for i, content in enumerate(files):
            path = Path(folder) / ("sub" if i % 2 else "") / f"tools-{i}.{'yml' if i % 3 == 2 else 'yaml'}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(content)
            written.add(str(path))
        loaded = loaded_or_refused(load_registry, Path(folder))
        if isinstance(loaded, ConfigError):
            assert loaded.problems
            for problem in loaded.problems:
                assert problem.file in written, f"{problem} names no file"
                assert problem.message and str(problem).startswith(problem.file)
                tally(f"problem: {problem.message[:24]}")
        else:
            assert isinstance(loaded, Registry)
            tally(f"loaded {len(loaded)} tool(s)")
            for tool in loaded.values():
                assert isinstance(tool.input.violations({}), list)


@settings(PURE, max_examples=120)
@given(files=st.lists(yaml_file(), min_size=1, max_size=3))
def test_loading_any_tool_folder_returns_or_names_the_file_of_each_problem(files: list[bytes]) -> None:
    check_registry_folder(files)


def one_file(content: bytes, loader: str) -> None:
    """Load one file (a tool folder with only it, or a settings file): it loads, or every problem names it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.yaml"
        path.write_bytes(content)
        if loader == "tools":
            check_registry_folder([content])
            return
        loaded = loaded_or_refused(load_settings, path)
        if isinstance(loaded, ConfigError):
            assert loaded.problems and all(str(path) in problem.file for problem in loaded.problems), loaded
            for problem in loaded.problems:
                tally(f"problem: {problem.key_path}: {problem.message[:24]}")
        else:
            assert isinstance(loaded, Settings)
            tally("loaded")


def tool_file(schema: Any) -> bytes:
    return yaml.safe_dump({"tools": [{**BASE_TOOL, "input_schema": schema}]}, allow_unicode=True).encode()


@settings(FOUND)
@example(depth=1000, style="list", loader="tools")
@given(
    depth=st.integers(1000, 5000),
    style=st.sampled_from(["list", "dict"]),
    loader=st.sampled_from(["tools", "settings"]),
)
def test_a_config_file_nested_past_what_yaml_parses_is_refused(depth: int, style: str, loader: str) -> None:
    opening, closing = ("[", "]") if style == "list" else ("{a: ", "}")
    one_file((opening * depth + closing * depth).encode(), loader)


@settings(FOUND)
@example(key=1)
@example(key="\ud800")
@given(key=st.integers() | st.none() | st.booleans() | st.floats(allow_nan=False) | st.dates() | st.just("\ud800"))
def test_a_schema_whose_keys_are_not_strings_is_refused(key: Any) -> None:
    one_file(tool_file({"type": "object", "properties": {key: {}}}), "tools")


@settings(FOUND)
@example(members={"a"})
@given(members=st.sets(texts(nul=False), max_size=3))
def test_a_schema_with_a_set_is_refused(members: set[str]) -> None:
    one_file(tool_file({"type": "object", "properties": members}), "tools")


SETTING_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "nats_url": st.sampled_from(["nats://127.0.0.1:4222", "", "::"]),
    "database_url": st.sampled_from(["postgresql://x@127.0.0.1/db", ""]),
    "data_dir": st.sampled_from([".data", "/tmp/x", "", "../../.."]),
    "tools_dir": st.sampled_from(["config/tools", "/nonexistent", ""]),
    "reload_interval": st.sampled_from([0, 2, -1, float("nan"), "2"]),
    "host": st.sampled_from(["127.0.0.1", "", "::1"]),
    "port": st.sampled_from([0, 8000, 65535, 65536, -1, 2**64, "80", 80.5]),
    "subject_prefix": st.sampled_from(["mcpgw", "a.b", "a..b", "*", ""]),
    "log_level": st.sampled_from(["debug", "info", "loud"]),
    "log_format": st.sampled_from(["json", "console", "xml"]),
    "migrate_on_start": st.sampled_from([True, False, "yes", 2]),
    "outbox_relay_after": st.sampled_from([0, 0.3, -1]),
    "duplicate_window": st.sampled_from([0, 3600, float("inf")]),
    "db_pool_size": st.sampled_from([0, 1, 20]),
    "allowed_hosts": st.sampled_from([[], ["gw.example:443"], "gw", [1]]),
    "allowed_origins": st.sampled_from([[], ["https://x"], {}]),
    "max_request_body": st.sampled_from([1023, 4096, 2**70]),
    "admin_token_sha256": st.sampled_from(["0" * 64, "0" * 63, "G" * 64]),
}


@settings(PURE, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(
    values=st.fixed_dictionaries(
        {}, optional={k: v | yaml_values_of(nul=False) for k, v in SETTING_VALUES.items()}
    ).flatmap(lambda known: st.dictionaries(texts(), yaml_values, max_size=1).map(lambda extra: {**known, **extra})),
    raw=st.none() | texts(nul=False, max_size=40),
)
def test_loading_any_settings_file_returns_or_names_the_file(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, Any], raw: str | None
) -> None:
    for name in [n for n in os.environ if n.startswith("MCPGW_")]:
        monkeypatch.delenv(name)  # the file alone decides
    content = raw if raw is not None else yaml.safe_dump(values, allow_unicode=True)
    one_file(content.encode(), "settings")


@settings(FOUND)
@example(key="data_dir", value="\x00")
@given(key=st.sampled_from(["data_dir", "tools_dir"]), value=texts(max_size=5).map(lambda t: t + "\x00"))
def test_a_settings_path_with_a_nul_character_is_refused(key: str, value: str) -> None:
    one_file(yaml.safe_dump({key: value}).encode(), "settings")


@settings(FOUND)
@example(key=1)
@given(key=st.integers() | st.none() | st.booleans() | st.floats(allow_nan=False) | st.dates())
def test_a_settings_key_that_is_not_a_string_is_refused(key: Any) -> None:
    one_file(yaml.safe_dump({key: 2}).encode(), "settings")


@settings(FOUND)
@example(content=b"\xff")
@given(content=st.binary(min_size=1).filter(lambda b: not _utf8(b)))
def test_a_settings_file_that_is_not_utf8_is_refused(content: bytes) -> None:
    one_file(content, "settings")


def _utf8(content: bytes) -> bool:
    try:
        content.decode()
    except UnicodeDecodeError:
        return False
    return True
