"""The static tokens' table in PostgreSQL: `mcp_gateway.auth.TokenStore`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.auth import StoredToken
from mcp_gateway.store._postgres import _FAILURES, store_failure  # pyright: ignore[reportPrivateUsage]

__all__ = ["PostgresTokenStore"]

_COLUMNS = "id, subject, scopes, note, created_at, expires_at, revoked_at"
_ADD = text(
    "INSERT INTO api_tokens (id, subject, scopes, sha256, note, expires_at) "
    f"VALUES (:id, :subject, :scopes, :sha256, :note, :expires_at) RETURNING {_COLUMNS}"
)
_BY_HASH = text(f"SELECT {_COLUMNS} FROM api_tokens WHERE sha256 = :sha256")
_LIST = text(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id")
_REVOKE = text(
    f"UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id OR subject = :id "
    f"RETURNING {_COLUMNS}"
)


def _token(row: Any) -> StoredToken:
    return StoredToken(
        id=row.id,
        subject=row.subject,
        scopes=tuple(row.scopes),
        note=row.note,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class PostgresTokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _run(self, statement: Any, values: dict[str, Any]) -> list[StoredToken]:
        try:
            async with self._engine.begin() as conn:
                return [_token(r) for r in await conn.execute(statement, values)]
        except _FAILURES as exc:
            raise store_failure(exc) from None

    async def add(
        self,
        token_id: str,
        subject: str,
        scopes: tuple[str, ...],
        sha256: str,
        note: str | None,
        expires_at: datetime | None,
    ) -> StoredToken:
        values = {"id": token_id, "subject": subject, "scopes": list(scopes), "sha256": sha256, "note": note}
        return (await self._run(_ADD, {**values, "expires_at": expires_at}))[0]

    async def by_hash(self, sha256: str) -> StoredToken | None:
        found = await self._run(_BY_HASH, {"sha256": sha256})
        return found[0] if found else None

    async def all(self) -> list[StoredToken]:
        return await self._run(_LIST, {})

    async def revoke(self, id_or_subject: str) -> list[StoredToken]:
        return await self._run(_REVOKE, {"id": id_or_subject})
