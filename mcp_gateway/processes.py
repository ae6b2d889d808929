"""`serve --processes N`: one HTTP port served by N gateway processes, so that a host uses all its cores.

The `serve` process becomes a small supervisor. It resolves the servers once (`open_servers`: the embedded NATS
and PostgreSQL are started here when no URL is configured, and kept for its whole life), migrates once
(`migrate_on_start`), settles the secret key (the data dir's `secret.key`, made now, before any child could race
to make it), then starts N children, `python -m mcp_gateway serve --transport http ...` with the same tool folder,
host and port. Each child gets the servers' URLs (NATS with the gateway user's credentials), the key,
`MCPGW_PROCESSES=1`, `MCPGW_MIGRATE_ON_START=false` and `MCPGW_REUSE_PORT=true`: it binds its own listening
socket with SO_REUSEPORT (`reuse_port_sockets`) and the kernel spreads new connections over the children. Several
gateway processes on one NATS and one PostgreSQL share the fold, the outbox relay and the deadline keeper safely,
so the children need nothing from each other. Each keeps its own in-memory limits and its own `/metrics`. The
2026-07-28 wire is stateless: any child answers any request. A 2025-11-25 session lives in the child that opened it
(the SDK's session manager is in memory): a request of it on another connection may reach another child (404).

The supervisor binds the port first (SO_REUSEPORT, never listening: it gets no connection) and holds it: a port
that another program serves stops it before anything starts, and none can take the port while a child restarts.
Supervision: a child that exits unexpectedly is logged (`serve.process_exited`) and started again after a backoff
(`Backoff`: 0.5 s, doubling to 30 s, back to 0.5 s once a child has run 60 s). A child that cannot bind the port
exits with `CANNOT_BIND_EXIT` and the supervisor gives up at once; so it does when one child exits within 2 s of
its start 5 times in a row: it stops the others and exits non-zero, naming host:port. SIGINT/SIGTERM: SIGTERM to
every child (a second signal: again, and they stop at once), up to `grace` seconds, SIGKILL for stragglers, then
the embedded servers stop. SIGHUP goes to every child (reload the tool folder). A child never outlives the
supervisor: on Linux it gets SIGTERM when the supervisor dies (`PR_SET_PDEATHSIG`). The children write to the
supervisor's stderr directly, their log lines carrying `process=<index>` (`bind_process_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from mcp_gateway.app import open_servers
from mcp_gateway.errors import GatewayError
from mcp_gateway.settings import Settings
from mcp_gateway.store import run_migrations

__all__ = [
    "CANNOT_BIND_EXIT",
    "Backoff",
    "bind_process_context",
    "reuse_port_sockets",
    "serve_processes",
]

log = structlog.get_logger(__name__)

CANNOT_BIND_EXIT = 98
"""The exit code of a child that could not bind its port (as errno EADDRINUSE): the supervisor gives up at once."""
INDEX_ENV = "MCPGW_PROCESS_INDEX"
"""The child's index (0..N-1), for its log lines."""
FIRST_DELAY, MAX_DELAY, STEADY_AFTER = 0.5, 30.0, 60.0
QUICK_EXIT, QUICK_EXITS_TO_GIVE_UP = 2.0, 5
POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class Backoff:
    """When to start a child again: 0.5 s after an unexpected exit, doubling up to 30 s, back to 0.5 s after a run
    of 60 s or more. It also counts the exits within 2 s of a start in a row: at 5, the child is `hopeless`."""

    delay: float = FIRST_DELAY
    quick_exits: int = 0

    def exited(self, ran: float) -> float:
        """A child exited after running `ran` seconds: the seconds to wait before starting it again."""
        if ran >= STEADY_AFTER:
            self.delay = FIRST_DELAY
        self.quick_exits = self.quick_exits + 1 if ran < QUICK_EXIT else 0
        delay, self.delay = self.delay, min(self.delay * 2, MAX_DELAY)
        return delay

    @property
    def hopeless(self) -> bool:
        return self.quick_exits >= QUICK_EXITS_TO_GIVE_UP


