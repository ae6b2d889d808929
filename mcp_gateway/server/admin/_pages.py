"""The admin page's routes: sign-in, the workflow list and detail (with the admin's buttons), the dead letters.

Every page needs an admin's session (the cookie `AdminSession` turns into a bearer token, verified on every
request): a browser without one is sent to `/admin/login`, a session that is not an admin's gets a 403 page.
A button is a form POST answered with 303 back to the page (Post/Redirect/Get), its outcome or refusal in a
one-time message (a short-lived cookie). Pages are rendered with Jinja2, autoescaped, and carry a strict
Content-Security-Policy (the one script is a file of the page's own, loaded from `/admin/static/`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import jinja2
import structlog
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import TokenVerifier
from mcp_gateway_worker.contract import EventKind
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.auth import Principals
from mcp_gateway.core.access import Viewer
from mcp_gateway.core.service import RetryRefused
from mcp_gateway.core.states import APPROVAL, Status
from mcp_gateway.core.workflows import AnswerRefused, WorkflowNotFound, Workflows
from mcp_gateway.server.admin._session import FROM_COOKIE, SECURITY_HEADERS, SessionCookie
from mcp_gateway.server.admin._views import (
    FilterError,
    cursor,
    dead_letter_row,
    history_row,
    list_query,
    workflow_row,
    workflow_view,
)
from mcp_gateway.store import DeadLetter, WorkflowRecord

__all__ = ["AdminPages"]

log = structlog.get_logger(__name__)

Retry = Callable[[str, dict[str, Any] | None, Viewer], Awaitable[WorkflowRecord]]
DeadLetters = Callable[[int], Awaitable[list[DeadLetter]]]

_FLASH = "mcpgw_flash"
_HISTORY_SHOWN = 500
"""The detail page shows the newest this many history events (the CLI and `workflows show` have them all)."""
_STATIC = {
    "admin.css": "text/css; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_NEXT = re.compile(r"/admin(?:/[A-Za-z0-9._~/-]*)?(?:\?[A-Za-z0-9._~%&=+:,-]*)?")
"""Where the sign-in may send the browser afterwards: an admin page of this origin, nothing else."""
_KINDS = sorted(
    {*(k.value for k in EventKind), *(s.value for s in Status), "created", "dispatched", "input_answered", "retried"}
)
"""The history's event kinds (the SSE feed names each event by its kind; the script listens for these)."""
_LABELS = {"approve": "Approve", "deny": "Deny", "cancel": "Cancel", "retry": "Retry"}


def _next(raw: str | None) -> str:
    return raw if raw and _NEXT.fullmatch(raw) and "//" not in raw else "/admin/workflows"


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True, max_num_fields=16):
        fields.setdefault(name, value)
    return fields


class _Negotiated:
    """One path, two answers: HTML to a browser (its Accept names text/html), the JSON API to everyone else."""

    def __init__(self, html: ASGIApp, api: ASGIApp) -> None:
        self.html = html
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accept = b",".join(v for k, v in scope["headers"] if k == b"accept")
        await (self.html if b"text/html" in accept else self.api)(scope, receive, send)


