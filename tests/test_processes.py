"""`serve --processes N`: one port served by N real gateway processes (SO_REUSEPORT) under a supervisor that
restarts a child that dies, stops them all on SIGTERM (and the embedded servers after them), and refuses stdio
and a bad process count."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client

from mcp_gateway.errors import ConfigError
from mcp_gateway.processes import CANNOT_BIND_EXIT, FIRST_DELAY, MAX_DELAY, Backoff
from mcp_gateway.settings import load_settings
from tests.conftest import Env, running_workers

STOP_WITHIN = 30  # the children's grace (10 s) + 5, and room for a busy machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: Mapping[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_gateway", "serve", *args],
            env={**env, "MCPGW_LOG_FORMAT": "json", "MCPGW_LOG_LEVEL": "info"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def _answering(port: int, count: int, *, besides: frozenset[int] = frozenset()) -> set[int]:
    """The pids that answer /readyz (200) on fresh connections, once `count` of them not in `besides` did."""
    seen: set[int] = set()
    async with asyncio.timeout(60):
        while len(seen - besides) < count:
            try:
                async with httpx2.AsyncClient(timeout=5) as http:  # a new connection each time
                    response = await http.get(f"http://127.0.0.1:{port}/readyz")
                if response.status_code == 200:
                    seen.add(int(response.json()["process"]))
                    continue
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.05)
    return seen - besides


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _lines(log: Path, event: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            found.append(json.loads(line))
    return [x for x in found if x.get("event") == event]


async def _stopped(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then its exit code (within STOP_WITHIN seconds)."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, STOP_WITHIN)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


async def test_two_processes_serve_one_port_and_one_killed_is_replaced(env: Env, tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "serve.log"
    parent = _serve({**os.environ, **env.env_vars()}, log, "--processes", "2", "--port", str(port))
    try:
        async with running_workers(env):
            first = await _answering(port, 2)
            assert {_parent_of(pid) for pid in first} == {parent.pid}
            [started] = _lines(log, "serve.processes")
            assert started["processes"] == 2 and set(started["pids"]) == first
            # MCP calls on fresh connections (2026-07-28: stateless, any process answers) until both answered some
            by_process: set[int] = set()
            async with asyncio.timeout(60):
                while by_process != {0, 1}:
                    async with Client(f"http://127.0.0.1:{port}/mcp", mode="auto") as client:
                        result = await client.call_tool("echo", {"text": "hello"})
                    assert result.structured_content is not None and result.structured_content["text"] == "hello"
                    calls = [x for x in _lines(log, "http.request") if x["route"] == "/mcp" and x["status"] == 200]
                    by_process = {x["process"] for x in calls}

            parent.send_signal(signal.SIGHUP)  # passed on: each child loads its tool folder again
            async with asyncio.timeout(30):
                while {x["process"] for x in _lines(log, "registry.reloaded")} != {0, 1}:  # noqa: ASYNC110 - a log file
                    await asyncio.sleep(0.05)

            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            [replacement] = await _answering(port, 1, besides=frozenset(first))
            assert _parent_of(replacement) == parent.pid and not _gone(max(first))
            [exited] = _lines(log, "serve.process_exited")
            assert exited["pid"] == victim and exited["exit_code"] == -signal.SIGKILL and exited["index"] in (0, 1)
            async with Client(f"http://127.0.0.1:{port}/mcp", mode="auto") as client:
                assert (await client.call_tool("echo", {"text": "again"})).structured_content is not None

            assert await _stopped(parent) == 0
        assert all(_gone(pid) for pid in (max(first), replacement))
        assert _lines(log, "serve.processes_stopped")[0]["exit_codes"] == {"0": 0, "1": 0}
    finally:
        parent.kill()
        parent.wait()


async def test_the_embedded_servers_stop_after_every_process(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    port = _free_port()
    parent = _serve({**bare, "MCPGW_DATA_DIR": str(data)}, log, "--processes", "2", "--port", str(port))
    try:
        children = await _answering(port, 2)
        assert len((data / "secret.key").read_text()) == 64  # made by the supervisor, which hands it to every child
        assert await _stopped(parent) == 0
    finally:
        parent.kill()
        parent.wait()
    assert all(_gone(pid) for pid in children)
    assert _mentioning(str(data)) == []  # no nats-server, no postgres of that data dir
    assert _lines(log, "embedded.postgres.stopped") and _lines(log, "embedded.nats.stopped")


def _mentioning(text: str) -> list[int]:
    """The live processes whose command line contains `text`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and text.encode() in (entry / "cmdline").read_bytes()
                and not _gone(int(entry.name))
            ):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_port_held_by_another_program_stops_the_supervisor_and_a_child_at_once_naming_it(env: Env) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "serve", "--processes", "2", "--port", str(port)],
            env={**os.environ, **env.env_vars()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        child = subprocess.run(  # a child alone (as the supervisor starts one): it fails before it connects
            [sys.executable, "-m", "mcp_gateway", "serve", "--port", str(port)],
            env={**os.environ, **env.env_vars(), "MCPGW_REUSE_PORT": "true"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"serve --processes 2: cannot bind 127.0.0.1:{port} (SO_REUSEPORT)" in done.stderr
    assert "serve.processes" not in done.stderr  # before any child started
    assert child.returncode == CANNOT_BIND_EXIT, child.stderr
    assert f"cannot bind 127.0.0.1:{port} beside the other gateway processes" in child.stderr
    assert "gateway.started" not in child.stderr


def test_stdio_is_one_process(env: Env, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "serve", "--processes", "2", "--transport", "stdio"],
        env={**os.environ, **env.env_vars()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "serve --processes 2" in done.stderr and "--transport stdio is one client's pipe" in done.stderr


def test_a_bad_process_count_is_refused_naming_the_key(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "serve"],
        env={**os.environ, **env.env_vars(), "MCPGW_PROCESSES": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "processes: Value error, '0' is not a process count: expected a whole number from 1 to 64" in done.stderr
    for value in ("65", "two"):
        monkeypatch.setenv("MCPGW_PROCESSES", value)
        with pytest.raises(ConfigError) as refused:
            load_settings()
        [problem] = refused.value.problems
        assert problem.key_path == "processes" and f"{value!r} is not a process count" in problem.message
        assert "from 1 to 64 (MCPGW_PROCESSES, serve --processes" in problem.message


def test_the_backoff_doubles_to_a_ceiling_resets_after_a_steady_run_and_counts_quick_exits() -> None:
    backoff = Backoff()
    assert [backoff.exited(10.0) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY, MAX_DELAY]
    assert backoff.exited(61.0) == FIRST_DELAY and backoff.exited(10.0) == 2 * FIRST_DELAY
    assert not backoff.hopeless
    for _ in range(4):
        backoff.exited(0.5)
    assert not backoff.hopeless
    backoff.exited(0.5)
    assert backoff.hopeless
    backoff.exited(3.0)
    assert not backoff.hopeless
