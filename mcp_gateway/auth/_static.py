"""Static bearer tokens for small setups: `mcp-gateway token create` prints a new token once and stores only its
SHA-256 (a token is 256 random bits, so a fast hash is as strong as a slow one and costs nothing per request).

A token reads `mcpgw_<id>_<secret>`: the id names it in `token list` and `token revoke`, the secret is what
proves it. Lookups are cached for `ttl` seconds (default 5), so a revoked token stops working within that time
on every gateway process. While the store is away, a token looked up before keeps its last answer.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mcp.server.auth.provider import AccessToken

from mcp_gateway.errors import GatewayError

__all__ = ["PREFIX", "StaticTokens", "StoredToken", "TokenStore", "new_token", "token_sha256"]

PREFIX = "mcpgw_"


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What the store keeps of a token: whom it names, never the token itself."""

    id: str
    subject: str
    scopes: tuple[str, ...]
    note: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenStore(Protocol):
    async def add(
        self,
        token_id: str,
        subject: str,
        scopes: tuple[str, ...],
        sha256: str,
        note: str | None,
        expires_at: datetime | None,
    ) -> StoredToken: ...
    async def by_hash(self, sha256: str) -> StoredToken | None: ...
    async def all(self) -> list[StoredToken]: ...
    async def revoke(self, id_or_subject: str) -> list[StoredToken]: ...


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> tuple[str, str]:
    """A new token and its id."""
    token_id = secrets.token_hex(4)
    return f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}", token_id


class StaticTokens:
    """Verifies `mcpgw_` tokens against the store; creates and revokes them."""

    def __init__(self, store: TokenStore, *, ttl: float = 5.0, cache_size: int = 4096) -> None:
        self._store = store
        self._ttl = ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, StoredToken | None]] = OrderedDict()

    async def create(
        self, subject: str, scopes: tuple[str, ...], *, note: str | None = None, expires_at: datetime | None = None
    ) -> tuple[str, StoredToken]:
        """A new token (to print once) and what is stored of it."""
        if not subject.strip():
            raise GatewayError("a token needs a subject (--subject NAME): the caller it names")
        token, token_id = new_token()
        stored = await self._store.add(token_id, subject, scopes, token_sha256(token), note, expires_at)
        return token, stored

    async def verify(self, token: str) -> AccessToken | None:
        """The access token for a valid, unrevoked, unexpired static token; None for anything else."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        digest = token_sha256(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._ttl:
            stored = cached[1]
        else:
            try:
                stored = await self._store.by_hash(digest)
            except GatewayError:
                if cached is None:
                    raise
                stored = cached[1]  # the store is away: what it said last stands (a valid token keeps working)
            self._cache[digest] = (now, stored)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if stored is None or stored.revoked_at is not None:
            return None
        expires = int(stored.expires_at.timestamp()) if stored.expires_at is not None else None
        if expires is not None and expires <= time.time():
            return None
        return AccessToken(
            token=token,
            client_id=stored.subject,
            subject=stored.subject,
            scopes=list(stored.scopes),
            expires_at=expires,
            claims={"token_id": stored.id, "kind": "static"},
        )
