"""The store's schema: Alembic's migrations, found inside the installed package (the wheel ships them there) or
in the checkout, run in a worker thread; the level a database is at, and the newest this installation ships."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mcp_gateway.errors import StoreError
from mcp_gateway.store._postgres import asyncpg_url

__all__ = ["MIGRATIONS", "migration_level", "migrations_head", "run_migrations"]

log = structlog.get_logger(__name__)

_PACKAGE = Path(__file__).resolve().parents[1]
MIGRATIONS = next(
    (p for p in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations") if (p / "env.py").is_file()),
    _PACKAGE / "_migrations",
)
"""Alembic's folder: inside the installed package (the wheel ships `migrations/` there), or the checkout's."""


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").is_file():
        raise StoreError(
            f"migrations folder not found at {MIGRATIONS} nor at {_PACKAGE.parent / 'migrations'}: the installation "
            "is incomplete; reinstall mcp-gateway from its wheel or repository"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = asyncpg_url(url)
    return config


@functools.cache
def migrations_head() -> str:
    """The newest migration this installation ships (what `run_migrations` brings a database to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("postgresql://unused/")).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS}: the installation is incomplete")
    return head


async def migration_level(engine: AsyncEngine) -> str | None:
    """The database's migration revision (None before the first migration)."""
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not found.scalar_one():
            return None
        return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()


async def run_migrations(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (Alembic), in a worker thread (Alembic runs its own loop)."""
    from alembic import command

    config = _alembic_config(url)
    try:
        await asyncio.to_thread(command.upgrade, config, revision)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"migrating {url} failed: {exc}") from exc
    log.info("store.migrated", revision=revision)