class AdminPages:
    """The pages' routes (`routes()`), over the same `Workflows`, retry and dead letters as the JSON admin API.
    `verifier` checks the token pasted at sign-in; `cookie` is the session cookie that `AdminSession` reads."""

    def __init__(
        self,
        *,
        workflows: Workflows,
        principals: Principals,
        verifier: TokenVerifier,
        cookie: SessionCookie,
        retry: Retry | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.workflows = workflows
        self.principals = principals
        self.verifier = verifier
        self.cookie = cookie
        self.retry = retry
        self.dead_letters = dead_letters
        package = files(__package__ or "mcp_gateway.server.admin")
        self._files = {name: ((package / "static" / name).read_bytes(), media) for name, media in _STATIC.items()}
        self._versions = {name: hashlib.sha256(body).hexdigest()[:12] for name, (body, _) in self._files.items()}
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("mcp_gateway.server.admin", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates = Jinja2Templates(env=env)

    def routes(self, *, dead_letters_api: ASGIApp) -> list[BaseRoute]:
        """The pages; `/admin/dead-letters` answers a browser with its page and anyone else with `dead_letters_api`
        (the JSON API, unchanged)."""
        return [
            Route("/admin", self.workflow_list, methods=["GET"]),
            Route("/admin/login", self.login_form, methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/workflows", self.workflow_list, methods=["GET"]),
            Route("/admin/workflows/{workflow_id}", self.workflow, methods=["GET"]),
            Route("/admin/workflows/{workflow_id}", self.act, methods=["POST"]),
            Route(
                "/admin/dead-letters",
                _Negotiated(request_response(self.dead_letter_list), dead_letters_api),
                methods=["GET"],
            ),
            Route("/admin/static/{name}", self.static, methods=["GET"]),
        ]

    # --- rendering ------------------------------------------------------------------------------------------

    def _static_url(self, name: str) -> str:
        return f"/admin/static/{name}?v={self._versions[name]}"

    def _page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        viewer: Viewer | None = None,
        nav: str = "",
        status_code: int = 200,
    ) -> Response:
        flash = self._flash_of(request)
        response = self.templates.TemplateResponse(
            request,
            template,
            {"static": self._static_url, "viewer": viewer, "nav": nav, "flash": flash, **context},
            status_code=status_code,
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )
        if flash is not None:
            response.delete_cookie(_FLASH, path="/admin", secure=self.cookie.secure, httponly=True, samesite="strict")
        return response

    def _redirect(self, url: str, *, flash: tuple[bool, str] | None = None) -> Response:
        response = RedirectResponse(url, status_code=303, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
        if flash is not None:
            ok, text = flash
            value = quote(json.dumps({"ok": ok, "text": text[:600]}, ensure_ascii=False), safe="")
            response.set_cookie(
                _FLASH, value, max_age=60, path="/admin", secure=self.cookie.secure, httponly=True, samesite="strict"
            )
        return response

    @staticmethod
    def _flash_of(request: Request) -> dict[str, Any] | None:
        raw = request.cookies.get(_FLASH)
        if not raw:
            return None
        try:
            flash = json.loads(unquote(raw))
        except ValueError:
            return None
        if not isinstance(flash, dict) or not isinstance(flash.get("text"), str):
            return None
        return {"ok": flash.get("ok") is True, "text": flash["text"]}

    def _admin(self, request: Request) -> Viewer | Response:
        """The admin of this session; or the way to the sign-in (no session, or one whose token stopped being
        valid), or the 403 page (a session that is not an admin's)."""
        if not isinstance(request.scope.get("user"), AuthenticatedUser):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target = "/admin/login?" + urlencode({"next": here if request.method == "GET" else "/admin/workflows"})
            if request.scope.get(FROM_COOKIE):
                response = self._redirect(
                    target, flash=(False, "Your session has ended: its token is no longer valid. Sign in again.")
                )
                self.cookie.clear(response)
                return response
            return self._redirect(target)
        viewer = self.principals.of_scope(request.scope)
        if not viewer.admin:
            scope = self.principals.admin_scope
            return self._page(
                request,
                "refused.html",
                {
                    "title": "Not an admin",
                    "message": f"You are signed in as {viewer.subject!r}, who is not an admin: the admin page "
                    f"needs a token with the scope {scope!r}.",
                },
                viewer=viewer,
                status_code=403,
            )
        return viewer

    # --- sign-in ---------------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """GET /admin/login: the form where an admin pastes a token."""
        return self._page(request, "login.html", {"next": _next(request.query_params.get("next")), "error": None})

    async def login(self, request: Request) -> Response:
        """POST /admin/login: verify the pasted token (as a bearer token is), require the admin scope, then keep
        it in the session cookie (no longer than the token lives)."""
        form = await _form(request)
        token, target = form.get("token", "").strip(), _next(form.get("next"))

        def refused(error: str, status_code: int) -> Response:
            context = {"next": target, "error": error}
            return self._page(request, "login.html", context, status_code=status_code)

        access = await self.verifier.verify_token(token) if self.cookie.can_hold(token) else None
        now = time.time()
        if access is None or (access.expires_at is not None and access.expires_at <= now):
            return refused("That token is not valid: unknown, revoked or expired.", 401)
        viewer = self.principals.of_token(access)
        if not viewer.admin:
            scope = self.principals.admin_scope
            return refused(
                f"That token names {viewer.subject!r}, who is not an admin: an admin's token holds the scope "
                f"{scope!r}.",
                403,
            )
        response = self._redirect(target)
        lives = int(access.expires_at - now) if access.expires_at is not None else None
        self.cookie.set(response, token, max_age=lives)
        log.info("admin.signed_in", subject=viewer.subject)
        return response

    async def logout(self, request: Request) -> Response:
        """POST /admin/logout: forget the session cookie."""
        response = self._redirect("/admin/login", flash=(True, "Signed out."))
        self.cookie.clear(response)
        return response

    # --- workflows -------------------------------------------------------------------------------------------

    async def workflow_list(self, request: Request) -> Response:
        """GET /admin/workflows: newest first, filtered by status, tool, caller and creation time, a page at a time
        (the "older" link carries the `before` cursor of the page's last workflow)."""
        if not isinstance(admin := self._admin(request), Viewer):
            return admin
        context: dict[str, Any] = {"statuses": [s.value for s in Status], "rows": [], "older": None, "newest": None}
        context["limit"] = request.query_params.get("limit", "")[:4]
        try:
            query = list_query(request.query_params)
        except FilterError as exc:
            form = {k: request.query_params.get(k, "")[:200] for k in ("status", "tool", "caller", "since")}
            context |= {"form": form, "error": str(exc)}
            return self._page(request, "workflows.html", context, viewer=admin, nav="workflows", status_code=400)
        records = await self.workflows.find(admin, query.filter)
        shown = records[: query.page_size]
        kept = query.kept()
        if len(records) > query.page_size:
            context["older"] = "/admin/workflows?" + urlencode({**kept, "before": cursor(shown[-1])})
        if query.filter.before is not None:
            context["newest"] = "/admin/workflows" + (f"?{urlencode(kept)}" if kept else "")
        context |= {"form": query.form, "error": None, "rows": [workflow_row(r) for r in shown]}
        return self._page(request, "workflows.html", context, viewer=admin, nav="workflows")

    async def workflow(self, request: Request) -> Response:
        """GET /admin/workflows/{id}: status, arguments (as kept: x-sensitive values redacted), progress, result or
        error, open questions, the history; the page's script follows the SSE feed from the last event shown."""
        if not isinstance(admin := self._admin(request), Viewer):
            return admin
        workflow_id = request.path_params["workflow_id"]
        try:  # the history first: the record read after it is at least as new, and the feed brings the rest
            events = await self.workflows.events(workflow_id, admin)
            record = await self.workflows.get(workflow_id, admin)
        except WorkflowNotFound as exc:
            return self._missing(request, admin, str(exc))
        shown = events[-_HISTORY_SHOWN:]
        context = {
            "wf": workflow_view(record),
            "history": [history_row(e) for e in shown],
            "hidden": len(events) - len(shown),
            "after": events[-1].id if events else 0,
            "feed": f"/workflows/{quote(workflow_id, safe='')}/events",
            "kinds": " ".join(_KINDS),
            "labels": _LABELS,
        }
        return self._page(request, "workflow.html", context, viewer=admin, nav="workflows")

    def _missing(self, request: Request, admin: Viewer, message: str) -> Response:
        context = {"title": "No such workflow", "message": message}
        return self._page(request, "refused.html", context, viewer=admin, nav="workflows", status_code=404)

    async def act(self, request: Request) -> Response:
        """POST /admin/workflows/{id} (`action=approve|deny|cancel|retry`): done as the admin (the history names
        them), then 303 back to its page with what came of it (a refusal too: shown, not raised)."""
        if not isinstance(admin := self._admin(request), Viewer):
            return admin
        workflow_id = request.path_params["workflow_id"]
        form = await _form(request)
        action = form.get("action", "")
        back = f"/admin/workflows/{quote(workflow_id, safe='')}"
        try:
            if action in ("approve", "deny"):
                decision = "accept" if action == "approve" else "decline"
                record = await self.workflows.answer(workflow_id, admin, APPROVAL, decision)
                done = f"{'Approved' if action == 'approve' else 'Denied'}: the workflow is {record.status.value}."
            elif action == "cancel":
                record = await self.workflows.cancel(workflow_id, admin, f"cancelled by admin {admin.subject}")
                done = (
                    "Cancelled."
                    if record.status is Status.CANCELLED
                    else f"Not cancelled: the workflow is {record.status.value}."
                )
            elif action == "retry":
                if self.retry is None:
                    raise RetryRefused("retries are not served here")
                record = await self.retry(workflow_id, None, admin)
                done = f"Retried as attempt {record.state.attempt}: the workflow is {record.status.value}."
            else:
                expected = "approve, deny, cancel or retry"
                return self._redirect(back, flash=(False, f"Unknown action {action[:40]!r}; expected {expected}."))
        except WorkflowNotFound as exc:
            return self._missing(request, admin, str(exc))
        except (AnswerRefused, RetryRefused) as exc:
            return self._redirect(back, flash=(False, f"Refused: {exc}"))
        log.info("admin.page_action", workflow_id=workflow_id, action=action, by=admin.subject)
        return self._redirect(back, flash=(True, done))

    # --- dead letters ----------------------------------------------------------------------------------------

    async def dead_letter_list(self, request: Request) -> Response:
        """GET /admin/dead-letters from a browser: the newest dead letters (`?limit=`, at most 500), each with its
        workflow's status now and a redrive button (a retry of the workflow) where one applies."""
        if not isinstance(admin := self._admin(request), Viewer):
            return admin
        context: dict[str, Any] = {"rows": [], "error": None}
        raw = request.query_params.get("limit", "100")
        if self.dead_letters is None:
            context["error"] = "Dead letters are not served here."
        elif not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 500):
            context["error"] = f"limit must be a whole number from 1 to 500, got {raw[:20]!r}."
        else:
            letters = await self.dead_letters(int(raw))
            statuses: dict[str, Status | None] = {}
            for workflow_id in {d.workflow_id for d in letters if d.workflow_id}:
                try:
                    statuses[workflow_id] = (await self.workflows.get(workflow_id, admin)).status
                except WorkflowNotFound:
                    statuses[workflow_id] = None
            context["rows"] = [dead_letter_row(d, statuses.get(d.workflow_id or "")) for d in letters]
        status_code = 200 if context["error"] is None else 400
        return self._page(
            request, "dead_letters.html", context, viewer=admin, nav="dead-letters", status_code=status_code
        )

    async def static(self, request: Request) -> Response:
        """GET /admin/static/{name}: the page's stylesheet, script and icon (public; versioned by their digest)."""
        item = self._files.get(request.path_params["name"])
        if item is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        body, media_type = item
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=media_type, headers=headers)
