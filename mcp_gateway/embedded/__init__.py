"""Embedded NATS and PostgreSQL servers: real servers from pip-installed binaries, no services to set up."""

from __future__ import annotations

from mcp_gateway.embedded._running import running_nats_url, running_postgres_url
from mcp_gateway.embedded.nats import EmbeddedNats
from mcp_gateway.embedded.postgres import EmbeddedPostgres

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "running_nats_url", "running_postgres_url"]
