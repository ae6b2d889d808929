"""The store adapter: the core's `WorkflowStore` port in PostgreSQL (one implementation), and the records it
hands out (defined in `mcp_gateway.core.ports`, re-exported here)."""

from mcp_gateway.core.ports import (
    HEAD_BYTES,
    Applied,
    Counts,
    DeadLetter,
    EventRecord,
    ExistingWorkflow,
    NewWorkflow,
    OutboxMessage,
    Reopening,
    WorkflowFilter,
    WorkflowRecord,
    WorkflowStore,
)
from mcp_gateway.store._event_store import PostgresEventStore
from mcp_gateway.store._memory import InMemoryStore
from mcp_gateway.store._postgres import PostgresStore, asyncpg_url
from mcp_gateway.store._schema import migration_level, migrations_head, run_migrations
from mcp_gateway.store._tokens import PostgresTokenStore

__all__ = [
    "HEAD_BYTES",
    "Applied",
    "Counts",
    "DeadLetter",
    "EventRecord",
    "ExistingWorkflow",
    "InMemoryStore",
    "NewWorkflow",
    "OutboxMessage",
    "PostgresEventStore",
    "PostgresStore",
    "PostgresTokenStore",
    "Reopening",
    "WorkflowFilter",
    "WorkflowRecord",
    "WorkflowStore",
    "asyncpg_url",
    "migration_level",
    "migrations_head",
    "run_migrations",
]
