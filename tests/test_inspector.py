"""A real TypeScript MCP client against the real gateway: the MCP Inspector CLI (pinned 2.12.0, built on the
official TypeScript SDK, as strict as Claude Desktop), over streamable HTTP (both protocol revisions) and stdio.

TypeScript clients check every `structuredContent` against the tool's listed `outputSchema`, on `isError`
results too, and turn a mismatch (or a successful result of a tool with an `outputSchema` but no
`structuredContent`) into a client-side error; the Python SDK's `Client` lets both pass. So each outcome here
(a success, each kind of failure, a workflow handle and its result) must reach the Inspector as a JSON result,
never as an error object. Node 22 and the Inspector come from `./tools/test` (MCPGW_TEST_NODE,
MCPGW_TEST_INSPECTOR); without them these tests are skipped, except on CI (CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema_rs
import pytest
from mcp import Client

from mcp_gateway.app import Gateway
from mcp_gateway.core.access import ADMIN
from mcp_gateway.server._results import ERROR_META, WORKFLOW_META
from tests.conftest import ROOT, Env, http_server

NODE_VAR = "MCPGW_TEST_NODE"
INSPECTOR_VAR = "MCPGW_TEST_INSPECTOR"
INSTALL_HINT = (
    "./tools/test installs them (or: source tools/_setup.sh; source tools/_node.sh; "
    "node_package inspector @modelcontextprotocol/inspector@2.12.0)"
)
RUN_TIMEOUT = 60.0
"""Seconds one Inspector run may take (a stdio run starts a gateway: about 3 s)."""
SCHEMA_REFUSAL = "does not match the tool's output schema"
TOOL_ERROR_EXIT = 5
"""The Inspector's exit code for a result with `isError: true` (its error envelope's code: tool_is_error)."""
TRANSPORTS = ("http", "http-modern", "stdio")
"""Streamable HTTP on 2025-11-25 (as Claude Desktop and the Inspector by default) and on 2026-07-28, and stdio.
A stdio run starts a gateway (3 to 6 s), so stdio covers a representative subset: the rest is the same code."""


@dataclass(frozen=True)
class Run:
    """One Inspector process: its command line, exit code and output."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str

    def report(self) -> str:
        return (
            f"Inspector: {shlex.join(self.argv)}\nexit code: {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr (end)\n{self.stderr[-8000:]}"
        )

    def error_envelope(self) -> dict[str, Any] | None:
        """The Inspector's own error object (`{"error": {"code": ..., "message": ...}}`, its last stderr line of
        that form; under stdio the gateway's log lines share stderr), or None."""
        for line in reversed(self.stderr.splitlines()):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and isinstance(data.get("error"), dict):
                    return cast(dict[str, Any], data["error"])
        return None


