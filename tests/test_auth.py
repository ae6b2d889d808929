"""Who may call what and see what: static tokens and JWTs through the SDK's auth support, per-tool scopes with
filtered lists, per-caller isolation of workflows everywhere one can be reached, and admins."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import jwt
import mcp.types as types
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import JSONRPCNotification
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_gateway.app import Gateway
from mcp_gateway.auth import JwtSettings, JwtVerifier, token_sha256
from mcp_gateway.core.access import ADMIN, Viewer
from mcp_gateway.errors import ConfigError
from mcp_gateway.settings import load_settings
from mcp_gateway.store import PostgresEventStore
from tests.conftest import Env, StrictClient, admin_token, error_detail, http_server


@asynccontextmanager
async def client(url: str, token: str | None, mode: str = "auto", **kw: Any) -> AsyncGenerator[StrictClient]:
    """An SDK client over HTTP sending `token` as its bearer token (none: no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with StrictClient(transport, mode=mode, read_timeout_seconds=30, **kw) as c:
            assert isinstance(c, StrictClient)
            yield c


async def token_for(gateway: Gateway, subject: str, *scopes: str) -> str:
    token, _ = await gateway.tokens.create(subject, scopes)
    return token


# --- authentication on HTTP -------------------------------------------------------------------------------------


async def test_required_auth_answers_401_with_resource_metadata(gateway: Gateway) -> None:
    async with http_server(gateway, auth="required") as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp")
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        bare = await http.post(url, json=body, headers=accept)
        assert bare.status_code == 401
        challenge = bare.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
        assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge

        forged = await http.post(url, json=body, headers={**accept, "Authorization": "Bearer mcpgw_0000_forged"})
        assert forged.status_code == 401

        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            metadata = (await http.get(base + path)).json()
            assert metadata["resource"] == url
            assert "billing" in metadata["scopes_supported"] and "mcpgw:admin" in metadata["scopes_supported"]
            assert metadata["bearer_methods_supported"] == ["header"]

        # The SSE feed and the admin API need a token too; the health checks do not.
        assert (await http.get(f"{base}/workflows/{'0' * 32}/events")).status_code == 401
        assert (await http.get(f"{base}/admin/dead-letters")).status_code == 401
        assert (await http.get(f"{base}/healthz")).status_code == 200


async def test_static_token_names_the_caller(gateway: Gateway) -> None:
    alice = await token_for(gateway, "alice")
    async with http_server(gateway, auth="required") as url, client(url, alice) as c:
        result = await c.call_tool("background", {"seconds": 0})
        workflow_id = (result.meta or {})["io.mcp-gateway/workflowId"]
    record = await gateway.workflows.get(workflow_id, ADMIN)
    assert record.caller == "alice"


async def test_revoked_and_expired_tokens_are_refused(gateway: Gateway) -> None:
    from datetime import UTC, datetime, timedelta

    token, stored = await gateway.tokens.create("dave", ())
    assert await gateway.tokens.verify(token) is not None
    await gateway.token_store.revoke(stored.id)
    gateway.tokens._cache.clear()  # pyright: ignore[reportPrivateUsage] - the 5 s cache, not under test here
    assert await gateway.tokens.verify(token) is None
    expired, _ = await gateway.tokens.create("dave", (), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await gateway.tokens.verify(expired) is None
    assert await gateway.tokens.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


async def test_only_the_hash_is_stored(gateway: Gateway) -> None:
    token = await token_for(gateway, "erin", "billing")
    async with gateway.store.engine.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT * FROM api_tokens"))).mappings().all()
    dumped = json.dumps([dict(r) for r in rows], default=str)
    assert token not in dumped and token.split("_", 2)[2] not in dumped
    assert token_sha256(token) in dumped


async def test_optional_auth_honours_tokens_and_refuses_bad_ones(gateway: Gateway) -> None:
    bob = await token_for(gateway, "bob")
    async with http_server(gateway, auth="optional") as url:
        async with client(url, None) as c:  # no token: the local principal
            result = await c.call_tool("background", {"seconds": 0})
            local_id = (result.meta or {})["io.mcp-gateway/workflowId"]
        async with client(url, bob) as c:
            result = await c.call_tool("background", {"seconds": 0})
            bob_id = (result.meta or {})["io.mcp-gateway/workflowId"]
        async with httpx2.AsyncClient(timeout=10) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            bad = await http.post(url, json=body, headers={"Authorization": "Bearer not-a-token"})
            assert bad.status_code == 401  # a bad token never falls back to the local principal
    assert (await gateway.workflows.get(local_id, ADMIN)).caller == "local"
    assert (await gateway.workflows.get(bob_id, ADMIN)).caller == "bob"


# --- scopes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_scopes_filter_lists_and_calls(gateway: Gateway, mode: str) -> None:
    plain = await token_for(gateway, "pat")
    billing = await token_for(gateway, "bill", "billing")
    async with http_server(gateway, auth="required") as url:
        async with client(url, plain, mode) as c:
            assert "ledger" not in {t.name for t in (await c.list_tools()).tools}
            assert "steps" in {t.name for t in (await c.list_tools()).tools}
            assert "billing_summary" not in {p.name for p in (await c.list_prompts()).prompts}
            assert "test://billing/ledger" not in {str(r.uri) for r in (await c.list_resources()).resources}
            hidden = await c.call_tool("ledger", {})
            unknown = await c.call_tool("no_such_tool_here", {})
            # The same answer as a tool that does not exist (names cannot be probed).
            assert error_detail(hidden)["error"] == error_detail(unknown)["error"] == "unknown_tool"
            with pytest.raises(MCPError) as prompt_refused:
                await c.get_prompt("billing_summary", {})
            with pytest.raises(MCPError) as prompt_unknown:
                await c.get_prompt("no_such_prompt", {})
            assert prompt_refused.value.error.code == prompt_unknown.value.error.code
            with pytest.raises(MCPError):
                await c.read_resource("test://billing/ledger")
        async with client(url, billing, mode) as c:
            assert "ledger" in {t.name for t in (await c.list_tools()).tools}
            assert "billing_summary" in {p.name for p in (await c.list_prompts()).prompts}
            assert (await c.call_tool("ledger", {})).structured_content == {"ok": True}
            contents = (await c.read_resource("test://billing/ledger")).contents
            assert isinstance(contents[0], types.TextResourceContents) and "ledger" in contents[0].text
            assert (await c.get_prompt("billing_summary", {})).messages


def test_scopes_and_principals() -> None:
    assert Viewer("a", scopes=frozenset({"x", "y"})).may(["x", "y"])
    assert not Viewer("a", scopes=frozenset({"x"})).may(["x", "y"])
    assert Viewer("a").may([])
    assert Viewer("local", scopes=frozenset({"*"})).may(["anything"])
    assert Viewer("root", admin=True).may(["anything"])


# --- isolation --------------------------------------------------------------------------------------------------


async def test_a_caller_cannot_reach_another_callers_workflow(gateway: Gateway, env: Env) -> None:
    from tests.test_long_running import gate_for

    alice, mallory = await token_for(gateway, "alice"), await token_for(gateway, "mallory")
    gate_name, gate = gate_for(env)
    async with http_server(gateway, auth="required") as url:
        base = url.removesuffix("/mcp")
        async with client(url, alice) as c:
            started = await c.call_tool("background", {"seconds": 0, "gate": gate_name})
            workflow_id = (started.meta or {})["io.mcp-gateway/workflowId"]
        async with client(url, mallory, "auto") as c:
            for name, arguments in (
                ("workflow_status", {"workflow_id": workflow_id}),
                ("workflow_result", {"workflow_id": workflow_id}),
                ("workflow_cancel", {"workflow_id": workflow_id}),
            ):
                result = await c.call_tool(name, arguments)
                assert result.is_error and "no workflow" in str(result.content[0]), (name, result)
            listed = await c.call_tool("workflow_list", {})
            assert workflow_id not in json.dumps(listed.structured_content)
            assert workflow_id not in {str(r.uri) for r in (await c.list_resources()).resources}
            for uri in (f"workflow://{workflow_id}", f"workflow://{workflow_id}/history"):
                with pytest.raises(MCPError):
                    await c.read_resource(uri)
        async with client(url, mallory, "legacy") as c:
            with pytest.raises(MCPError):
                await c.subscribe_resource(f"workflow://{workflow_id}")  # pyright: ignore[reportDeprecated]
        async with httpx2.AsyncClient(timeout=10) as http:
            feed = f"{base}/workflows/{workflow_id}/events"
            refused = await http.get(feed, headers={"Authorization": f"Bearer {mallory}"})
            assert refused.status_code == 404
            async with http.stream("GET", feed, headers={"Authorization": f"Bearer {alice}"}) as mine:
                assert mine.status_code == 200
            # The admin API is for admins only: a caller's token gets 403 insufficient_scope.
            not_admin = await http.post(
                f"{base}/admin/workflows/{workflow_id}/cancel", headers={"Authorization": f"Bearer {mallory}"}
            )
            assert not_admin.status_code == 403
            assert 'error="insufficient_scope"' in not_admin.headers["www-authenticate"]
            # An admin (a token with the admin scope) acts on it; the history names the admin's subject.
            admin = await admin_token(gateway, "ops-oncall")
            cancelled = await http.post(
                f"{base}/admin/workflows/{workflow_id}/cancel", headers={"Authorization": f"Bearer {admin}"}
            )
            assert cancelled.status_code == 200, cancelled.text
    gate.set()
    record = await gateway.workflows.get(workflow_id, ADMIN)
    assert record.caller == "alice" and record.status.value == "cancelled"
    events = await gateway.workflows.events(workflow_id, ADMIN)
    assert any(e.kind == "cancelled" and "ops-oncall" in json.dumps(e.data) for e in events), events


async def test_a_listen_stream_honors_only_the_callers_own_workflows(gateway: Gateway, env: Env) -> None:
    """2026-07-28 `subscriptions/listen` naming another caller's workflow: the URI is left out of the ack, as a
    URI naming nothing is, and no update of it reaches that stream; the owner's stream hears it."""
    from mcp.shared.subscriptions import ResourceUpdated

    from tests.test_long_running import gate_for

    alice, mallory = await token_for(gateway, "alice"), await token_for(gateway, "mallory")
    gate_name, gate = gate_for(env)
    async with http_server(gateway, auth="required") as url, client(url, alice) as owner, client(url, mallory) as other:
        started = await owner.call_tool("background", {"seconds": 0, "gate": gate_name})
        uri = f"workflow://{(started.meta or {})['io.mcp-gateway/workflowId']}"
        nothing = "workflow://wf_00000000000000000000000000"
        async with other.listen(resource_subscriptions=[uri, nothing], tools_list_changed=True) as theirs:
            assert theirs.honored is not None and not theirs.honored.resource_subscriptions
            assert theirs.honored.tools_list_changed  # the rest of the filter stands
            async with owner.listen(resource_subscriptions=[uri]) as mine:
                assert mine.honored is not None and mine.honored.resource_subscriptions == [uri]
                gate.set()
                async with asyncio.timeout(10):
                    async for event in mine:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            break
            heard: list[object] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    async for event in theirs:
                        heard.append(event)
            assert not [e for e in heard if isinstance(e, ResourceUpdated)], heard
        with pytest.raises(MCPError, match="at most 256"):
            async with other.listen(resource_subscriptions=[f"test://r/{i}" for i in range(257)]):
                pass


async def test_tasks_are_the_callers_own(gateway: Gateway, env: Env) -> None:
    from tests import workers as test_workers
    from tests.test_tasks import TaskHandle, Tasks, task_ack, task_call

    alice, mallory = await token_for(gateway, "alice"), await token_for(gateway, "mallory")
    test_workers.gates.setdefault(env.prefix, asyncio.Event())  # never set: the task stays open
    async with http_server(gateway, auth="required") as url:
        async with client(url, alice, extensions=[Tasks()]) as c:
            handed = await c.session.call_tool(
                "long", {"seconds": 0, "gate": env.prefix}, allow_claimed=True, allow_input_required=True
            )
            assert isinstance(handed, TaskHandle)
            assert (await task_call(c.session, "tasks/get", handed.task_id)).status == "working"
        async with client(url, mallory, extensions=[Tasks()]) as c:
            with pytest.raises(MCPError, match="unknown task"):
                await task_call(c.session, "tasks/get", handed.task_id)
            with pytest.raises(MCPError, match="unknown task"):
                await task_ack(c.session, "tasks/cancel", handed.task_id)
    record = await gateway.workflows.get(handed.task_id, ADMIN)
    assert record.caller == "alice" and record.status.value != "cancelled"
    await gateway.workflows.cancel(handed.task_id, ADMIN)


async def test_event_store_replays_only_the_sessions_own_stream(gateway: Gateway) -> None:
    store = PostgresEventStore(gateway.store.engine)
    a, b = store.for_session("session-a"), store.for_session("session-b")
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"x": 1})
    first = await a.store_event("1", None)
    await a.store_event("1", note)
    await b.store_event("1", None)
    sent: list[Any] = []

    async def collect(message: Any) -> None:
        sent.append(message)

    assert await b.replay_events_after(first, collect) is None and sent == []  # another session's event id
    assert await a.replay_events_after(first, collect) == "1" and len(sent) == 1


