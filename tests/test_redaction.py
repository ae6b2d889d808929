"""Secrets in tool arguments (`x-sensitive: true` in the input schema): the worker gets them whole; the workflow
row, its history, the approval question, every view of the workflow, error messages and log lines never show them;
idempotency keys still compare them (under a keyed hash); a retry cannot reuse them.

The secrets are searched for as an attacker would look: in every table of the database after the run (text and
bytea), in every log event (structlog and the standard library's loggers, at debug), in what the MCP views return."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import asyncpg
import mcp.types as types
import pytest
from mcp_gateway_worker import ToolContext, ToolFailure, Worker
from mcp_gateway_worker.contract import Caller
from structlog.testing import capture_logs

from mcp_gateway import cli
from mcp_gateway.app import Gateway, open_gateway
from mcp_gateway.core.service import (
    OutcomeKind,
    RetryRefused,
    arguments_digest,
    arguments_hash,
    same_arguments,
)
from mcp_gateway.core.states import APPROVAL, Status
from mcp_gateway.core.workflows import ADMIN, Viewer
from mcp_gateway.errors import ConfigError
from mcp_gateway.registry import MARKER, Tool, load_registry
from mcp_gateway.server._results import WORKFLOW_META
from tests.conftest import Env, StrictClient, http_server

TOOLS = """
tools:
  - name: vault_login
    description: Logs in to a vault with an API key (redaction tests).
    subject: testing.redaction
    mode: sync
    timeout: 20
    input_schema: &login
      type: object
      $defs:
        secret: {type: string, x-sensitive: true}
      properties:
        service: {type: string}
        api_key: {type: string, minLength: 8, x-sensitive: true}
        options:
          type: object
          properties:
            password: {$ref: "#/$defs/secret"}
            region: {type: string}
        tokens:
          type: array
          items:
            type: object
            properties:
              name: {type: string}
              value: {$ref: "#/$defs/secret"}
      required: [service, api_key]
    output_schema:
      type: object
      properties:
        service: {type: string}
        key_length: {type: integer}
      required: [service, key_length]

  - name: vault_login_approved
    description: The same, held until its caller approves it.
    subject: testing.redaction
    mode: sync
    timeout: 20
    approval: caller
    input_schema: *login
