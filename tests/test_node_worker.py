"""The Node.js worker (workers/node/, the `nats` npm package) behind the real gateway, and on the bare bus.

The gateway runs in process WITHOUT the Python example workers (they would share the durable consumers of the
same prefix); the Node worker runs as a subprocess on the test's prefix and NATS. It serves `echo` and
`node_refund` (tests/tools/node.yaml: progress steps and a confirmation asked of the user), checked through the
SDK's Client over HTTP on both protocol revisions; and the bus contract itself is checked message by message
(headers, seq, attempt, streams and consumer settings, deadline, unknown tool, cancel, redelivery).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import mcp.types as types
import nats
import pytest
from mcp_gateway_worker import Worker, redact_url
from mcp_gateway_worker.contract import Caller, Command, Subjects, encode
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mcp_gateway.app import open_gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN
from mcp_gateway.server._results import WORKFLOW_META
from tests.conftest import ROOT, Env, StrictClient, error_detail, http_server

NODE_DIR = ROOT / "workers" / "node"
DURABLES = {"diagnostics.echo": "mcpgw-worker-diagnostics_echo", "nodejs.refund": "mcpgw-worker-nodejs_refund"}


def _unavailable(reason: str) -> None:
    """Skip, but fail in CI (CI=true): there the Node worker must be tested."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the Node worker must be tested there)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary (tools/test sets MCPGW_TEST_NODE), with the worker's packages installed."""
    binary = os.environ.get("MCPGW_TEST_NODE")
    if not binary or not Path(binary).is_file():
        _unavailable("MCPGW_TEST_NODE is not set to a node binary: run the tests with ./tools/test, which sets it")
    if not (NODE_DIR / "node_modules" / "nats").is_dir():
        _unavailable("workers/node/node_modules is missing: run npm ci --prefix workers/node (./tools/test does)")
    assert binary is not None
    return binary


class NodeWorker:
    """The worker's process and its log (JSON lines on stderr, every one checked to be JSON)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.stdout = b""
        self._changed = asyncio.Condition()
        self._eof = False

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode().strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"event": "NOT-JSON", "line": line}
            async with self._changed:
                self.logs.append(entry)
                self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout = await self.process.stdout.read()

    def lines(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]

    async def logged(self, event: str, *, times: int = 1, **fields: Any) -> dict[str, Any]:
        """The first log line of `event` with `fields`, once there are `times` of them (waits; fails if the
        process ends first)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.lines(event, **fields)) >= times or self._eof)
        found = self.lines(event, **fields)
        assert len(found) >= times, f"the node worker ended without logging {event} {fields}: {self.logs}"
        return found[0]

    async def stop(self) -> int:
        """SIGTERM: the worker drains and exits."""
        self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


@asynccontextmanager
async def node_worker(node: str, nats_url: str, prefix: str) -> AsyncGenerator[NodeWorker]:
    env = {
        **os.environ,
        "MCPGW_NATS_URL": nats_url,
        "MCPGW_SUBJECT_PREFIX": prefix,
        "MCPGW_LOG_LEVEL": "debug",
    }
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "src" / "main.js"),
        env=env,
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = NodeWorker(process)
    readers = [asyncio.create_task(worker.read_logs()), asyncio.create_task(worker.read_stdout())]
    try:
        async with asyncio.timeout(20):
            started = await worker.logged("worker.started")
        assert started["prefix"] == prefix and started["url"] == redact_url(nats_url)  # no password in its logs
        assert set(started["tools"]) == {"echo", "node_refund"}
        yield worker
        assert not worker.lines("NOT-JSON"), "every stderr line is a JSON object"
        assert worker.stdout == b"", "the worker writes nothing on stdout"
        assert not worker.lines("worker.handle_crashed") and not worker.lines("worker.handler_crashed")
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(10):
            await process.wait()
            await asyncio.gather(*readers)


