"""The admin web page, served under `/admin` for the admin role: server-rendered (Jinja2 templates, one stylesheet,
one small script that only adds live following), readable without JavaScript.

Routes (`AdminPages.routes`): `GET /admin/login` (paste a token) and `POST /admin/login` (verified with the
gateway's verifier, the admin scope required, then kept in the session cookie), `POST /admin/logout`,
`GET /admin` and `GET /admin/workflows` (the list: filters, keyset paging), `GET /admin/workflows/{id}` (the
detail and history, followed live over `/workflows/{id}/events`), `POST /admin/workflows/{id}` (approve, deny,
cancel, retry), `GET /admin/dead-letters` (HTML for browsers; the JSON API's answer for everyone else), and
`GET /admin/static/{name}`. `AdminSession` (`_session.py`) turns the session cookie into a bearer token on the
page paths and the SSE feed only, and refuses cross-origin form posts.
"""

from mcp_gateway.server.admin._pages import AdminPages
from mcp_gateway.server.admin._session import AdminSession, SessionCookie

__all__ = ["AdminPages", "AdminSession", "SessionCookie"]
