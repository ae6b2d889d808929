"""The admin page's session: a cookie holding the admin's own token, taken on the page paths and the SSE feed only.

`AdminSession` sits in front of the SDK's `AuthenticationMiddleware`. On a page path (`/admin`, `/admin/login`,
`/admin/logout`, `/admin/workflows`, `/admin/workflows/{id}`, `/admin/dead-letters`) or the feed
(`/workflows/{id}/events`), a request with the cookie and no `Authorization` header gets
`Authorization: Bearer <token>` from it, so the token is verified as every bearer token is, on every request
(a revoked one stops working within the verifier's cache, 5 s). Nowhere else does the cookie count: not on
`/mcp`, not on the JSON admin API.

Cross-site requests: the cookie is SameSite=Strict, and a form POST to a page path without an `Authorization`
header of its own must come from the page's own origin, its `Origin` (else `Referer`) naming the request's
`Host` or the public URL; anything else is answered 403 before it reaches a page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FROM_COOKIE", "SECURITY_HEADERS", "AdminSession", "SessionCookie", "is_page_path"]

FROM_COOKIE = "mcpgw.admin_cookie"
"""Set (True) in the ASGI scope of a request whose token came from the session cookie."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
"""On every page the admin page answers (no inline script or style, no framing, no referrer to elsewhere)."""

_PAGES = re.compile(r"/admin(?:/|/login|/logout|/workflows|/workflows/[^/]+|/dead-letters)?")
_FEED = re.compile(r"/workflows/[^/]+/events")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,4096}")
"""What a bearer token may hold (RFC 6750's b64token); anything else is never put in a header."""


def is_page_path(path: str) -> bool:
    return _PAGES.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """The session cookie: HttpOnly, SameSite=Strict, Path=/, Secure (and `__Host-` named) when the gateway is
    reached over https, for `max_age` seconds (8 hours) at most."""

    secure: bool
    max_age: int = 8 * 3600

    @property
    def name(self) -> str:
        return "__Host-mcpgw_admin" if self.secure else "mcpgw_admin"

    def set(self, response: Response, token: str, max_age: int | None = None) -> None:
        seconds = self.max_age if max_age is None else max(1, min(max_age, self.max_age))
        response.set_cookie(
            self.name, token, max_age=seconds, path="/", secure=self.secure, httponly=True, samesite="strict"
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(self.name, path="/", secure=self.secure, httponly=True, samesite="strict")

    @staticmethod
    def can_hold(token: str) -> bool:
        """Whether `token` can be kept in the cookie and sent on as a bearer token."""
        return _TOKEN.fullmatch(token) is not None

    def token(self, cookie_header: str) -> str | None:
        """The token the cookie holds, when it holds one that can be a bearer token."""
        value = cookie_parser(cookie_header).get(self.name)
        return value if value and self.can_hold(value) else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _origin(scope: Scope) -> str | None:
    """The request's Origin, else its Referer's scheme and host (None when it has neither)."""
    origin = _header(scope, b"origin")
    if origin is None and (referer := _header(scope, b"referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"
    return origin


class AdminSession:
    """The session cookie as a bearer token on the page paths and the feed, and the same-origin rule for form
    POSTs to the pages (see the module's docstring). `public_origin`: the gateway's public URL's scheme and host,
    also accepted as a form's origin (behind a proxy that rewrites Host)."""

    def __init__(self, app: ASGIApp, *, cookie: SessionCookie, public_origin: str | None = None) -> None:
        self.app = app
        self.cookie = cookie
        self.public_origin = public_origin.rstrip("/").lower() if public_origin else None

    def _same_origin(self, scope: Scope) -> tuple[bool, str | None]:
        origin = _origin(scope)
        if not origin or origin == "null":
            return False, origin
        host = (_header(scope, b"host") or "").lower()
        netloc = urlsplit(origin).netloc.lower()
        return (bool(host) and netloc == host) or origin.rstrip("/").lower() == self.public_origin, origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        page = is_page_path(path)
        if not page and not (_FEED.fullmatch(path) and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        if _header(scope, b"authorization") is not None:  # a client with a token of its own: no cookie, no CSRF
            await self.app(scope, receive, send)
            return
        if page and scope["method"] == "POST":
            same, origin = self._same_origin(scope)
            if not same:
                host = _header(scope, b"host")
                refusal = PlainTextResponse(
                    f"403 Forbidden: a form sent to the admin page must come from the page itself (its Origin, or "
                    f"else its Referer, must name this host, {host!r}); got {origin!r}\n",
                    status_code=403,
                    headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
                )
                await refusal(scope, receive, send)
                return
        cookies = "; ".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie")
        token = self.cookie.token(cookies)
        if token is not None:
            headers = [*scope["headers"], (b"authorization", b"Bearer " + token.encode("ascii"))]
            scope = {**scope, "headers": headers, FROM_COOKIE: True}
        await self.app(scope, receive, send)