@dataclass(frozen=True)
class Inspector:
    """The Inspector CLI pointed at one gateway, on one transport and protocol era."""

    executable: Path
    node_bin: Path
    target: tuple[str, ...]
    """The server: its URL and `--transport http`, or the stdio wrapper script."""
    era: str
    """The Inspector's --protocol-era: legacy (2025-11-25, as Claude Desktop) or modern (2026-07-28)."""
    home: Path
    output_schemas: dict[str, dict[str, Any] | None]
    """Each tool's `outputSchema` as the gateway lists it, for a check independent of the Inspector's."""

    async def run(self, *args: str) -> Run:
        argv = [str(self.executable), "--cli", *self.target, "--format", "json", "--protocol-era", self.era, *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "PATH": f"{self.node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
                "HOME": str(self.home),  # its catalog, client config and OAuth state stay in this test's folder
            },
            start_new_session=True,  # its own process group: on a timeout, the stdio gateway it spawned goes too
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout = asyncio.ensure_future(proc.stdout.read())
        stderr = asyncio.ensure_future(proc.stderr.read())
        exited = asyncio.ensure_future(proc.wait())
        _, pending = await asyncio.wait({stdout, stderr, exited}, timeout=RUN_TIMEOUT)
        if pending:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, still = await asyncio.wait(pending, timeout=10)
            for task in still:
                task.cancel()
        run = Run(
            argv,
            proc.returncode,
            stdout.result().decode(errors="replace") if stdout.done() and not stdout.cancelled() else "",
            stderr.result().decode(errors="replace") if stderr.done() and not stderr.cancelled() else "",
        )
        assert not pending, f"the Inspector did not finish within {RUN_TIMEOUT} s\n{run.report()}"
        return run

    async def call_tool(self, name: str, **arguments: str) -> dict[str, Any]:
        """`tools/call` through the Inspector (`--tool-arg k=v`: it types each value by the tool's input schema).
        Returns the result; fails unless the Inspector accepted it as one: JSON on stdout, exit code 0 (or 5 and
        its tool_is_error envelope for an isError result), no output-schema refusal."""
        args = ["--method", "tools/call", "--tool-name", name]
        if arguments:
            args += ["--tool-arg", *(f"{key}={value}" for key, value in arguments.items())]
        run = await self.run(*args)
        assert SCHEMA_REFUSAL not in run.stdout + run.stderr, f"the Inspector refused the result\n{run.report()}"
        try:
            envelope: Any = json.loads(run.stdout)
        except ValueError:
            envelope = None
        assert isinstance(envelope, dict) and isinstance(envelope.get("result"), dict), (
            f"the Inspector printed no JSON result\n{run.report()}"
        )
        result = cast(dict[str, Any], envelope["result"])
        if result.get("isError") is True:
            refusal = run.error_envelope()
            assert run.returncode == TOOL_ERROR_EXIT and refusal is not None, run.report()
            assert refusal.get("code") == "tool_is_error", run.report()
        else:
            assert run.returncode == 0, run.report()
            schema = self.output_schemas.get(name)
            if schema is not None:
                assert "structuredContent" in result, f"{name}: no structuredContent\n{run.report()}"
                validator = jsonschema_rs.Draft202012Validator(schema)
                problems = [e.message for e in validator.iter_errors(result["structuredContent"])]
                assert not problems, f"{name}: structuredContent breaks the listed outputSchema: {problems}"
        return result


def texts(result: dict[str, Any]) -> str:
    """The text blocks of a result's content, joined."""
    blocks = cast(list[dict[str, Any]], result.get("content") or [])
    return "\n".join(str(block.get("text", "")) for block in blocks if block.get("type") == "text")


