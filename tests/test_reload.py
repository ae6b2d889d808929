"""Config reload while the gateway runs: a changed folder is swapped in and announced (list-changed on both
wires); a broken one is refused with every problem logged, and the last good config goes on serving."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import mcp.types as types
from mcp import Client
from structlog.testing import capture_logs

from mcp_gateway.app import open_gateway
from mcp_gateway.core.reload import RegistryReloader
from mcp_gateway.registry import Registry, load_registry
from tests.conftest import ROOT, Env, http_server, running_workers

EXTRA = """
tools:
  - name: {name}
    description: Added while the gateway runs.
    subject: diagnostics.echo
    mode: sync
    timeout: 10
    input_schema: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}
"""


async def test_the_reloader_swaps_in_good_config_only(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config" / "tools", tmp_path / "tools")
    changes: list[tuple[Registry, Registry]] = []

    async def on_change(old: Registry, new: Registry) -> None:
        changes.append((old, new))

    first = load_registry(tmp_path / "tools")
    reloader = RegistryReloader(tmp_path / "tools", first, on_change, interval=0)
    assert not await reloader.reload(force=False)  # nothing changed
    (tmp_path / "tools" / "extra.yaml").write_text(EXTRA.format(name="echo_again"))
    assert await reloader.reload(force=False)
    assert "echo_again" in reloader.registry and len(changes) == 1 and changes[0][0] is first
    (tmp_path / "tools" / "broken.yaml").write_text("tools: [ {name: x")
    with capture_logs() as logs:
        assert not await reloader.reload(force=False)
    assert "echo_again" in reloader.registry and len(changes) == 1  # the last good config goes on serving
    (refused,) = [e for e in logs if e["event"] == "registry.reload_refused"]
    assert any("broken.yaml" in p and "not valid YAML" in p for p in refused["problems"])


async def test_clients_hear_that_the_tools_changed(env: Env, tmp_path: Path) -> None:
    """A tool's new description is served, and announced on both wires, without a restart."""
    tools = tmp_path / "tools"
    shutil.copytree(ROOT / "config" / "tools", tools)
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.append("tools")

    settings = env.settings(tools_dir=tools, reload_interval=0.1)
    async with (
        open_gateway(settings) as gateway,
        running_workers(env),
        http_server(gateway) as url,
        Client(url, mode="legacy", message_handler=on_message) as legacy,
        Client(url) as modern,
    ):
        assert legacy.server_capabilities is not None and legacy.server_capabilities.tools is not None
        assert legacy.server_capabilities.tools.list_changed
        before = {t.name: t.description for t in (await legacy.list_tools()).tools}
        async with modern.listen(tools_list_changed=True) as subscription:
            diagnostics = tools / "diagnostics.yaml"
            diagnostics.write_text(diagnostics.read_text().replace(before["echo"] or "", "Echo, reloaded."))
            async with asyncio.timeout(10):
                event = await anext(aiter(subscription))
                while not heard:  # noqa: ASYNC110 - the legacy session's notification arrives on its own
                    await asyncio.sleep(0.02)
        after = {t.name: t.description for t in (await legacy.list_tools()).tools}
        result = await modern.call_tool("echo", {"text": "hi"})
    assert "tools" in type(event).__name__.lower(), event
    assert after["echo"] == "Echo, reloaded." and before["echo"] != after["echo"]
    assert not result.is_error and result.structured_content is not None


async def test_the_resource_metadata_names_the_scopes_a_reload_brings(env: Env, tmp_path: Path) -> None:
    """RFC 9728's `scopes_supported` follows the tool folder: a tool added with a new scope shows it there."""
    import httpx2

    tools = tmp_path / "tools"
    shutil.copytree(ROOT / "config" / "tools", tools)
    settings = env.settings(tools_dir=tools, reload_interval=0.1)
    async with open_gateway(settings) as gateway, http_server(gateway, auth="required") as url:
        metadata = url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:
            first = (await http.get(metadata)).json()
            assert "ledgers" not in first["scopes_supported"] and "mcpgw:admin" in first["scopes_supported"]
            (tools / "extra.yaml").write_text(EXTRA.format(name="echo_ledgers") + "    scopes: [ledgers]\n")
            async with asyncio.timeout(10):
                while "echo_ledgers" not in gateway.registry:  # noqa: ASYNC110 - the reload loop's own pace
                    await asyncio.sleep(0.05)
            after = await http.get(metadata)
            assert "ledgers" in after.json()["scopes_supported"] and after.json()["resource"] == first["resource"]
            assert after.headers["cache-control"] == "public, max-age=3600"
            bare = (await http.get(url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource")).json()
            assert "ledgers" in bare["scopes_supported"]
