"""The access log: a line per HTTP request with its route template, status, duration and caller, never a secret."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
from structlog.testing import capture_logs

from mcp_gateway.app import Gateway
from tests.conftest import admin_token, http_server


def _requests(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "http.request"]


async def test_each_request_logs_one_line_with_route_status_and_caller(gateway: Gateway) -> None:
    admin = await admin_token(gateway, "ops-oncall")
    async with http_server(gateway, auth="required") as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp")
        with capture_logs() as logs:
            assert (await http.get(f"{base}/healthz")).status_code == 200
            secret_path = f"{base}/admin/workflows/0123456789abcdef/cancel?token=hunter2"
            refused = await http.post(secret_path, headers={"Authorization": "Bearer mcpgw_nope_nope"})
            assert refused.status_code == 401
            missing = await http.post(
                f"{base}/admin/workflows/0123456789abcdef/cancel", headers={"Authorization": f"Bearer {admin}"}
            )
            assert missing.status_code == 404
            assert (await http.get(f"{base}/nowhere")).status_code == 404
            bad_host = await http.get(f"{base}/healthz", headers={"Host": "evil.example"})
            assert bad_host.status_code in (400, 421)
    lines = _requests(logs)
    assert [(e["method"], e["route"], e["status"]) for e in lines] == [
        ("GET", "/healthz", 200),
        ("POST", "/admin/workflows/{workflow_id}/{action}", 401),
        ("POST", "/admin/workflows/{workflow_id}/{action}", 404),
        ("GET", "(no route)", 404),
        ("GET", "/healthz", bad_host.status_code),
    ]
    assert lines[0]["log_level"] == "debug" and lines[2]["log_level"] == "info"  # health probes are quiet
    assert lines[2]["caller"] == "ops-oncall" and "caller" not in lines[1]  # a refused token names no one
    assert all(e["duration_ms"] >= 0 and e["client"] == "127.0.0.1" and e["bytes"] > 0 for e in lines)
    text = repr(lines)
    assert "hunter2" not in text and "0123456789abcdef" not in text and admin not in text and "mcpgw_nope" not in text


async def test_the_trace_id_of_a_client_traceparent_is_logged(gateway: Gateway) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with http_server(gateway, auth="optional") as url, httpx2.AsyncClient(timeout=10) as http:
        with capture_logs() as logs:
            await http.get(
                url.removesuffix("/mcp") + "/readyz", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
            )
            await http.get(url.removesuffix("/mcp") + "/readyz", headers={"traceparent": "junk"})
    first, second = _requests(logs)
    assert first["trace_id"] == trace and "caller" not in first  # anonymous on loopback
    assert "trace_id" not in second
