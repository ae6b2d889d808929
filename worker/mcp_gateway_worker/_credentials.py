"""How a worker (or the gateway) proves who it is to NATS, and what NATS said when it refused something.

Credentials come in three forms, as nats-py takes them: a `.creds` file (a JWT and its NKey seed, for servers in
operator mode), a user and password, or both inside the URL (`nats://user:password@host:4222`). A URL is never
logged as it is: `redact_url` hides the password (or the token) of every server in it.

NATS answers a forbidden publish or subscription with an asynchronous `-ERR 'Permissions Violation ...'`, which
nats-py hands to the error callback; the request that caused it then just times out. `Violations` keeps what the
callback heard, so that the timeout can become a `PermissionDenied` that names the subject and the user.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["BusCredentials", "CredentialsRefused", "PermissionDenied", "Violations", "redact_url", "url_user"]

INBOX_PREFIX = "_INBOX_"
"""A worker user's replies come to `_INBOX_<user>.>` (its `inbox_prefix`), so that it may be allowed to subscribe
to its own replies and to no one else's (`_INBOX.>` would be every client's)."""


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) with each password replaced by `***` (a lone token too), for logs."""
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "", scheme
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url.strip()
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{host}"


def url_user(url: str) -> str | None:
    """The user name in the (first) URL, if it carries one with a password."""
    try:
        parts = urlsplit(url.split(",")[0].strip())
    except ValueError:
        return None
    return unquote(parts.username) if parts.username and parts.password is not None else None


@dataclass(frozen=True, slots=True)
class BusCredentials:
    """Who connects to NATS: a `.creds` file, or a user and password (or neither: the URL's, or none)."""

    user: str | None = None
    password: str | None = None
    creds: Path | None = None

    def __post_init__(self) -> None:
        if self.creds is not None and (self.user or self.password):
            raise ValueError("give a .creds file or a user and password, not both")
        if bool(self.user) != bool(self.password):
            raise ValueError("a NATS user needs its password (and a password its user)")

    def name(self, url: str) -> str | None:
        """The user name this connection authenticates as, when known (a .creds file's is inside its JWT)."""
        return self.user or url_user(url)

    def connect_options(self, url: str, inbox_prefix: str | None = None) -> dict[str, Any]:
        """nats-py `connect` keywords: the credentials, and the user's own inbox prefix (`_INBOX_<user>`)."""
        options: dict[str, Any] = {}
        if self.creds is not None:
            try:
                import nkeys  # noqa: F401  # pyright: ignore[reportMissingImports, reportUnusedImport]
            except ImportError:
                raise ValueError(
                    f"the .creds file {self.creds} needs the nkeys package: pip install 'mcp-gateway-worker[creds]'"
                ) from None
            if not self.creds.is_file():
                raise ValueError(f"the .creds file {self.creds} does not exist (or is not a file)")
            options["user_credentials"] = str(self.creds)
        elif self.user:
            options["user"], options["password"] = self.user, self.password
        user = self.name(url)
        prefix = inbox_prefix or (INBOX_PREFIX + user if user else None)
        if prefix:
            options["inbox_prefix"] = prefix
        return options


class CredentialsRefused(Exception):
    """NATS refused the connection itself: no credentials, wrong ones, or a user it no longer has (revoked)."""

    def __init__(self, user: str | None, url: str, error: str) -> None:
        who = f"user {user!r}" if user else "no user (the connection had no credentials)"
        super().__init__(
            f"NATS at {url} refused the connection of {who}: {error}. Pass the worker's bus user (--user and "
            "--password, MCPGW_NATS_USER and MCPGW_NATS_PASSWORD, --creds, or in the URL); for the embedded NATS: "
            "mcp-gateway bus-user create NAME --tools-subjects ..."
        )
        self.user = user


_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)


class PermissionDenied(Exception):
    """NATS refused this connection's user something: a publish or a subscription outside its permissions."""

    def __init__(self, user: str | None, operation: str, subject: str, doing: str | None = None) -> None:
        """`operation`: `publish to` or `subscribe to`."""
        who = f"user {user!r}" if user else "this connection's user"
        what = f" (while trying to {doing})" if doing else ""
        super().__init__(
            f"NATS refused {who} permission to {operation} {subject!r}{what}: the user's permissions do not allow "
            "it (for the embedded NATS, see `mcp-gateway bus-user list`; for your own, the README's permission "
            "template)"
        )
        self.user = user
        self.operation = operation
        self.subject = subject


class Violations:
    """The permission violations NATS reported on one connection, most recent last (a bounded record).

    nats-py writes the server's words lower-cased; a subject the caller names is matched without regard to case
    and reported as the caller spelled it."""

    def __init__(self, user: str | None, keep: int = 64) -> None:
        self.user = user
        self._seen: deque[tuple[float, str, str]] = deque(maxlen=keep)
        self._watchers: dict[str, Callable[[PermissionDenied], None]] = {}

    def note(self, error: BaseException | str) -> bool:
        """Record an error the callback got; True when it was a permissions violation. A watcher of its subject
        (`watch`) is told at once."""
        found = _VIOLATION.search(str(error))
        if found is None:
            return False
        operation = "publish to" if found.group(1).lower() == "publish" else "subscribe to"
        self._seen.append((time.monotonic(), operation, found.group(2)))
        watcher = self._watchers.get(found.group(2).lower())
        if watcher is not None:
            watcher(PermissionDenied(self.user, operation, found.group(2)))
        return True

    def watch(self, subject: str, refused: Callable[[PermissionDenied], None]) -> Callable[[], None]:
        """Call `refused` when NATS reports a violation on `subject` from now on (a refusal that comes after the
        check that was to catch it, on a slow connection); returns the function that stops watching."""
        key = subject.lower()
        self._watchers[key] = refused

        def stop() -> None:
            if self._watchers.get(key) is refused:
                del self._watchers[key]

        return stop

    @staticmethod
    def mark() -> float:
        """A point in time to ask `since` about (take it before the request)."""
        return time.monotonic()

    def since(
        self, mark: float, subjects: Iterable[str] = (), doing: str | None = None, *, exact: bool = False
    ) -> PermissionDenied | None:
        """The refusal reported after `mark`: one naming one of `subjects` first, else (unless `exact`) any; None
        if none."""
        recent = [(op, subject) for at, op, subject in self._seen if at >= mark]
        if not recent:
            return None
        wanted = {s.lower(): s for s in subjects}
        for op, subject in recent:
            if subject.lower() in wanted:
                return PermissionDenied(self.user, op, wanted[subject.lower()], doing)
        if exact:
            return None
        op, subject = recent[0]
        return PermissionDenied(self.user, op, subject, doing)