def reuse_port_sockets(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to host:port with SO_REUSEADDR and SO_REUSEPORT, one per address the host names (as
    asyncio's create_server binds them; IPv6 ones v6-only), not yet listening: the kernel hands a socket new
    connections only once it listens, so a child binds at its start (a port held by another program fails it
    fast) and listens once it can serve. OSError if an address cannot be bound."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_process_context() -> None:
    """In a child of `serve --processes`: every log line of this process carries `process=<index>`."""
    index = os.environ.get(INDEX_ENV, "")
    if index.isdigit():
        structlog.contextvars.bind_contextvars(process=int(index))


async def serve_processes(settings: Settings, *, examples: bool, config: Path | None, grace: float) -> int:
    """Serve `settings.port` with `settings.processes` children until SIGINT or SIGTERM (0); GatewayError when
    the children cannot serve. `examples`: the children run the example workers too; `config`: the settings
    file given with --config, as an absolute path; `grace`: seconds the children get to stop before SIGKILL."""
    where = f"{settings.host}:{settings.port}"
    if settings.port == 0:
        raise GatewayError(
            f"serve --processes {settings.processes}: port 0 would give each process a port of its own; "
            "set a port (--port, MCPGW_PORT)"
        )
    try:  # held (bound, never listening: it gets no connection) for our whole life, so no one else takes the port
        held = reuse_port_sockets(settings.host, settings.port)
    except OSError as exc:
        raise GatewayError(
            f"serve --processes {settings.processes}: cannot bind {where} (SO_REUSEPORT): {exc}; is another "
            "program serving that port?"
        ) from None
    async with contextlib.AsyncExitStack() as stack:
        for sock in held:
            stack.enter_context(sock)
        urls = await stack.enter_async_context(open_servers(settings))
        if settings.migrate_on_start:
            await run_migrations(urls.database)
        env = {
            **os.environ,
            "MCPGW_PROCESSES": "1",
            "MCPGW_REUSE_PORT": "true",
            "MCPGW_MIGRATE_ON_START": "false",
            "MCPGW_NATS_URL": urls.nats,
            "MCPGW_DATABASE_URL": urls.database,
            "MCPGW_SECRET_KEY": _shared_key(settings),
        }
        argv = [
            sys.executable,
            "-m",
            "mcp_gateway",
            *(["--config", str(config)] if config is not None else []),
            "serve",
            "--transport",
            "http",
            *("--host", settings.host, "--port", str(settings.port), "--tools-dir", str(settings.tools_folder())),
            *(["--with-examples"] if examples else []),
        ]
        problem = await _Children(argv, env, settings.processes, where, grace).run()
    if problem is not None:
        raise GatewayError(f"serve --processes {settings.processes} on {where}: {problem}; stopped")
    return 0


def _shared_key(settings: Settings) -> str:
    """The secret key every child gets: `secret_key`, else the data dir's key file (made now, by this process
    alone), else (both URLs configured, no key) one drawn now: the same in every child, though not in other
    gateway processes of this database."""
    key = settings.secret_key_bytes()
    if key is None:
        log.warning(
            "settings.no_secret_key",
            note="set secret_key (the same in every gateway process) so that idempotent retries reaching another "
            "gateway process compare x-sensitive arguments too; this serve's processes share a key drawn now",
        )
        return secrets.token_hex(32)
    if len(key) < 32:
        raise GatewayError(
            f"{settings.data_dir / 'secret.key'}: the key in it has {len(key)} characters, secret_key needs at "
            "least 32; delete the file (a new key is made) or set secret_key"
        )
    return key.decode()


def _child_setup() -> Callable[[], None]:
    """The children's preexec_fn: SIGHUP ignored until the child sets its own handler (a reload), so that one
    passed on while it starts does not end it; on Linux, SIGTERM when this process dies (PR_SET_PDEATHSIG)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    parent = os.getpid()

    def preexec() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
            if os.getppid() != parent:  # the supervisor died before the line above took effect
                os._exit(1)

    return preexec


@dataclass(slots=True)
class _Child:
    index: int
    backoff: Backoff = field(default_factory=Backoff)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None


class _Children:
    """N children of one argv, started, restarted after a backoff, signalled and stopped."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], count: int, where: str, grace: float) -> None:
        self.argv, self.env, self.where, self.grace = list(argv), dict(env), where, grace
        self.children = [_Child(i) for i in range(count)]
        self.stopping = asyncio.Event()
        self.preexec = _child_setup()

    async def run(self) -> str | None:
        """Until SIGINT or SIGTERM (None) or until the children cannot serve (what went wrong)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._signal, signal.SIGHUP)
        try:
            pids = [self._start(child).pid for child in self.children]
            log.info("serve.processes", processes=len(pids), url=f"http://{self.where}/mcp", pids=pids)
            return await self._supervise()
        finally:  # our handlers stay: a signal while the embedded servers stop changes nothing
            await self._stop_all()

    def _start(self, child: _Child) -> subprocess.Popen[bytes]:
        child.proc = subprocess.Popen(
            self.argv,
            env={**self.env, INDEX_ENV: str(child.index)},
            stdin=subprocess.DEVNULL,
            preexec_fn=self.preexec,
            process_group=0,  # a terminal's Ctrl-C reaches us alone; we pass SIGTERM on, once
        )
        child.started, child.restart_at = time.monotonic(), None
        return child.proc

    async def _supervise(self) -> str | None:
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None and (code := child.proc.poll()) is not None:
                    ran = now - child.started
                    delay = child.backoff.exited(ran)
                    log.warning(
                        "serve.process_exited",
                        index=child.index,
                        pid=child.proc.pid,
                        exit_code=code,
                        ran_s=round(ran, 1),
                        restart_in_s=delay,
                    )
                    child.proc = None
                    if code == CANNOT_BIND_EXIT:
                        return f"process {child.index} could not bind the port (its message is above)"
                    if child.backoff.hopeless:
                        return (
                            f"process {child.index} exited within {QUICK_EXIT:g} s of its start "
                            f"{QUICK_EXITS_TO_GIVE_UP} times in a row (last exit code {code}; its log is above)"
                        )
                    child.restart_at = now + delay
                elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                    log.info("serve.process_restarted", index=child.index, pid=self._start(child).pid)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self.stopping.wait()
        return None

    def _stop(self) -> None:
        if self.stopping.is_set():
            self._signal(signal.SIGTERM)  # a second signal: the children stop at once, as a second Ctrl-C does
        self.stopping.set()

    def _signal(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    async def _stop_all(self) -> None:
        """SIGTERM to every child, up to `grace` seconds for them to stop, then SIGKILL."""
        self.stopping.set()
        running = [(c.index, c.proc) for c in self.children if c.proc is not None]
        self._signal(signal.SIGTERM)
        if not await _exited([p for _, p in running], self.grace):
            for index, proc in running:
                if proc.poll() is None:
                    log.warning("serve.process_killed", index=index, pid=proc.pid, grace_s=self.grace)
                    proc.kill()
            await _exited([p for _, p in running], KILL_WAIT_SECONDS)
        log.info("serve.processes_stopped", exit_codes={index: proc.returncode for index, proc in running})


async def _exited(procs: Sequence[subprocess.Popen[bytes]], seconds: float) -> bool:
    """Whether every process has exited within `seconds`."""
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p in procs):  # a child's exit has no event to await
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True
