"""Embedded NATS and PostgreSQL servers: real servers from pip-installed binaries, no services to set up."""

from __future__ import annotations

from mcp_gateway.embedded._running import running_nats_pid, running_nats_url, running_postgres_url
from mcp_gateway.embedded.auth import BusAuth, BusUser, BusUserError, worker_permissions
from mcp_gateway.embedded.nats import EmbeddedNats
from mcp_gateway.embedded.postgres import EmbeddedPostgres

__all__ = [
    "BusAuth",
    "BusUser",
    "BusUserError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "running_nats_pid",
    "running_nats_url",
    "running_postgres_url",
    "worker_permissions",
]
