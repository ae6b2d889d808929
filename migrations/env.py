"""Alembic environment: async (asyncpg), URL handed in by `mcp_gateway.store.run_migrations`."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mcp_gateway.store import asyncpg_url

config = context.config
# Migrations are written by hand (the store speaks SQL, not an ORM), so there is no metadata to compare.
target_metadata = None


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("MCPGW_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: use 'mcp-gateway migrate' or set MCPGW_DATABASE_URL")
    return asyncpg_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
