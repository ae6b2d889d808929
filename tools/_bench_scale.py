"""The scale run of tools/bench.py (`--scale N`): N long calls held open at once, each streaming its progress;
what they cost the gateway in memory, and how late their progress reaches the client.

How, for each gateway target and wire: a warm-up (a few short calls of the example tool `slow_progress`, not
counted, so that what a first call allocates once is not charged to the N), then two phases, each N calls of
`slow_progress` started at the same moment by a few client processes (tools/_bench_stream.py, hundreds of
connections each, one call per connection):
1. without progress: `{"seconds": S, "interval": 0}` and no progressToken: N calls open, silent;
2. with progress: `{"seconds": S, "interval": I}` and a progressToken per call: the worker reports progress every
   I seconds, each message `t=<its time.time()>`; the gateway folds each report into PostgreSQL and sends it to
   the caller as `notifications/progress` on the call's SSE stream.
While a phase runs, the RSS of the gateway process (with its in-process example workers, unless the worker runs in
its own process: then that one's too) is read from /proc every 50 ms. Memory per open call = (peak - RSS before
phase 1) / N: the connection, the request, the workflow and its wait, the worker's task when in-process, and in
phase 2 the SSE stream. Phase 2 is measured from the same starting point: what phase 1's calls freed stays in the
process (CPython seldom gives memory back) and is reused; so does what an earlier wire's phases left (a second
wire runs on the same gateway: its figures start from that heap and come out lower). Per SSE stream = (peak of
phase 2 - peak of phase 1) / N: on 2026-07-28 a call without progress has no SSE stream (a JSON reply at the end;
only a call silent for 15 s gets one, for keep-alive pings), so that difference is the stream and its progress
flow; on 2025-11-25 every POST of a session answers with an SSE stream, with or without progress, and the
difference is the progress flow alone (not named per SSE stream then). With the gateway's lean route (`lean_http`,
on by default) a 2026-07-28 call without a progressToken skips the SDK's per-request SSE machinery altogether, so
the difference also holds that machinery's cost per call. Progress latency: the client's `time.time()` when the
chunk holding a notification arrived minus the worker's `t=` (one machine, one clock), p50/p99/max over all. CPU
seconds by process come from /proc as for the throughput runs; the clients', gone from /proc by the end, from what
the bench reaped of them. Figures are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from _bench_measure import CpuSnapshot, cpu_groups, percentile, rss_bytes, split
from _bench_stream import TOOL, StreamResult, StreamSpec

__all__ = ["Phase", "ScalePlan", "ScaleReport", "Target", "format_scale", "run_scale", "scale_json_how"]

STREAM = Path(__file__).resolve().parent / "_bench_stream.py"
RSS_EVERY = 0.05
"""Seconds between reads of the targets' RSS while a phase runs."""
STARTUP = 1.5
"""Seconds between starting the client processes and their calls (Python start, imports)."""
CALL_TIMEOUT = 330.0
"""Seconds a client gives one call, connect to reply (the tool's own timeout is 300: it may wait behind a backlog
of progress to fold)."""
WARMUP_CALLS = 8
MIB = 1024 * 1024


