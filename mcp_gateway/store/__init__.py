"""Workflow state in PostgreSQL, behind one small interface (`WorkflowStore`) with one implementation."""

from mcp_gateway.store._event_store import PostgresEventStore
from mcp_gateway.store._interface import (
    HEAD_BYTES,
    Applied,
    DeadLetter,
    EventRecord,
    ExistingWorkflow,
    NewWorkflow,
    OutboxMessage,
    Reopening,
    WorkflowRecord,
    WorkflowStore,
)
from mcp_gateway.store._postgres import PostgresStore, asyncpg_url, run_migrations

__all__ = [
    "HEAD_BYTES",
    "Applied",
    "DeadLetter",
    "EventRecord",
    "ExistingWorkflow",
    "NewWorkflow",
    "OutboxMessage",
    "PostgresEventStore",
    "PostgresStore",
    "Reopening",
    "WorkflowRecord",
    "WorkflowStore",
    "asyncpg_url",
    "run_migrations",
]