"""

seen: dict[str, dict[str, Any]] = {}
"""What the handler received, by workflow id."""

worker = Worker("redaction", max_concurrency=8)


@worker.tool("vault_login", subject="testing.redaction")
@worker.tool("vault_login_approved", subject="testing.redaction")
async def vault_login(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    seen[ctx.workflow_id] = args
    if args["service"] == "down":
        raise ToolFailure("vault_down", "the vault is down")
    return {"service": args["service"], "key_length": len(args["api_key"])}


def _tools_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "redaction-tools"
    folder.mkdir(exist_ok=True)
    (folder / "vault.yaml").write_text(TOOLS, encoding="utf-8")
    return folder


def _tool(tmp_path: Path, name: str = "vault_login") -> Tool:
    return load_registry(_tools_dir(tmp_path))[name]


def _secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "api_key": f"sk-live-{tag}",
        "password": f"hunter2-{tag[:8]}",
        "token": f"tok-{tag[8:20]}",
        "short": f"Zq-{tag[20:24]}",  # shorter than api_key's minLength: refused, and must not be quoted
    }


def _arguments(found: dict[str, str], service: str = "billing") -> dict[str, Any]:
    return {
        "service": service,
        "api_key": found["api_key"],
        "options": {"password": found["password"], "region": "eu-1"},
        "tokens": [{"name": "ci", "value": found["token"]}, {"name": "empty"}],
    }


def _leaks(text: str, found: dict[str, str]) -> list[str]:
    """The secrets found in `text`, as they are or hex-encoded (bytea columns)."""
    return [
        name for name, secret in found.items() if secret in text or secret.encode().hex() in text.replace("\\x", "")
    ]


async def _database_text(env: Env) -> str:
    """Every row of every table of the test's database, as text (bytea as hex)."""
    conn = await asyncpg.connect(env.database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        parts = [
            await conn.fetchval(f"SELECT coalesce(string_agg(to_jsonb(t)::text, ','), '') FROM \"{name}\" t")
            for name in (r["tablename"] for r in tables)
        ]
        return "\n".join(parts)
    finally:
        await conn.close()


async def _outbox_drained(env: Env, workflow_id: str) -> None:
    """The command of `workflow_id` has left the outbox (it is published and its entry deleted)."""
    conn = await asyncpg.connect(env.database_url)
    try:
        async with asyncio.timeout(10):
            # Polling a table: nothing announces that an outbox entry was deleted.
            while await conn.fetchval("SELECT count(*) FROM outbox WHERE workflow_id = $1", workflow_id):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.fixture
async def vault(env: Env, tmp_path: Path) -> AsyncGenerator[Gateway]:
    """A gateway serving the vault tools, with their worker running."""
    settings = env.settings(tools_dir=_tools_dir(tmp_path))
    async with open_gateway(settings) as gw, worker.with_prefix(env.prefix).connect(env.nats_url):
        yield gw


CALLER = Caller(subject="alice", request_id="r1")
CLIENT_LOGGERS = ("mcp.client", "httpx", "httpcore")


# ---- the schema annotation, without servers ------------------------------------------------------------------


def test_marked_values_are_replaced_nested_in_arrays_and_through_refs_and_the_input_is_untouched(
    tmp_path: Path,
) -> None:
    tool = _tool(tmp_path)
    found = _secrets()
    arguments = _arguments(found)
    before = json.dumps(arguments, sort_keys=True)
    kept = tool.redact(arguments)
    assert kept == {
        "service": "billing",
        "api_key": MARKER,
        "options": {"password": MARKER, "region": "eu-1"},
        "tokens": [{"name": "ci", "value": MARKER}, {"name": "empty"}],
    }
    assert json.dumps(arguments, sort_keys=True) == before  # never mutated
    kept["options"]["region"] = "changed"
    assert arguments["options"]["region"] == "eu-1"  # a copy, not a view of the input
    assert tool.sensitive and tool.redact({"service": "x"}) == {"service": "x"}
    listed = tool.listing.input_schema
    assert listed["properties"]["api_key"]["x-sensitive"] is True  # clients may mask the field


def test_every_schema_that_may_apply_is_followed_and_recursive_refs_end(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        """
tools:
  - name: shapes
    description: x
    subject: testing.shapes
    strict: false
    input_schema:
      type: object
      $defs:
        node:
          type: object
          properties:
            pin: {type: integer, x-sensitive: true}
            children: {type: array, items: {$ref: "#/$defs/node"}}
        a: {$ref: "#/$defs/b"}
        b: {$ref: "#/$defs/a"}
      properties:
        tree: {$ref: "#/$defs/node"}
        loop: {$ref: "#/$defs/a"}
        either:
          anyOf:
            - {type: string}
            - {type: object, properties: {secret: {x-sensitive: true}}}
        env:
          type: object
          patternProperties: {"^SECRET_": {x-sensitive: true}}
          additionalProperties: {type: string}
        headers:
          type: object
          additionalProperties: {type: string, x-sensitive: true}
          properties: {accept: {type: string}}
        pair: {type: array, prefixItems: [{type: string}, {x-sensitive: true}]}
        whole: {type: object, x-sensitive: true}
""",
        encoding="utf-8",
    )
    tool = load_registry(tmp_path)["shapes"]
    arguments: dict[str, Any] = {
        "tree": {"pin": 1234, "children": [{"pin": 5678, "children": [{"pin": 9012}]}]},
        "loop": {"x": 1},
        "either": {"secret": "s1"},
        "env": {"SECRET_TOKEN": "s2", "HOME": "/root"},
        "headers": {"accept": "json", "authorization": "Bearer s3"},
        "pair": ["user", "s4"],
        "whole": {"k": "s5"},
        "extra": "open",
    }
    assert tool.redact(arguments) == {
        "tree": {"pin": MARKER, "children": [{"pin": MARKER, "children": [{"pin": MARKER}]}]},
        "loop": {"x": 1},
        "either": {"secret": MARKER},
        "env": {"SECRET_TOKEN": MARKER, "HOME": "/root"},
        "headers": {"accept": "json", "authorization": MARKER},
        "pair": ["user", MARKER],
        "whole": MARKER,
        "extra": "open",
    }


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"k": {"type": "string", "x-sensitive": "yes"}}}, "must be true or false"),
        ({"type": "object", "x-sensitive": True}, "cannot mark the whole arguments"),
        ({"type": "object", "propertyNames": {"x-sensitive": True}}, "keys are never redacted"),
    ],
)
def test_a_mark_that_cannot_work_is_refused_at_load(tmp_path: Path, schema: dict[str, Any], expected: str) -> None:
    entry = {"name": "bad", "description": "x", "subject": "testing.bad", "input_schema": schema}
    (tmp_path / "t.yaml").write_text(json.dumps({"tools": [entry]}), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_registry(tmp_path)
    assert expected in str(refused.value) and "tools[0].input_schema" in str(refused.value)


def test_a_mark_in_an_output_schema_is_refused_at_load(tmp_path: Path) -> None:
    output = {"type": "object", "properties": {"token": {"type": "string", "x-sensitive": True}}}
    entry = {
        "name": "bad",
        "description": "x",
        "subject": "testing.bad",
        "input_schema": {"type": "object"},
        "output_schema": output,
    }
    (tmp_path / "t.yaml").write_text(json.dumps({"tools": [entry]}), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_registry(tmp_path)
    assert "input_schema only" in str(refused.value) and "tools[0].output_schema" in str(refused.value)


def test_violation_messages_never_quote_a_sensitive_value(tmp_path: Path) -> None:
    tool = _tool(tmp_path)
    short = "pw-7"  # breaks minLength: 8
    violations = tool.input.violations({"service": 42, "api_key": short, "options": {"password": 1234567}})
    by_path = {v.path: v.message for v in violations}
    assert set(by_path) == {"/service", "/api_key", "/options/password"}
    assert short not in str(violations) and "1234567" not in str(violations)
    assert "minLength" in by_path["/api_key"] and "x-sensitive" in by_path["/api_key"]
    assert "42" in by_path["/service"]  # a value not marked is still quoted
    assert "required" in str(tool.input.violations({"api_key": "long-enough-key"}))  # messages naming keys stay


def test_the_idempotency_digest_hides_the_secret_and_still_tells_secrets_apart(tmp_path: Path) -> None:
    tool = _tool(tmp_path)
    found = _secrets()
    arguments = _arguments(found)
    key = b"k" * 32
    digest = arguments_digest(tool, arguments, key)
    assert digest.startswith("hmac:") and arguments_hash(arguments) not in digest  # no offline guessing
    assert digest == arguments_digest(tool, json.loads(json.dumps(arguments)), key)
    other = _arguments({**found, "api_key": found["api_key"] + "x"})
    assert not same_arguments(digest, arguments_digest(tool, other, key))
    # Under another key (another process without a shared secret_key), the rest of the arguments decides.
    assert same_arguments(digest, arguments_digest(tool, other, b"j" * 32))
    assert not same_arguments(digest, arguments_digest(tool, _arguments(found, service="crm"), b"j" * 32))
    assert arguments_digest(tool, {"service": "x"}, key) == arguments_hash({"service": "x"})  # nothing sensitive


# ---- with the real servers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_worker_gets_the_secret_and_nothing_else_keeps_or_shows_it(
    vault: Gateway, env: Env, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    found = _secrets()
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with http_server(vault) as url, StrictClient(url, mode=mode, read_timeout_seconds=30) as client:
            result = await client.call_tool("vault_login", _arguments(found))
            assert not result.is_error, result
            assert result.structured_content == {"service": "billing", "key_length": len(found["api_key"])}
            assert result.meta is not None
            workflow_id = str(result.meta[WORKFLOW_META])
            shown = [json.dumps(result.model_dump(mode="json"))]
            status = await client.call_tool("workflow_status", {"workflow_id": workflow_id})
            listed = await client.call_tool("workflow_list", {})
            shown += [json.dumps(r.model_dump(mode="json")) for r in (status, listed)]
            for uri in (f"workflow://{workflow_id}", f"workflow://{workflow_id}/events"):
                read = await client.read_resource(uri)
                assert isinstance(read.contents[0], types.TextResourceContents)
                shown.append(read.contents[0].text)
            short = {**_arguments(found), "api_key": found["short"]}  # too short: refused, value not quoted
            refused = await client.call_tool("vault_login", short)
            assert refused.is_error
            shown.append(json.dumps(refused.model_dump(mode="json")))
        await _outbox_drained(env, workflow_id)

    assert seen[workflow_id] == _arguments(found)  # the handler saw every secret whole
    record = await vault.store.get(workflow_id)
    assert record is not None and record.status is Status.COMPLETED
    assert record.arguments["api_key"] == MARKER and record.arguments["options"]["password"] == MARKER
    assert record.arguments["tokens"][0]["value"] == MARKER and record.arguments["service"] == "billing"
    history = await vault.store.events(workflow_id)
    assert history[0].kind == "created"
    assert _leaks(json.dumps([e.data for e in history]), found) == []
    assert _leaks("\n".join(shown), found) == [], "an MCP view shows a secret"
    assert _leaks(await _database_text(env), found) == [], "a database row keeps a secret"
    assert logs and _leaks(json.dumps(logs, default=str), found) == [], "a structlog line carries a secret"
    assert caplog.records
    # The client runs in this process too: what it logs of its own requests is the caller's, not the gateway's.
    gateway_side = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    leaking = sorted({r.name for r in gateway_side if _leaks(r.getMessage(), found)})
    assert leaking == [], "a standard library log line of the gateway carries a secret"


async def test_the_cli_shows_the_workflow_redacted(
    vault: Gateway, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = _secrets()
    outcome = await vault.service.call("vault_login", _arguments(found), caller=CALLER)
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.workflow_id is not None
    args = argparse.Namespace(action="show", workflow_id=outcome.workflow_id, json=True, follow=False)
    capsys.readouterr()
    with capture_logs():  # the log lines would go to the same stdout here
        shown = await cli._workflows(env.settings(tools_dir=_tools_dir(tmp_path)), args)  # pyright: ignore[reportPrivateUsage]
    assert shown == 0
    printed = capsys.readouterr().out
    assert json.loads(printed)["arguments"]["api_key"] == MARKER
    assert _leaks(printed, found) == []


async def test_the_approval_question_hides_the_secret_and_the_released_command_carries_it(
    vault: Gateway, env: Env
) -> None:
    found = _secrets()
    held = await vault.service.call("vault_login_approved", _arguments(found), caller=CALLER)
    assert held.kind is OutcomeKind.INPUT_REQUIRED and held.workflow_id is not None
    workflow_id = held.workflow_id
    question = next(q for q in held.questions if q["id"] == APPROVAL)
    assert MARKER in question["message"] and "billing" in question["message"]
    assert _leaks(json.dumps(held.questions), found) == []
    for viewer in (Viewer(CALLER.subject), ADMIN):  # what the caller and an admin see
        record = await vault.workflows.get(workflow_id, viewer)
        assert _leaks(json.dumps(record.state.questions) + json.dumps(record.arguments), found) == []
    await vault.workflows.answer(workflow_id, Viewer(CALLER.subject), APPROVAL, "accept")
    async with asyncio.timeout(20):
        done = await vault.workflows.wait(workflow_id, Viewer(CALLER.subject), 20)
    assert done.status is Status.COMPLETED, done.state
    assert seen[workflow_id]["api_key"] == found["api_key"]  # the held command had the real value
    await _outbox_drained(env, workflow_id)
    assert _leaks(await _database_text(env), found) == []


async def test_idempotency_keys_compare_the_real_secret_without_keeping_it(vault: Gateway, env: Env) -> None:
    found = _secrets()
    arguments = _arguments(found)
    first = await vault.service.call("vault_login", arguments, caller=CALLER, idempotency_key="login-1")
    again = await vault.service.call("vault_login", _arguments(found), caller=CALLER, idempotency_key="login-1")
    assert first.kind is again.kind is OutcomeKind.COMPLETED and first.workflow_id == again.workflow_id
    other = _arguments({**found, "api_key": "sk-live-another-one"})
    clash = await vault.service.call("vault_login", other, caller=CALLER, idempotency_key="login-1")
    assert clash.kind is OutcomeKind.IDEMPOTENCY_CONFLICT and clash.workflow_id == first.workflow_id
    assert len([r for r in await vault.store.list() if r.tool == "vault_login"]) == 1
    conn = await asyncpg.connect(env.database_url)
    try:
        stored = await conn.fetchval("SELECT arguments_hash FROM workflows WHERE id = $1", first.workflow_id)
    finally:
        await conn.close()
    assert stored.startswith("hmac:") and arguments_hash(arguments) not in stored
    # Another gateway process (its own key): the non-secret arguments decide, a retry is not refused.
    vault.service.secret_key = b"another process's key, 32 bytes!"
    joined = await vault.service.call("vault_login", other, caller=CALLER, idempotency_key="login-1")
    assert joined.kind is OutcomeKind.COMPLETED and joined.workflow_id == first.workflow_id
    changed = _arguments(found, service="crm")
    refused = await vault.service.call("vault_login", changed, caller=CALLER, idempotency_key="login-1")
    assert refused.kind is OutcomeKind.IDEMPOTENCY_CONFLICT


async def test_a_retry_cannot_reuse_redacted_arguments_and_takes_them_again(
    vault: Gateway, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = _secrets()
    failed = await vault.service.call("vault_login", _arguments(found, service="down"), caller=CALLER)
    assert failed.kind is OutcomeKind.FAILED and failed.workflow_id is not None
    workflow_id = failed.workflow_id
    with pytest.raises(RetryRefused) as refused:
        await vault.service.retry(workflow_id, ADMIN)
    assert "--arguments FILE" in str(refused.value) and "redacted" in str(refused.value)
    settings = env.settings(tools_dir=_tools_dir(tmp_path))
    assert await cli._retry(settings, workflow_id, None) == 1  # pyright: ignore[reportPrivateUsage]
    assert "--arguments FILE" in capsys.readouterr().err
    fresh = _secrets()
    record = await vault.service.retry(workflow_id, ADMIN, arguments=_arguments(fresh))
    async with asyncio.timeout(20):
        done = await vault.workflows.wait(workflow_id, ADMIN, 20)
    assert done.status is Status.COMPLETED, done.state
    assert record.arguments["api_key"] == MARKER and seen[workflow_id]["api_key"] == fresh["api_key"]
    history = await vault.store.events(workflow_id)
    assert any(e.kind == "retried" and e.data["arguments_changed"] for e in history)
    await _outbox_drained(env, workflow_id)
    assert _leaks(await _database_text(env), {**found, **{f"new_{k}": v for k, v in fresh.items()}}) == []