# --- JWT --------------------------------------------------------------------------------------------------------


class Idp:
    """A tiny identity provider: a JWKS served on a free port and tokens signed with its keys."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.url = ""

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "https://idp.test", "aud": "mcp-gateway", "sub": "jwt-user", "exp": now + 300, "iat": now}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}  # pyright: ignore[reportUnnecessaryComparison]
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@asynccontextmanager
async def identity_provider() -> AsyncGenerator[Idp]:
    idp = Idp()
    idp.add_key("k1")

    async def jwks(request: Request) -> JSONResponse:
        idp.fetches += 1
        return JSONResponse(idp.jwks())

    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/jwks", jwks)]), host="127.0.0.1", port=0, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - polling uvicorn's started flag
        await asyncio.sleep(0.01)
    idp.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/jwks"
    try:
        yield idp
    finally:
        server.should_exit = True
        await task


def jwt_settings(idp: Idp, **kw: Any) -> JwtSettings:
    return JwtSettings(jwks_url=idp.url, issuer="https://idp.test", audience="mcp-gateway", **kw)


async def test_jwt_checks() -> None:
    async with identity_provider() as idp:
        verifier = JwtVerifier(jwt_settings(idp, leeway=5, refetch_after=0.5))
        ok = await verifier.verify(idp.token(scope="billing read"))
        assert ok is not None and ok.subject == "jwt-user" and ok.scopes == ["billing", "read"]
        now = int(time.time())
        refused = {
            "expired": idp.token(exp=now - 60),
            "not yet valid": idp.token(nbf=now + 120),
            "no exp": idp.token(exp=None),
            "wrong audience": idp.token(aud="someone-else"),
            "wrong issuer": idp.token(iss="https://evil.test"),
            "no subject": idp.token(sub=None),
            "alg none": jwt.encode(
                {"iss": "https://idp.test", "aud": "mcp-gateway", "sub": "x", "exp": now + 60},
                None,  # pyright: ignore[reportArgumentType] - the point: an unsigned token
                algorithm="none",
                headers={"kid": "k1"},
            ),
            "HS256 with the public key": jwt.encode(
                {"iss": "https://idp.test", "aud": "mcp-gateway", "sub": "x", "exp": now + 60},
                b"a-shared-secret-that-is-long-enough-for-hs256",
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            "tampered": idp.token()[:-4] + "AAAA",
            "garbage": "not.a.jwt",
        }
        for why, token in refused.items():
            assert await verifier.verify(token) is None, why
        # Within the skew: accepted.
        assert await verifier.verify(idp.token(exp=now - 2)) is not None

        # Key rotation: a token signed with a new key is accepted once the JWKS has it.
        idp.add_key("k2")
        await asyncio.sleep(0.6)
        rotated = await verifier.verify(idp.token("k2", scope=["a", "b"]))
        assert rotated is not None and rotated.scopes == ["a", "b"]
        # Unknown kids do not make the gateway hammer the provider.
        before = idp.fetches
        for i in range(20):
            forged = jwt.encode({"sub": "x"}, idp.keys["k1"], algorithm="RS256", headers={"kid": f"nope-{i}"})
            assert await verifier.verify(forged) is None
        assert idp.fetches - before <= 1


async def test_jwt_caller_over_http(env: Env) -> None:
    from mcp_gateway.app import open_gateway

    async with identity_provider() as idp:
        settings = env.settings().model_copy(update={"jwt": jwt_settings(idp)})
        async with open_gateway(settings) as gateway, http_server(gateway, auth="required") as url:
            async with client(url, idp.token(sub="jane", scope="billing")) as c:
                assert "ledger" in {t.name for t in (await c.list_tools()).tools}
            async with client(url, idp.token(sub="joe")) as c:
                assert "ledger" not in {t.name for t in (await c.list_tools()).tools}


# --- settings and the command line ------------------------------------------------------------------------------


def test_no_anonymous_callers_on_a_public_address() -> None:
    assert load_settings(host="127.0.0.1").resolved_auth() == "optional"
    assert load_settings(host="0.0.0.0").resolved_auth() == "required"
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_settings(host="0.0.0.0", auth="optional").check_exposure()
    load_settings(host="0.0.0.0", auth="optional", allow_anonymous_remote=True).check_exposure()
    load_settings(host="0.0.0.0").check_exposure()
    with pytest.raises(ConfigError, match="token create"):
        load_settings(admin_token_sha256="0" * 64)


def test_serve_refuses_a_public_address_without_auth(env: Env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway", "serve", "--host", "0.0.0.0"],
        env={**os.environ, **env.env_vars(), "MCPGW_AUTH": "optional"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "not a loopback address" in done.stderr, done.stderr


def test_token_cli(env: Env) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcp_gateway", "token", *args],
            env={**os.environ, **env.env_vars()},
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = run("create", "--subject", "cli-user", "--scopes", "billing,read", "--admin", "--note", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("mcpgw_") and "shown this once" in created.stderr
    listed = json.loads(run("list", "--json").stdout)
    (mine,) = [t for t in listed if t["subject"] == "cli-user"]
    assert mine["scopes"] == ["billing", "read", "mcpgw:admin"] and mine["state"] == "ok"
    assert token not in json.dumps(listed)
    assert run("create", "--subject", "x", "--scopes", 'bad"scope').returncode != 0
    revoked = run("revoke", mine["id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert [t["state"] for t in json.loads(run("list", "--json").stdout) if t["subject"] == "cli-user"] == ["revoked"]
    assert run("revoke", "nobody-at-all").returncode == 1


async def test_calls_in_flight_are_limited_per_caller(env: Env) -> None:
    from mcp_gateway.app import open_gateway
    from tests.conftest import running_workers
    from tests.test_long_running import gate_for

    gate_name, gate = gate_for(env)
    settings = env.settings(max_in_flight_per_caller=1)
    async with open_gateway(settings) as gateway, running_workers(env), http_server(gateway) as url:
        alice, bob = await token_for(gateway, "alice"), await token_for(gateway, "bob")
        async with client(url, alice) as a, client(url, alice) as a2, client(url, bob) as b:
            first = asyncio.create_task(a.call_tool("steps", {"count": 2, "gate": gate_name}))
            async with asyncio.timeout(10):
                while gateway.call_limits.in_flight("alice") == 0:  # noqa: ASYNC110 - until the first call waits
                    await asyncio.sleep(0.01)
            refused = await a2.call_tool("steps", {"count": 1})
            assert error_detail(refused)["error"] == "limit_exceeded"
            assert error_detail(refused)["limit"] == "max_in_flight_per_caller"
            assert not (await b.call_tool("steps", {"count": 1})).is_error  # another caller is not held up
            gate.set()
            await first
            assert gateway.call_limits.in_flight("alice") == 0
            assert not (await a2.call_tool("steps", {"count": 1})).is_error


async def test_a_known_token_keeps_working_while_the_token_store_is_away() -> None:
    """A PostgreSQL outage must not turn every caller into a 401 (and then lock them out for failed logins):
    a token looked up before keeps its last answer; one never seen is refused."""
    from datetime import UTC, datetime

    from mcp_gateway.auth import GatewayTokenVerifier, StaticTokens, StoredToken
    from mcp_gateway.errors import StoreError

    class FlakyStore:
        def __init__(self) -> None:
            self.down = False
            self.rows: dict[str, StoredToken] = {}

        async def add(
            self,
            token_id: str,
            subject: str,
            scopes: tuple[str, ...],
            sha256: str,
            note: str | None,
            expires_at: datetime | None,
        ) -> StoredToken:
            self.rows[sha256] = StoredToken(token_id, subject, scopes, None, datetime.now(UTC), None, None)
            return self.rows[sha256]

        async def by_hash(self, sha256: str) -> StoredToken | None:
            if self.down:
                raise StoreError("PostgreSQL failed: ConnectionRefusedError")
            return self.rows.get(sha256)

        async def all(self) -> list[StoredToken]:
            return list(self.rows.values())

        async def revoke(self, id_or_subject: str) -> list[StoredToken]:
            return []

    store = FlakyStore()
    tokens = StaticTokens(store, ttl=0)
    known, _ = await tokens.create("alice", ("billing",))
    unseen, _ = await tokens.create("bob", ())
    assert (await tokens.verify(known)) is not None
    store.down = True
    still = await tokens.verify(known)
    assert still is not None and still.subject == "alice" and still.scopes == ["billing"]
    with pytest.raises(StoreError):
        await tokens.verify(unseen)
    assert await GatewayTokenVerifier(tokens, None).verify_token(unseen) is None  # refused, never let through
