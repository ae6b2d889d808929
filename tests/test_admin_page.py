"""The admin web page, in a real browser (Playwright driving the system's Chromium; nothing is downloaded): sign-in
refuses a bad token and a caller's, the list finds a workflow a client just started, its page follows it live over
the SSE feed, an admin approves a held one and redrives a dead letter, and every page reads without JavaScript.
Over plain HTTP: where the session cookie counts (the pages and the feed, not /mcp nor the JSON API), that a
cross-site form post is refused, escaping, and the list's filters and paging.

`MCPGW_TEST_CHROMIUM` names the browser (else /usr/bin/chromium); without one the browser tests are skipped,
or fail when `CI` is set. With `MCPGW_SCREENSHOTS` naming a folder, each page is saved there as a PNG
(`tools/screenshots` writes docs/screenshots/)."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from mcp_gateway_worker.contract import Caller
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind, Progress
from mcp_gateway.core.states import Status
from mcp_gateway.core.workflows import ADMIN
from mcp_gateway.server.admin._views import FilterError, list_query
from mcp_gateway.store import WorkflowFilter
from tests import workers
from tests.conftest import admin_token, http_server

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE = Caller(subject="alice")
WAIT_MS = 15_000
"""The longest a page is waited for to show something (Playwright's expect polls until then)."""


def _chromium() -> str | None:
    named = os.environ.get("MCPGW_TEST_CHROMIUM")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"MCPGW_TEST_CHROMIUM={named!r} is not an executable file; expected a Chromium binary")
        return named
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
async def browser() -> AsyncGenerator[Browser]:
    path = _chromium()
    if path is None:
        reason = (
            "no Chromium for the browser tests: set MCPGW_TEST_CHROMIUM, or install Debian's `chromium` "
            "(tools/test does, as root with apt-get)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    """Save the page as `<MCPGW_SCREENSHOTS>/admin-<name>.png`, when that folder is asked for."""
    folder = os.environ.get("MCPGW_SCREENSHOTS")
    if folder:  # Playwright makes the folder
        await page.screenshot(path=str(Path(folder) / f"admin-{name}.png"), full_page=True, animations="disabled")


async def new_page(browser: Browser, *, javascript: bool = True) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 820}, java_script_enabled=javascript)
    context.set_default_timeout(WAIT_MS)
    return context, await context.new_page()


async def sign_in(page: Page, base: str, token: str) -> None:
    """Open /admin without a session (sent to the sign-in), paste the token, land on the list."""
    await page.goto(f"{base}/admin")
    assert page.url.startswith(f"{base}/admin/login?next="), page.url
    await page.fill("#token", token)
    await page.click(".login button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Workflows")


async def test_sign_in_refuses_a_bad_token_and_a_callers_then_keeps_an_admins_in_a_strict_cookie(
    gateway: Gateway, browser: Browser
) -> None:
    caller_token, _ = await gateway.tokens.create("bob", ("billing",))
    async with http_server(gateway, auth="required") as url:
        base = url.removesuffix("/mcp")
        context, page = await new_page(browser)
        await page.goto(f"{base}/admin/workflows")
        assert page.url == f"{base}/admin/login?next=%2Fadmin%2Fworkflows"
        await shot(page, "login")
        for token, status, error in [
            ("mcpgw_00000000_not-a-real-token", 401, "That token is not valid"),
            (caller_token, 403, "names 'bob', who is not an admin"),
        ]:
            await page.fill("#token", token)
            async with page.expect_response(lambda r: r.request.method == "POST") as answered:
                await page.click(".login button[type=submit]")
            assert (await answered.value).status == status
            await expect(page.locator("#login-error")).to_contain_text(error)
            assert await context.cookies() == []

        await page.fill("#token", await admin_token(gateway))
        await page.click(".login button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Workflows")
        assert page.url == f"{base}/admin/workflows"  # back where it was sent from
        (cookie,) = await context.cookies()
        assert cookie.get("name") == "mcpgw_admin" and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict"
        assert cookie.get("path") == "/" and not cookie.get("secure")
        assert 7.9 * 3600 < cookie.get("expires", 0) - time.time() <= 8 * 3600

        await page.click(".signout button")
        await expect(page.locator(".flash-ok")).to_have_text("Signed out.")
        assert await context.cookies() == []
        await page.goto(f"{base}/admin")
        assert page.url.startswith(f"{base}/admin/login")
        await context.close()


async def test_an_admin_finds_a_new_workflow_follows_it_live_then_approves_a_held_one(
    gateway: Gateway, browser: Browser
) -> None:
    gate = uuid.uuid4().hex
    workers.gates[gate] = asyncio.Event()
    first_step = asyncio.Event()

    async def progressed(progress: Progress) -> None:
        first_step.set()

    # A client's call (it waits for its result): four progress steps, held after the first until the gate opens.
    call = asyncio.create_task(
        gateway.service.call("steps", {"count": 4, "gate": gate}, caller=ALICE, on_progress=progressed)
    )
    try:
        async with asyncio.timeout(15):
            await first_step.wait()
        (started,) = await gateway.workflows.find(ADMIN, WorkflowFilter(tool="steps"))
        async with http_server(gateway, auth="required") as url:
            base = url.removesuffix("/mcp")
            context, page = await new_page(browser)
            await sign_in(page, base, await admin_token(gateway))
            row = page.locator(f'tr[data-id="{started.id}"]')
            await expect(row).to_contain_text("steps")
            await expect(row).to_contain_text("running")
            await expect(row).to_contain_text("1 / 4 · step 1")
            await expect(row).to_contain_text("alice")
            await shot(page, "list")

            await row.locator("a.id").click()
            await expect(page.locator("#status")).to_have_text("running")
            await expect(page.locator("#progress-text")).to_have_text("1 / 4 · step 1")
            await expect(page.locator("#following")).to_be_visible()  # the feed is open
            rows = page.locator("#history-rows tr")
            loaded = await rows.count()
            await page.evaluate("window.sameDocument = true")  # gone if the page were loaded again
            await shot(page, "detail-live")

            workers.gates[gate].set()  # the worker goes on: steps 2 to 4 and the result arrive over the feed
            await expect(page.locator("#status")).to_have_text("completed")
            await expect(page.locator("#progress-text")).to_have_text("4 / 4 · step 4")
            await expect(page.locator("#result")).to_contain_text('"count": 4')
            await expect(page.locator("#following")).to_be_hidden()
            assert await rows.count() >= loaded + 4  # three progress events and the result, at least
            assert await page.locator("#history-rows tr.arrived").count() == await rows.count() - loaded
            assert await page.evaluate("window.sameDocument === true")  # never reloaded
            await expect(page.locator("form.while-open")).to_be_hidden()  # cancel no longer applies
            await shot(page, "detail-completed")
            outcome = await call
            assert outcome.kind is OutcomeKind.COMPLETED and outcome.result == {"count": 4}

            # A tool held for an admin's approval: found with the list's filters, approved, seen completing.
            held = await gateway.service.call("vault", {}, caller=ALICE, wait=False)
            await page.goto(f"{base}/admin/workflows")
            await page.select_option("select[name=status]", "input_required")
            await page.fill("input[name=tool]", "vault")
            await page.click(".filters button[type=submit]")
            assert "status=input_required" in page.url and "tool=vault" in page.url
            await expect(page.locator("#workflows tbody tr")).to_have_count(1)
            await page.click(f'a.id:text("{held.workflow_id}")')
            await expect(page.locator("#questions")).to_contain_text("needs approval by an admin")
            await shot(page, "detail-approval")
            await page.click("button.action-approve")
            await expect(page.locator(".flash-ok")).to_contain_text("Approved")
            await expect(page.locator("#status")).to_have_text("completed")
            await expect(page.locator("#result")).to_contain_text('"ok": true')
            await expect(page.locator("#history-rows")).to_contain_text("test-admin")  # who approved
            await context.close()
    finally:
        workers.gates[gate].set()
        await call


async def test_every_page_reads_without_javascript(gateway: Gateway, browser: Browser) -> None:
    done = await gateway.service.call("steps", {"count": 2}, caller=ALICE)
    assert done.kind is OutcomeKind.COMPLETED and done.workflow_id is not None
    async with http_server(gateway, auth="required") as url:
        base = url.removesuffix("/mcp")
        context, page = await new_page(browser, javascript=False)
        await sign_in(page, base, await admin_token(gateway))  # a plain form post
        await expect(page.locator(f'tr[data-id="{done.workflow_id}"]')).to_contain_text("completed")
        await page.click(f'a.id:text("{done.workflow_id}")')
        await expect(page.locator("#status")).to_have_text("completed")
        await expect(page.locator("#progress-text")).to_have_text("2 / 2 · step 2")
        await expect(page.locator("#result")).to_contain_text('"count": 2')
        await expect(page.locator("#history-rows")).to_contain_text("progress")
        await expect(page.locator("#following")).to_be_hidden()
        await page.click("a[href='/admin/dead-letters']")
        await expect(page.locator("h1")).to_have_text("Dead letters")
        await expect(page.locator("#dead-letters")).to_contain_text("No dead letters.")
        await context.close()


async def test_the_dead_letters_page_redrives_a_workflow(gateway: Gateway, browser: Browser) -> None:
    key = uuid.uuid4().hex
    # Crashes on each of its first run's 3 attempts: dead-lettered. Redriven (the same arguments), it succeeds.
    dead = await gateway.service.call("shaky", {"crashes": 3, "key": key}, caller=ALICE)
    assert dead.status is Status.DEAD_LETTERED and dead.workflow_id is not None
    async with http_server(gateway, auth="required") as url:
        base = url.removesuffix("/mcp")
        context, page = await new_page(browser)
        await sign_in(page, base, await admin_token(gateway))
        await page.click("a[href='/admin/dead-letters']")
        row = page.locator("#dead-letters tbody tr", has_text=dead.workflow_id)
        await expect(row).to_contain_text("dead_lettered")
        await expect(row).to_contain_text("worker_error")
        await shot(page, "dead-letters")
        await row.locator("button.action-retry").click()
        assert page.url == f"{base}/admin/workflows/{dead.workflow_id}"
        await expect(page.locator(".flash-ok")).to_contain_text("Retried as attempt")
        await expect(page.locator("#status")).to_have_text("completed")
        await expect(page.locator("#result")).to_contain_text('"attempts": 4')
        await context.close()


async def test_the_cookie_counts_on_the_pages_and_the_feed_only_and_cross_site_posts_are_refused(
    gateway: Gateway,
) -> None:
    note = "<script>alert(1)</script>"
    held = await gateway.service.call("guarded", {"note": note}, caller=ALICE, wait=False)
    wid = held.workflow_id
    assert wid is not None
    token = await admin_token(gateway)
    async with (
        http_server(gateway, auth="required") as url,
        httpx2.AsyncClient(timeout=10) as http,  # keeps the cookies it is given, as a browser does
        httpx2.AsyncClient(timeout=10) as bare,  # never has any
    ):
        base = url.removesuffix("/mcp")
        here = {"Origin": base}
        without = await http.get(f"{base}/admin")
        assert without.status_code == 303 and without.headers["location"] == "/admin/login?next=%2Fadmin"
        assert (await http.post(f"{base}/admin/login", data={"token": token})).status_code == 403  # no Origin

        signed_in = await http.post(f"{base}/admin/login", data={"token": token}, headers=here)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/admin/workflows"
        set_cookie = signed_in.headers["set-cookie"]
        assert set_cookie.startswith(f"mcpgw_admin={token};") and "Secure" not in set_cookie
        for part in ("HttpOnly", "Max-Age=28800", "Path=/", "SameSite=strict"):
            assert part in set_cookie, set_cookie

        page = await http.get(f"{base}/admin/workflows/{wid}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert note not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # escaped
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "same-origin"
        assert '<script src="/admin/static/admin.js?v=' in page.text and "<script>" not in page.text

        # A cookie-authenticated post without Origin or Referer (or from elsewhere) is refused; from the page, done.
        action = f"{base}/admin/workflows/{wid}"
        # (Another local origin passes the Host and Origin guard, which allows every local one, but not this rule.)
        for headers in ({}, {"Referer": "http://elsewhere.example/x"}, {"Origin": "http://localhost:1"}):
            refused = await http.post(action, data={"action": "cancel"}, headers=headers)
            assert refused.status_code == 403 and "must come from the page itself" in refused.text
        assert (await gateway.workflows.get(wid, ADMIN)).status is Status.INPUT_REQUIRED
        referer = {"Referer": f"{base}/admin/workflows/{wid}"}
        cancelled = await http.post(action, data={"action": "cancel"}, headers=referer)
        assert cancelled.status_code == 303 and cancelled.headers["location"] == f"/admin/workflows/{wid}"
        assert (await gateway.workflows.get(wid, ADMIN)).status is Status.CANCELLED
        assert (await http.post(action, data={"action": "approve"}, headers=here)).status_code == 303
        shown = await http.get(f"{base}/admin/workflows/{wid}")  # with the one-time message's cookie
        assert "Refused:" in shown.text and "it asks for no input" in shown.text  # shown, not raised
        assert "Refused:" not in (await http.get(f"{base}/admin/workflows/{wid}")).text  # once

        # The feed takes the cookie; /mcp and the JSON admin API do not.
        async with http.stream("GET", f"{base}/workflows/{wid}/events?after=0") as feed:
            assert feed.status_code == 200
            body = "".join([chunk async for chunk in feed.aiter_text()])  # it ends: the workflow has ended
        assert "event: created" in body and "event: cancelled" in body
        assert (await http.post(f"{base}/admin/workflows/{wid}/retry")).status_code == 401
        assert (await http.post(url, json={})).status_code == 401
        # The JSON API's answers are unchanged at the path the page shares with it.
        letters = await bare.get(f"{base}/admin/dead-letters", headers={"Authorization": f"Bearer {token}"})
        assert letters.status_code == 200 and letters.json() == {"dead_letters": []}
        assert (await bare.get(f"{base}/admin/dead-letters")).status_code == 401

        # A cookie whose token no longer verifies ends the session; a caller's token is not an admin's.
        ended = await bare.get(f"{base}/admin/workflows", headers={"Cookie": "mcpgw_admin=mcpgw_0000_revoked"})
        assert ended.status_code == 303 and ended.headers["location"].startswith("/admin/login?next=")
        assert any(c.startswith('mcpgw_admin="";') for c in ended.headers.get_list("set-cookie"))
        caller_token, _ = await gateway.tokens.create("bob", ())
        refused_page = await bare.get(f"{base}/admin/workflows", headers={"Cookie": f"mcpgw_admin={caller_token}"})
        assert refused_page.status_code == 403 and "&#39;bob&#39;, who is not an admin" in refused_page.text


async def test_the_list_filters_and_pages_by_a_keyset_cursor(gateway: Gateway) -> None:
    ids = [
        (await gateway.service.call("vault", {}, caller=Caller(subject=f"c{i}"), wait=False)).workflow_id
        for i in range(3)
    ]
    token = await admin_token(gateway)
    async with http_server(gateway, auth="required") as url, httpx2.AsyncClient(timeout=10) as http:
        base = url.removesuffix("/mcp")
        http.headers["Cookie"] = f"mcpgw_admin={token}"
        first = await http.get(f"{base}/admin/workflows", params={"tool": "vault", "limit": "2"})
        assert [i for i in ids if f'data-id="{i}"' in first.text] == ids[1:]  # newest first
        older = re.search(r'href="([^"]+)" rel="next"', first.text)
        assert older is not None and "before=" in older.group(1) and "limit=2" in older.group(1)
        second = await http.get(base + older.group(1).replace("&amp;", "&"))
        assert [i for i in ids if f'data-id="{i}"' in second.text] == ids[:1]
        assert 'rel="next"' not in second.text and "Newest" in second.text
        by_caller = await http.get(f"{base}/admin/workflows", params={"caller": "c1"})
        assert [i for i in ids if f'data-id="{i}"' in by_caller.text] == ids[1:2]
        later = await http.get(f"{base}/admin/workflows", params={"since": "2999-01-01T00:00"})
        assert "No workflows match." in later.text
        bad = await http.get(f"{base}/admin/workflows", params={"status": "sleeping"})
        assert bad.status_code == 400 and "&#39;sleeping&#39; is not a status" in bad.text


def test_list_filters_are_checked() -> None:
    now = datetime.now(UTC)
    query = list_query({"status": "running", "since": "2026-01-02", "before": f"{now.isoformat()},abc"})
    assert query.filter.status is Status.RUNNING and query.filter.before == (now, "abc")
    assert query.filter.since == datetime(2026, 1, 2, tzinfo=UTC) and query.filter.limit == 51
    for params, error in [
        ({"since": "yesterday"}, "since: 'yesterday' is not a date"),
        ({"before": "no-cursor"}, "before: 'no-cursor' is not a cursor"),
        ({"limit": "0"}, "limit: a whole number from 1 to 500"),
        ({"tool": "x" * 201}, "tool: at most 200 characters"),
    ]:
        with pytest.raises(FilterError, match=re.escape(error)):
            list_query(params)
