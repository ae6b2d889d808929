"""Find the embedded servers a running gateway started, from their data folders (for `worker` and `db-url`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mcp_gateway.embedded.auth import BusAuth
from mcp_gateway.embedded.nats import _client_url  # pyright: ignore[reportPrivateUsage]

__all__ = ["running_nats_pid", "running_nats_url", "running_postgres_url"]


def _alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _held(lock_path: Path) -> bool:
    """Whether a live launcher holds the data dir's lock (a server without one is an orphan, not shared)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _pid(path: Path) -> int | None:
    if not _held(path.with_suffix(".lock")):
        return None
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def running_nats_pid(data_dir: Path) -> int | None:
    """The pid of the embedded NATS running on `data_dir` (its launcher alive), if one runs."""
    return _pid(data_dir / "nats.pid")


def running_nats_url(data_dir: Path, *, credentials: bool = True) -> str | None:
    """The URL of the embedded NATS running on `data_dir`, if one runs: with the gateway user's credentials
    (read from the data folder), or without (`credentials=False`, to show)."""
    pid = running_nats_pid(data_dir)
    url = _client_url(data_dir / f"nats-server_{pid}.ports") if pid is not None else None
    return BusAuth(data_dir).with_credentials(url) if url is not None and credentials else url


def running_postgres_url(data_dir: Path, database: str = "mcp_gateway", host: str = "127.0.0.1") -> str | None:
    """The URL of the embedded PostgreSQL running on `data_dir`, if one runs."""
    if _pid(data_dir / "postgres.pid") is None:
        return None
    try:
        port = int((data_dir / "postgres.port").read_text().strip())
    except (OSError, ValueError):
        return None
    return f"postgresql://postgres@{host}:{port}/{database}"
