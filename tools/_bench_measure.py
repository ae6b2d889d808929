"""What tools/bench.py measures with: CPU time by process group, the machine's busy share and memory (RSS),
all from /proc; the percentile of a sample; how connections are split over load processes.

CPU: each process's own CPU plus that of the children it reaped (so that short-lived PostgreSQL backends count),
grouped: a target's root processes by the group each is named for (`gateway`, `worker`, `baseline`), their
descendants by process name (`postgres`, `nats-server`) but for those running Python (the gateway processes of
`serve --processes N`, children of its supervisor), which count as their root's group; the load processes and
theirs as `client`; "other" is whatever else kept the machine's CPUs busy in the window (softirq, the idle target,
foreign processes).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "CpuSnapshot",
    "ProcStat",
    "busiest_others",
    "cpu_groups",
    "descendants",
    "listening",
    "machine_ticks",
    "percentile",
    "processes_mentioning",
    "read_procs",
    "rss_bytes",
    "split",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN if there are none)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def split(total: int, parts: int) -> list[int]:
    """`total` connections over `parts` processes, as evenly as possible."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line or environment contains `text` (to find anything a server left
    behind: the children of `serve --processes N` name the data dir only in their environment)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            for part in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    if text.encode() in (entry / part).read_bytes():
                        found.append(int(entry.name))
                        break
    return found


def listening(port: int) -> int:
    """How many TCP sockets listen on `port` (each process of `serve --processes N` has its own), from
    /proc/net/tcp and tcp6 (state 0A)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                count += len(fields) > 3 and fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
    return count


def rss_bytes(pid: int) -> int | None:
    """The resident set of one process (second field of /proc/PID/statm, in pages), or None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


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

    def group_ticks(self, roots: Mapping[str, int], clients: Sequence[int]) -> dict[str, int]:
        """Ticks so far of each root process (as its group: `roots` maps group -> pid), of their descendants
        by name (postgres, nats-server; those running Python as the root's group), of the clients and their
        descendants (as "client")."""
        groups: dict[str, int] = {}
        for group, root in roots.items():
            for pid in descendants(self.procs, root):
                comm = self.procs[pid].comm
                name = group if pid == root or comm.startswith("python") else comm.split(":")[0]
                groups[name] = groups.get(name, 0) + self.procs[pid].ticks
        for root in clients:
            for pid in descendants(self.procs, root):
                groups["client"] = groups.get("client", 0) + self.procs[pid].ticks
        return groups


def cpu_groups(
    roots: Mapping[str, int], clients: Sequence[int], before: CpuSnapshot, after: CpuSnapshot
) -> dict[str, float]:
    """CPU seconds spent in the window by each group, and by the rest of the machine ("other": softirq for the
    loopback traffic, the idle target, anything else running)."""
    start, end = before.group_ticks(roots, clients), after.group_ticks(roots, clients)
    seconds = {g: max(0, end.get(g, 0) - start.get(g, 0)) / CLK_TCK for g in start.keys() | end.keys()}
    machine_busy = (after.machine[0] - before.machine[0]) / CLK_TCK
    seconds["other"] = max(0.0, machine_busy - sum(seconds.values()))
    return seconds


def busiest_others(
    roots: Mapping[str, int], clients: Sequence[int], before: CpuSnapshot, after: CpuSnapshot, top: int = 3
) -> list[tuple[str, float]]:
    """The processes outside the target and the client that used the most CPU in the window: (name, seconds).
    Children that ended inside the window show as "NAME's children" (their whole life, which may start earlier)."""
    tops = (*roots.values(), *clients)
    ours = {os.getpid()} | {pid for snap in (before, after) for root in tops for pid in descendants(snap.procs, root)}
    by_name: dict[str, int] = {}
    for pid, stat in after.procs.items():
        if pid not in ours:
            was = before.procs.get(pid, ProcStat(stat.ppid, stat.comm, 0, 0))
            by_name[stat.comm] = by_name.get(stat.comm, 0) + stat.own - was.own
            children = f"{stat.comm}'s children"
            by_name[children] = by_name.get(children, 0) + stat.reaped - was.reaped
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return [(name, ticks / CLK_TCK) for name, ticks in ranked if ticks > 0]