async def consumer_state(nats_url: str, prefix: str, subject: str) -> dict[str, Any]:
    """The durable consumer of `subject`: its config, and what it has pending."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(Subjects(prefix).command_stream, DURABLES[subject])
    finally:
        await nc.close()
    return {
        "config": info.config,
        "num_ack_pending": info.num_ack_pending,
        "num_pending": info.num_pending,
        "num_redelivered": info.num_redelivered,
        "delivered": info.delivered.consumer_seq if info.delivered else None,
    }


def answering(*actions: str) -> tuple[Callable[..., Any], list[str]]:
    """An elicitation callback answering `actions` in turn; and the messages it was shown."""
    shown: list[str] = []
    queue = list(actions)

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        shown.append(params.message)
        action = queue.pop(0)
        assert action in ("accept", "decline")
        return types.ElicitResult(action="accept" if action == "accept" else "decline")

    return callback, shown


def workflow_of(result: types.CallToolResult) -> str:
    assert result.meta is not None and isinstance(result.meta.get(WORKFLOW_META), str), result
    return result.meta[WORKFLOW_META]


REFUND = {"order_id": "ORD-1003", "amount_cents": 12_000, "reason": "arrived broken", "step_delay": 0.01}


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # 2025-11-25 elicitation; 2026-07-28 input-required rounds
async def test_node_worker_behind_the_gateway(node: str, env: Env, mode: str) -> None:
    # The gateway creates the streams first, with a de-duplication window of its own: the worker keeps it.
    async with (
        open_gateway(env.settings(duplicate_window=120)) as gateway,
        node_worker(node, env.nats_url, env.prefix) as worker,
        http_server(gateway) as url,
    ):
        callback, shown = answering("decline", "accept")
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        async with (
            asyncio.timeout(60),
            StrictClient(url, mode=mode, read_timeout_seconds=30, elicitation_callback=callback) as client,
        ):
            echoed = await client.call_tool("echo", {"text": "héllo from Node ✓"})
            declined = await client.call_tool("node_refund", REFUND)
            accepted = await client.call_tool("node_refund", REFUND, progress_callback=on_progress)
            too_much = await client.call_tool("node_refund", {**REFUND, "amount_cents": 1_000})

        # echo: the text back, and the id of the workflow the Node worker served.
        assert not echoed.is_error, echoed.content
        assert echoed.structured_content == {"text": "héllo from Node ✓", "workflow_id": workflow_of(echoed)}

        # Declined: the question reached the user, the tool failed with its own code.
        assert shown[0] == "Refund 120.00 USD of order ORD-1003 to grace@example.com?"
        assert declined.is_error and error_detail(declined)["error"] == "not_confirmed", declined

        # Accepted: progress in four steps, the refund, and the whole story in the workflow's history.
        assert shown == [shown[0], shown[0]]
        assert not accepted.is_error, accepted.content
        result = accepted.structured_content
        assert result is not None
        assert result["status"] == "refunded" and result["amount_cents"] == 12_000 and result["currency"] == "USD"
        assert result["refund_id"].startswith("RF-N") and result["reason"] == "arrived broken"
        steps = [p for p, _, _ in seen]
        assert seen[-1] == (4, 4, "done") and steps == sorted(steps), seen  # in order
        # (The gateway repeats the last progress on every other change of the workflow, here the question and
        # its answer: 1, 1, 1, 2, 3, 4 on 2025-11-25, where MCP wants each notification's progress to increase.)
        if mode == "legacy":  # one open call saw them all (2026-07-28 resumes in a second request)
            assert sorted(set(steps)) == [1, 2, 3, 4], seen

        # A failure before any question: the refundable rest is now 900 cents.
        assert too_much.is_error and error_detail(too_much)["error"] == "amount_too_large"

        wid = workflow_of(accepted)
        record = await gateway.store.get(wid)
        assert record is not None and record.status is Status.COMPLETED and record.state.result == result
        history = await gateway.store.events(wid)
        kinds = [e.kind for e in history if e.kind != "dispatched"]  # the outbox's mark lands when it lands
        assert kinds[0] == "created" and kinds[-1] == "completed", kinds
        assert kinds.count("progress") == 4 and kinds.count("input_required") == 1
        assert kinds.count("input_answered") == 1 and kinds.count("completed") == 1
        assert kinds.index("input_required") < kinds.index("input_answered") < kinds.index("completed")
        assert all(e.note is None for e in history), [(e.kind, e.note) for e in history]
        asked = next(e for e in history if e.kind == "input_required")
        assert asked.data["requests"][0]["id"] == "q1" and asked.data["requests"][0]["kind"] == "confirm"
        answered = next(e for e in history if e.kind == "input_answered")
        assert answered.data["action"] == "accept"
        # The worker's events keyed <workflow>.<attempt>.<seq>, seq from 0 with no gap.
        keys = [e.event_key for e in history if e.event_key.startswith(f"{wid}.1.")]
        assert sorted(int(k.rsplit(".", 1)[1]) for k in keys) == list(range(len(keys))) and len(keys) >= 6

        declined_history = [e.kind for e in await gateway.store.events(workflow_of(declined)) if e.kind != "dispatched"]
        assert declined_history.count("input_answered") == 1 and declined_history[-1] == "failed"

        # Every command acknowledged once its terminal event was stored: nothing pending, nothing redelivered.
        for wid_ in (workflow_of(echoed), workflow_of(declined), wid, workflow_of(too_much)):
            async with asyncio.timeout(10):
                await worker.logged("worker.settled", workflow_id=wid_)
        for subject, delivered in (("diagnostics.echo", 1), ("nodejs.refund", 3)):
            state = await consumer_state(env.nats_url, env.prefix, subject)
            assert state["num_ack_pending"] == 0 and state["num_pending"] == 0 and state["num_redelivered"] == 0
            assert state["delivered"] == delivered

        # The streams are as the gateway made them (the worker changes no existing stream).
        nc = await nats.connect(env.nats_url)
        try:
            js = nc.jetstream()
            for stream in (Subjects(env.prefix).command_stream, Subjects(env.prefix).event_stream):
                assert (await js.stream_info(stream)).config.duplicate_window == 120
        finally:
            await nc.close()

        async with asyncio.timeout(10):
            assert await worker.stop() == 0  # SIGTERM drains and exits cleanly
        assert worker.lines("worker.stopped")


async def test_node_worker_stops_a_cancelled_workflow(node: str, env: Env) -> None:
    async with (
        open_gateway(env.settings()) as gateway,
        node_worker(node, env.nats_url, env.prefix) as worker,
        asyncio.timeout(30),
    ):
        handed = await gateway.service.call("node_refund", REFUND, caller=Caller(subject="dora"), wait=False)
        assert handed.kind is OutcomeKind.STILL_RUNNING and handed.workflow_id is not None
        wid = handed.workflow_id
        with gateway.waiters.watch(wid) as watch:  # until the gateway has folded the question
            status = (await gateway.workflows.get(wid, ADMIN)).status
            while status is not Status.INPUT_REQUIRED:
                status = (await watch.next()).state.status
        await worker.logged("worker.asked", workflow_id=wid)  # it waits for the user's confirmation
        await gateway.workflows.cancel(wid, ADMIN)
        await worker.logged("worker.stopped_by_gateway", workflow_id=wid, reason="cancelled")
        await worker.logged("worker.settled", workflow_id=wid)
        record = await gateway.workflows.wait(wid, ADMIN, 10)
        assert record.status is Status.CANCELLED
        state = await consumer_state(env.nats_url, env.prefix, "nodejs.refund")
        assert state["num_ack_pending"] == 0 and state["num_redelivered"] == 0  # settled, not to be redone
        # Its terminal event, stored before the ack: failed, with the cancel's reason as its code.
        settled = await worker.logged("worker.settled", workflow_id=wid)
        nc = await nats.connect(env.nats_url)
        try:
            subjects = Subjects(env.prefix)
            last = await nc.jetstream().get_last_msg(subjects.event_stream, subjects.event("nodejs.refund", wid))
        finally:
            await nc.close()
        assert last.headers is not None and last.headers["Nats-Msg-Id"] == settled["event_key"]
        body = json.loads(last.data or b"{}")
        assert body["kind"] == "failed" and body["error"]["code"] == "cancelled", body
        kinds = [e.kind for e in await gateway.store.events(wid)]
        # Asked, then cancelled by the gateway; the worker's late `failed` is folded (as ignored) after its ack.
        assert [k for k in kinds if k in ("progress", "input_required", "cancelled")] == [
            "progress",
            "input_required",
            "cancelled",
        ], kinds
        assert "completed" not in kinds


async def _events(js: JetStreamContext, subjects: Subjects, count: int) -> list[Msg]:
    """The first `count` messages of the events stream, with their headers, as JetStream stored them."""
    sub = await js.pull_subscribe(
        subjects.all_events,
        stream=subjects.event_stream,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    msgs: list[Msg] = []
    try:
        while len(msgs) < count:
            msgs += await sub.fetch(count - len(msgs), timeout=10)
    finally:
        await sub.unsubscribe()
    return msgs


async def test_node_worker_speaks_the_contract(node: str, env: Env) -> None:
    """No gateway: commands and a cancel published by hand, the events read back from the stream."""
    prefix, reference = env.prefix, env.prefix + "py"
    subjects = Subjects(prefix)
    nc = await nats.connect(env.nats_url)
    js = nc.jetstream()
    try:
        async with node_worker(node, env.nats_url, prefix) as worker, asyncio.timeout(60):
            # It created the missing streams and its consumers exactly as the Python side does.
            probe = Worker("probe")
            probe.tool("echo", subject="diagnostics.echo")(_never)
            probe.tool("node_refund", subject="nodejs.refund")(_never)
            async with probe.with_prefix(reference).connect(env.nats_url):
                pass
            theirs = Subjects(reference)
            for mine, python, subject in (
                (subjects.command_stream, theirs.command_stream, subjects.all_commands),
                (subjects.event_stream, theirs.event_stream, subjects.all_events),
            ):
                created = (await js.stream_info(mine)).config
                expected = (await js.stream_info(python)).config
                assert created.subjects == [subject] and created.name == mine
                assert replace(created, name=None, subjects=None) == replace(expected, name=None, subjects=None)
                assert created.duplicate_window == 3_600 and created.max_age == 7 * 86_400
            for subject, durable in DURABLES.items():
                created_c = (await js.consumer_info(subjects.command_stream, durable)).config
                expected_c = (await js.consumer_info(theirs.command_stream, durable)).config
                assert created_c.filter_subject == subjects.command(subject) and created_c.durable_name == durable
                assert replace(created_c, filter_subject=None) == replace(expected_c, filter_subject=None)
                assert created_c.ack_policy == AckPolicy.EXPLICIT and created_c.ack_wait == 30
                assert (created_c.max_deliver, created_c.max_ack_pending) == (5, 64)

            trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            soon = datetime.now(UTC) + timedelta(seconds=60)
            echo = subjects.command("diagnostics.echo")

            def command(tool: str, *, deadline: datetime = soon) -> tuple[str, bytes]:
                wid = uuid.uuid4().hex
                body = Command(
                    workflow_id=wid,
                    tool=tool,
                    tool_version="1.0.0",
                    arguments={"text": f"to {tool}"},
                    caller=Caller(subject="tester", can_answer=["elicitation"]),
                    deadline=deadline,
                    subject="diagnostics.echo",
                    reply_subject=subjects.event("diagnostics.echo", wid),
                )
                return wid, encode(body)

            async def send(data: bytes, msg_id: str) -> None:
                await js.publish(echo, data, headers={"Nats-Msg-Id": msg_id, "Mcpgw-Schema": "2", "traceparent": trace})

            ok, ok_body = command("echo")
            late, late_body = command("echo", deadline=datetime.now(UTC) - timedelta(seconds=1))
            unknown, unknown_body = command("no_such_tool")
            stopped, stopped_body = command("echo")  # cancelled before its command arrives
            for wid, data in ((ok, ok_body), (late, late_body), (unknown, unknown_body)):
                await send(data, wid)
            cancel = {"v": 1, "workflow_id": stopped, "reason": "timed_out"}
            await nc.publish(subjects.cancel(stopped), json.dumps(cancel).encode())
            await worker.logged("worker.cancel_heard", workflow_id=stopped)
            await send(stopped_body, stopped)
            await send(json.dumps({**json.loads(ok_body), "colour": "red"}).encode(), "bad")  # an unknown key
            await worker.logged("worker.bad_command")
            for wid in (ok, late, unknown, stopped):
                await worker.logged("worker.settled", workflow_id=wid)
            # The same command again (a redelivery, as after a lost ack): answered from memory, not run twice;
            # the event it sends again has the same Nats-Msg-Id, so JetStream keeps one.
            await send(ok_body, "again")
            await worker.logged("worker.redelivered_done", workflow_id=ok)
            await worker.logged("worker.settled", workflow_id=ok, times=2)

            events = await _events(js, subjects, 4)
            by_workflow = {json.loads(m.data)["workflow_id"]: m for m in events}
            assert set(by_workflow) == {ok, late, unknown, stopped}
            event_schema = jsonschema_rs.Draft202012Validator(
                json.loads((ROOT / "docs" / "schemas" / "event.schema.json").read_text(encoding="utf-8"))
            )
            for wid, m in by_workflow.items():
                body = json.loads(m.data)
                assert event_schema.is_valid(body), [e.message for e in event_schema.iter_errors(body)]
                assert m.subject == subjects.event("diagnostics.echo", wid)
                assert m.headers is not None and m.headers["Nats-Msg-Id"] == f"{wid}.1.0"
                assert m.headers["Mcpgw-Schema"] == "2"
                assert (body["v"], body["attempt"], body["seq"]) == (1, 1, 0)
                assert datetime.fromisoformat(body["at"]) <= datetime.now(UTC)
                if wid != stopped:
                    assert m.headers["traceparent"] == trace  # carried from the command
            assert json.loads(by_workflow[ok].data)["result"] == {"text": "to echo", "workflow_id": ok}
            codes = {wid: json.loads(by_workflow[wid].data)["error"]["code"] for wid in (late, unknown, stopped)}
            assert codes == {late: "deadline_exceeded", unknown: "unknown_tool", stopped: "timed_out"}
            state = await consumer_state(env.nats_url, prefix, "diagnostics.echo")
            assert state["delivered"] == 6 and state["num_ack_pending"] == 0 and state["num_pending"] == 0
            info = await js.stream_info(subjects.event_stream)
            assert info.state.messages == 4  # the redelivered echo's event was a duplicate

            async with asyncio.timeout(10):
                assert await worker.stop() == 0
    finally:
        await nc.close()


async def _never(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("the probe worker only creates its consumers")