@pytest.fixture(scope="session")
def inspector_install() -> tuple[Path, Path]:
    """The Inspector CLI and Node 22 (skipped without them, failed on CI)."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for var in (NODE_VAR, INSPECTOR_VAR):
        value = os.environ.get(var, "")
        if not value:
            problems.append(f"{var} is not set")
        elif not Path(value).is_file():
            problems.append(f"{var}={value} does not exist")
        else:
            found[var] = Path(value)
    if problems:
        reason = f"the MCP Inspector CLI is missing ({'; '.join(problems)}): {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Inspector tests")
        pytest.skip(reason)
    return found[INSPECTOR_VAR], found[NODE_VAR]


def stdio_wrapper(path: Path, env: Env) -> Path:
    """A script that starts `mcp-gateway serve --transport stdio` on this test's NATS, database and prefix.

    The Inspector cannot take the command line itself (it reads `--transport` as its own option), and it passes
    the server only HOME, LOGNAME, PATH, SHELL, TERM and USER: the settings are written into the script."""
    lines = [
        "#!/bin/sh",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.env_vars().items()),
        f"cd {shlex.quote(str(ROOT))}",
        f"exec {shlex.quote(sys.executable)} -m mcp_gateway serve --transport stdio",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


@pytest.fixture(params=TRANSPORTS)
async def inspector(
    request: pytest.FixtureRequest,
    inspector_install: tuple[Path, Path],
    env: Env,
    gateway: Gateway,
    tmp_path: Path,
) -> AsyncGenerator[Inspector]:
    executable, node = inspector_install
    home = tmp_path / "home"
    home.mkdir()
    async with http_server(gateway) as url:
        async with Client(url, mode="legacy") as client:
            schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
        if request.param == "stdio":
            target: tuple[str, ...] = (str(stdio_wrapper(tmp_path / "serve-stdio.sh", env)),)
        else:
            target = (url, "--transport", "http")
        era = "modern" if request.param == "http-modern" else "legacy"
        yield Inspector(executable, node.parent, target, era, home, schemas)


async def test_success(inspector: Inspector) -> None:
    result = await inspector.call_tool("echo", text="hi")
    assert result.get("isError", False) is False, result
    assert result["structuredContent"]["text"] == "hi"
    assert result["structuredContent"]["workflow_id"] == result["_meta"][WORKFLOW_META]
    assert json.loads(texts(result)) == result["structuredContent"]


FAILURES = [
    # (case, tool, arguments, the error code in _meta, what the text says, also over stdio)
    ("worker", "lookup_order", {"order_id": "ORD-9999"}, "order_not_found", "order_not_found", True),
    ("arguments", "echo", {"__no_such_field__": "1"}, "invalid_arguments", "__no_such_field__", True),
    ("output", "bad_output", {}, "invalid_output", "output_schema", False),
    # slow: mode sync, timeout 0.5 s; seconds=2 is typed by the Inspector (a string would be invalid_arguments)
    ("timeout", "slow", {"seconds": "2"}, "still_running", "did not finish within its timeout", False),
]


@pytest.mark.parametrize(
    ("inspector", "tool", "arguments", "code", "says"),
    [
        pytest.param(transport, tool, arguments, code, says, id=f"{transport}-{case}")
        for transport in TRANSPORTS
        for case, tool, arguments, code, says, over_stdio in FAILURES
        if over_stdio or transport != "stdio"
    ],
    indirect=["inspector"],
)
async def test_failure_is_an_error_result(
    inspector: Inspector, tool: str, arguments: dict[str, str], code: str, says: str
) -> None:
    """Each kind of failure reaches the client as an isError result with readable text, its detail in `_meta`,
    and no structuredContent (which the Inspector would check against the tool's outputSchema)."""
    result = await inspector.call_tool(tool, **arguments)
    assert result.get("isError") is True, result
    assert "structuredContent" not in result, result
    assert says in texts(result), result
    detail = result.get("_meta", {}).get(ERROR_META)
    assert isinstance(detail, dict) and cast(dict[str, Any], detail).get("error") == code, result


@pytest.mark.parametrize("inspector", [t for t in TRANSPORTS if t != "stdio"], indirect=True)
async def test_unknown_tool_is_refused_by_the_client(inspector: Inspector) -> None:
    """The Inspector looks a tool up in tools/list before calling it, so an unknown name never reaches the gateway:
    its own refusal (tool_not_found), not a result the gateway sent (whose unknown-tool result is an isError one
    without structuredContent, which TypeScript clients accept: they have no schema for it). Over HTTP only: the
    refusal is the client's own, whatever the transport."""
    run = await inspector.run("--method", "tools/call", "--tool-name", "no_such_tool")
    refusal = run.error_envelope()
    assert run.returncode == TOOL_ERROR_EXIT and refusal is not None, run.report()
    assert refusal.get("code") == "tool_not_found", run.report()
    assert run.stdout.strip() == "", run.report()


async def test_handle_then_workflow_result(inspector: Inspector) -> None:
    """`long` (mode auto, timeout 0.3 s) outlives its wait: a workflow handle, valid against the listed
    result-or-handle schema; workflow_result then waits for the finished result. An Inspector on the 2026-07-28
    revision declares the tasks extension: it gets a task instead, and follows it to the result itself."""
    first = await inspector.call_tool("long", seconds="1")
    assert first.get("isError", False) is False, first
    workflow_id = first["_meta"][WORKFLOW_META]
    if inspector.era == "modern":
        assert first["structuredContent"] == {"slept": 1}, first
    else:
        handle = first["structuredContent"]["workflow"]
        assert handle["id"] == workflow_id, first
        assert handle["status"] in {"pending", "dispatched", "running"}, first  # before the worker reports
        assert handle["uri"] == f"workflow://{workflow_id}", first
        links = [b for b in first["content"] if b.get("type") == "resource_link"]
        assert [link["uri"] for link in links] == [f"workflow://{workflow_id}"], first
    final = await inspector.call_tool("workflow_result", workflow_id=workflow_id, wait_seconds="20")
    assert final.get("isError", False) is False, final
    assert final["structuredContent"]["workflow"]["id"] == workflow_id, final
    assert final["structuredContent"]["workflow"]["status"] == "completed", final
    assert final["structuredContent"]["result"] == {"slept": 1}, final


async def served_as(authed: Inspector, gateway: Gateway, subject: str) -> None:
    """The Inspector with a token of the `billing` scope lists that scope's tools and calls `echo` as `subject`."""
    listed = await authed.run("--method", "tools/list")
    assert listed.returncode == 0, listed.report()
    names = {tool["name"] for tool in json.loads(listed.stdout)["result"]["tools"]}
    assert "ledger" in names and "echo" in names, names
    result = await authed.call_tool("echo", text="hi")
    record = await gateway.workflows.get(result["_meta"][WORKFLOW_META], ADMIN)
    assert record.caller == subject


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_bearer_token(inspector_install: tuple[Path, Path], gateway: Gateway, tmp_path: Path, era: str) -> None:
    """A TypeScript client with a static token (`--header`): served, as the token's subject, with the tools its
    scopes allow; without the token it is refused (401, which the client takes as "authorization required")."""
    executable, node = inspector_install
    home = tmp_path / "home"
    home.mkdir()
    token, _ = await gateway.tokens.create("ts-client", ("billing",))
    async with http_server(gateway, auth="required") as url:
        target = (url, "--transport", "http")
        authed = Inspector(
            executable, node.parent, (*target, "--header", f"Authorization: Bearer {token}"), era, home, {}
        )
        await served_as(authed, gateway, "ts-client")
        bare = await Inspector(executable, node.parent, target, era, home, {}).run("--method", "tools/list")
        # The TS client read the 401's WWW-Authenticate (resource metadata) and would start OAuth: auth_required.
        refusal = bare.error_envelope()
        assert bare.returncode != 0 and refusal is not None and refusal.get("code") == "auth_required", bare.report()


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_jwt_bearer_token(inspector_install: tuple[Path, Path], env: Env, tmp_path: Path, era: str) -> None:
    """A TypeScript client with a JWT from a local identity provider's JWKS: served as the token's subject with
    its scopes' tools; the same token made for another audience, or signed by a key the JWKS does not hold, is
    refused as no token is."""
    from mcp_gateway.app import open_gateway
    from tests.conftest import running_workers
    from tests.test_auth import identity_provider, jwt_settings

    executable, node = inspector_install
    home = tmp_path / "home"
    home.mkdir()
    async with identity_provider() as idp:
        settings = env.settings().model_copy(update={"jwt": jwt_settings(idp)})
        async with (
            open_gateway(settings) as gateway,
            running_workers(env),
            http_server(gateway, auth="required") as url,
        ):

            def inspector(token: str) -> Inspector:
                header = ("--header", f"Authorization: Bearer {token}")
                return Inspector(executable, node.parent, (url, "--transport", "http", *header), era, home, {})

            await served_as(inspector(idp.token(sub="jane", scope="billing")), gateway, "jane")
            idp.add_key("unpublished")
            forged = idp.token("unpublished", sub="jane")
            idp.keys.pop("unpublished")
            for token in (idp.token(sub="jane", aud="another-service"), forged):
                refused = await inspector(token).run("--method", "tools/list")
                assert refused.returncode != 0, refused.report()
                envelope = refused.error_envelope()
                assert envelope is not None and envelope.get("code") == "auth_required", refused.report()