class Target(Protocol):
    """A gateway under test, as the scale run sees it."""

    @property
    def name(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def workdir(self) -> Path: ...
    def roots(self) -> dict[str, int]:
        """Its processes: group name (gateway, worker) -> pid; their descendants count by process name."""
        ...

    def check_alive(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ScalePlan:
    calls: int
    seconds: float
    interval: float
    procs: int
    host: str

    def arguments(self, progress: bool) -> dict[str, float]:
        return {"seconds": self.seconds, "interval": self.interval if progress else 0}


def max_open(spans: Sequence[Sequence[float]]) -> int:
    """The most calls open at one moment, from their [started, ended] spans (an end before a start at a tie)."""
    moments = sorted([(s[0], 1) for s in spans] + [(s[1], -1) for s in spans])
    most = now = 0
    for _, delta in moments:
        now += delta
        most = max(most, now)
    return most


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max, rounded; None each when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


@dataclass(slots=True)
class Phase:
    """One phase on one target: what the clients saw, the targets' RSS before and at its peak, the CPU used."""

    progress: bool
    calls: int
    result: StreamResult
    rss_before: dict[str, int]  # group -> bytes
    rss_peak: dict[str, int]
    peak_at: float  # monotonic: when the gateway process's RSS peaked
    wall: float  # seconds from the calls' start to the last client's exit
    cpu_seconds: dict[str, float]
    machine_busy: float

    @property
    def open_at_peak(self) -> int:
        return sum(1 for s in self.result.spans if s[0] <= self.peak_at <= s[1])

    def as_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "with_progress": self.progress,
            "calls": self.calls,
            "completed": r.completed,
            "errors": r.errors,
            "error_samples": r.error_samples,
            "max_open": max_open(r.spans),
            "open_at_rss_peak": self.open_at_peak,
            "sse_streams": r.sse,
            "wall_s": round(self.wall, 2),
            "call_s": _quantiles(r.call_seconds),
            "progress_sent": r.progress_sent,
            "progress_received": r.progress_received,
            "progress_latency_ms": _quantiles(r.progress_latency_ms),
            "rss_mib": {
                g: {"before": round(self.rss_before[g] / MIB, 1), "peak": round(self.rss_peak[g] / MIB, 1)}
                for g in self.rss_before
            },
            "cpu_s_by_process": {g: round(s, 2) for g, s in sorted(self.cpu_seconds.items(), key=lambda kv: -kv[1])},
            "machine_busy": round(self.machine_busy, 3),
        }


def _reaped_seconds() -> float:
    """CPU seconds of the children this process has reaped (the client processes, once they have exited)."""
    times = os.times()
    return times.children_user + times.children_system


def _collect(clients: Sequence[subprocess.Popen[bytes]], outputs: Sequence[Path]) -> StreamResult:
    result = StreamResult()
    for client, out in zip(clients, outputs, strict=True):
        if client.poll() is None:
            client.kill()
            client.wait()
        if client.returncode != 0 or not out.is_file():
            result.add_error(f"client process exited with {client.returncode}")
            continue
        result.merge(StreamResult(**json.loads(out.read_text())))
        out.unlink()
    return result


def run_phase(
    target: Target,
    plan: ScalePlan,
    wire: str,
    *,
    progress: bool,
    calls: int | None = None,
    seconds: float | None = None,
) -> Phase:
    """`calls` (default the plan's) calls of `slow_progress` at once, the RSS sampled until every client is done."""
    target.check_alive()
    n = calls or plan.calls
    phase_plan = plan if seconds is None else ScalePlan(n, seconds, plan.interval, plan.procs, plan.host)
    start_at = time.monotonic() + STARTUP
    parts = split(n, min(plan.procs, n))
    firsts = [sum(parts[:i]) for i in range(len(parts))]
    args = phase_plan.arguments(progress)
    specs = [
        StreamSpec(
            plan.host,
            target.port,
            wire,
            calls=k,
            first=first,
            start_at=start_at,
            seconds=args["seconds"],
            interval=args["interval"],
            progress=progress,
            timeout=CALL_TIMEOUT,
        )
        for k, first in zip(parts, firsts, strict=True)
    ]
    outputs = [target.workdir / f"scale-{target.name}-{i}.json" for i in range(len(specs))]
    clients = [
        subprocess.Popen([sys.executable, str(STREAM), json.dumps(asdict(spec)), str(out)])
        for spec, out in zip(specs, outputs, strict=True)
    ]
    roots = target.roots()

    def sample() -> dict[str, int]:
        return {group: rss_bytes(pid) or 0 for group, pid in roots.items()}

    try:
        time.sleep(max(0.0, start_at - 0.05 - time.monotonic()))
        before, cpu_before, reaped_before = sample(), CpuSnapshot.take(), _reaped_seconds()
        peak, peak_at = dict(before), start_at
        deadline = start_at + CALL_TIMEOUT + 30
        while any(c.poll() is None for c in clients) and time.monotonic() < deadline:
            time.sleep(RSS_EVERY)
            for group, size in sample().items():
                if size > peak[group]:
                    peak[group] = size
                    if group == "gateway":
                        peak_at = time.monotonic()
        cpu_after, ended = CpuSnapshot.take(), time.monotonic()
        result = _collect(clients, outputs)
        client_seconds = _reaped_seconds() - reaped_before
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
    target.check_alive()
    busy = (cpu_after.machine[0] - cpu_before.machine[0]) / max(1, cpu_after.machine[1] - cpu_before.machine[1])
    cpu = cpu_groups(roots, [c.pid for c in clients], cpu_before, cpu_after)
    cpu["client"] = client_seconds  # gone from /proc by now: what this process reaped of them
    cpu["other"] = max(0.0, cpu["other"] - client_seconds)
    return Phase(progress, n, result, before, peak, peak_at, ended - start_at, cpu, busy)


@dataclass(slots=True)
class ScaleReport:
    """Both phases on one target and wire, and what follows from them."""

    target: str
    wire: str
    plan: ScalePlan
    quiet: Phase  # without progress
    loud: Phase  # with progress

    def per_call_kib(self, phase: Phase) -> float:
        """(the gateway's peak in `phase` - its RSS before the first phase) / calls, in KiB."""
        return (phase.rss_peak["gateway"] - self.quiet.rss_before["gateway"]) / self.plan.calls / 1024

    @property
    def per_stream_kib(self) -> float | None:
        """Memory per SSE stream, when the phase without progress had none (2026-07-28), else None."""
        if self.quiet.result.sse:
            return None
        return (self.loud.rss_peak["gateway"] - self.quiet.rss_peak["gateway"]) / self.plan.calls / 1024

    def as_json(self) -> dict[str, Any]:
        r = self.loud.result
        return {
            "calls": self.plan.calls,
            "completed": r.completed,
            "errors": r.errors,
            "progress_sent": r.progress_sent,
            "progress_received": r.progress_received,
            "progress_latency_ms": _quantiles(r.progress_latency_ms),
            "memory_per_open_call_kib": round(self.per_call_kib(self.loud), 2),
            "memory_per_open_call_without_progress_kib": round(self.per_call_kib(self.quiet), 2),
            "memory_per_sse_stream_kib": None if self.per_stream_kib is None else round(self.per_stream_kib, 2),
            "rss_mib": {
                g: {
                    "before": round(self.quiet.rss_before[g] / MIB, 1),
                    "peak_without_progress": round(self.quiet.rss_peak[g] / MIB, 1),
                    "peak": round(self.loud.rss_peak[g] / MIB, 1),
                }
                for g in self.quiet.rss_before
            },
            "phases": {"without_progress": self.quiet.as_json(), "with_progress": self.loud.as_json()},
        }


def run_scale(target: Target, plan: ScalePlan, wire: str) -> ScaleReport:
    """The warm-up, then both phases (see the module's docstring)."""
    warm = run_phase(target, plan, wire, progress=True, calls=min(WARMUP_CALLS, plan.calls), seconds=1.0)
    if warm.result.errors or not warm.result.completed:
        raise RuntimeError(
            f"{target.name}: the warm-up calls of {TOOL} failed ({wire}): {'; '.join(warm.result.error_samples)}"
        )
    quiet = run_phase(target, plan, wire, progress=False)
    loud = run_phase(target, plan, wire, progress=True)
    return ScaleReport(target.name, wire, plan, quiet, loud)


def _ms(values: Mapping[str, float | None], key: str) -> str:
    value = values[key]
    return "-" if value is None else f"{value:,.1f}"


def format_scale(reports: Sequence[ScaleReport]) -> list[str]:
    """A table row per target, wire and phase; then each report's memory figures and CPU."""
    width = max([len("target"), *(len(r.target) for r in reports)])
    lines = [
        f"{'target':<{width}} {'wire':<10} {'phase':<11} {'calls':>5} {'done':>5} {'errors':>6} {'open':>5} "
        f"{'SSE':>5} {'wall s':>7} {'call s p50/p99':>15} {'progress got/sent':>17} "
        f"{'latency ms p50/p99/max':>24} {'RSS MiB before->peak':>20} {'KiB/call':>8}"
    ]
    for rep in reports:
        for phase in (rep.quiet, rep.loud):
            j = phase.as_json()
            call_s, lat = j["call_s"], j["progress_latency_ms"]
            calls = "-" if call_s["p50"] is None else f"{call_s['p50']:.2f}/{call_s['p99']:.2f}"
            got = f"{j['progress_received']:,}/{j['progress_sent']:,}" if phase.progress else "-"
            latency = f"{_ms(lat, 'p50')}/{_ms(lat, 'p99')}/{_ms(lat, 'max')}" if phase.progress else "-"
            rss = f"{rep.quiet.rss_before['gateway'] / MIB:.0f}->{phase.rss_peak['gateway'] / MIB:.0f}"
            lines.append(
                f"{rep.target:<{width}} {rep.wire:<10} {'progress' if phase.progress else 'no progress':<11} "
                f"{phase.calls:>5} {j['completed']:>5} {j['errors']:>6} {j['max_open']:>5} {j['sse_streams']:>5} "
                f"{phase.wall:>7.1f} {calls:>15} {got:>17} {latency:>24} {rss:>20} {rep.per_call_kib(phase):>8.1f}"
            )
            lines += [f"{'':>{width}}   error: {sample}" for sample in j["error_samples"]]
    lines.append("")
    for rep in reports:
        stream = rep.per_stream_kib
        lines.append(
            f"{rep.target} {rep.wire}: the gateway process holds {rep.per_call_kib(rep.loud):.1f} KiB per open call "
            f"streaming progress, {rep.per_call_kib(rep.quiet):.1f} KiB per silent one; "
            + (
                f"{stream:.1f} KiB per SSE stream and its progress flow (calls without progress had no SSE stream)"
                if stream is not None
                else f"{rep.per_call_kib(rep.loud) - rep.per_call_kib(rep.quiet):.1f} KiB for the progress flow "
                "(every call had an SSE stream in both phases)"
            )
        )
        if "worker" in rep.loud.rss_peak:
            w_before, w_peak = rep.quiet.rss_before["worker"], rep.loud.rss_peak["worker"]
            lines.append(
                f"  worker process RSS {w_before / MIB:.0f} -> {w_peak / MIB:.0f} MiB "
                f"({(w_peak - w_before) / rep.plan.calls / 1024:.1f} KiB per open call)"
            )
        for phase in (rep.quiet, rep.loud):
            cpu = ", ".join(f"{g} {s:.1f}" for g, s in sorted(phase.cpu_seconds.items(), key=lambda kv: -kv[1]))
            lines.append(
                f"  CPU-seconds {'with' if phase.progress else 'without'} progress ({phase.wall:.1f} s, machine "
                f"{phase.machine_busy:.0%} busy): {cpu}"
            )
        median_calls = statistics.median(rep.loud.result.call_seconds) if rep.loud.result.call_seconds else None
        if median_calls is not None and median_calls > rep.plan.seconds * 1.5:
            lines.append(
                f"  note: calls with progress took {median_calls:.1f} s (median) for {rep.plan.seconds:g} s of work: "
                "the gateway could not fold the progress as fast as it came (the result waits behind it)"
            )
    return lines


def scale_json_how() -> str:
    """The `how` of the scale run's JSON: this module's docstring, on one line."""
    return " ".join((__doc__ or "").split())
