"""The README's snippets, run as written: the client, the tool file and the worker (which must also pass the
project's own ruff rules, since teams copy it into code that does)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from pathlib import Path

from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.service import OutcomeKind
from tests.conftest import ROOT, Env, http_server

BIN = Path(sys.executable).parent


def snippet(name: str) -> str:
    """The code block after `<!-- readme-snippet: NAME -->` in the README, dedented."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- readme-snippet: {name} -->\n( *)```\w*\n(.*?)\n\1```", readme, re.DOTALL)
    assert found is not None, f"README has no snippet {name!r}"
    return textwrap.dedent(found.group(2)) + "\n"


async def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_client_snippet(gateway: Gateway, tmp_path: Path) -> None:
    code = snippet("client")
    assert "http://127.0.0.1:8000/mcp" in code
    async with http_server(gateway) as url:
        script = tmp_path / "client.py"
        script.write_text(code.replace("http://127.0.0.1:8000/mcp", url))
        code_, out, err = await run(sys.executable, str(script))
    assert code_ == 0, err
    assert "'refund_order'" in out and "'workflow_status'" in out
    assert "1.0/4.0" in out and "4.0/4.0" in out  # the progress callback ran at every step
    assert "'status': 'refunded'" in out


async def test_the_tool_file_and_the_worker_snippet_as_a_backend_team_uses_them(env: Env, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "tickets.yaml").write_text(snippet("tool"))
    team = tmp_path / "team"
    team.mkdir()
    (team / "tickets.py").write_text(snippet("worker"))

    lint = await run(str(BIN / "ruff"), "check", "--config", str(ROOT / "pyproject.toml"), str(team / "tickets.py"))
    assert lint[0] == 0, lint[1] + lint[2]
    check = await run(str(BIN / "mcp-gateway"), "check", "--tools-dir", str(tools))
    assert check[0] == 0 and "create_ticket v1.0.0 -> support.tickets.create" in check[1], check

    async with open_gateway(env.settings(tools_dir=tools)) as gateway:
        # As the README says: from the module's folder, no PYTHONPATH, only the NATS URL (and here the test's prefix).
        worker = await asyncio.create_subprocess_exec(
            str(BIN / "mcp-gateway-worker"),
            "tickets:worker",
            "--nats-url",
            env.nats_url,
            "--prefix",
            env.prefix,
            cwd=team,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert worker.stderr is not None
            async with asyncio.timeout(30):
                while b"worker.started" not in await worker.stderr.readline():
                    assert worker.returncode is None
            outcome = await gateway.service.call(
                "create_ticket", {"email": "ada@example.com", "subject": "broken keyboard"}, caller=Caller(subject="t")
            )
            assert outcome.kind is OutcomeKind.COMPLETED, outcome
            assert outcome.result is not None and outcome.result["ticket_id"].startswith("T-")
            refused = await gateway.service.call(
                "create_ticket", {"email": "not-an-email", "subject": "xyz"}, caller=Caller(subject="t")
            )
            assert refused.kind is OutcomeKind.INVALID_ARGUMENTS and refused.violations[0].path == "/email"
        finally:
            worker.terminate()
            async with asyncio.timeout(15):
                assert await worker.wait() == 0  # SIGTERM drains and exits cleanly
