"""The SQL of the PostgreSQL store: SQLAlchemy `text()` statements for the locked and admin paths, plain strings
for asyncpg's prepared statements on the hot path (`$n` parameters). Business rules are the core's: these only
read and write what the core decided."""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import LargeBinary

from mcp_gateway.core.states import TERMINAL

__all__ = [
    "BY_KEY",
    "CHANGES_CHANNEL",
    "COLUMNS",
    "COUNTS",
    "CREATE",
    "CREATE_MANY",
    "CREATE_RAW",
    "DEAD_LETTER",
    "DEAD_LETTERS",
    "DROP_HELD",
    "FOLD_AT_VERSION",
    "FOLD_MANY",
    "LOCK",
    "MARK_PUBLISHED",
    "NOTIFY_LIMIT",
    "OUTBOX_DEPTH",
    "OVERDUE",
    "RECORD_EVENT",
    "RELEASE",
    "RELEASE_KEY",
    "REOPEN",
    "STATES_OF",
    "STATE_OF",
    "UNPUBLISHED",
    "UPDATE",
]

CREATE = text(
    """
    WITH wf AS (
        INSERT INTO workflows (id, tool, tool_version, arguments, status, caller, request_id, trace_id, deadline,
                               questions, idempotency_key, arguments_hash)
        VALUES (:id, :tool, :tool_version, :arguments, :status, :caller, :request_id, :trace_id, :deadline,
                :questions, :idempotency_key, :arguments_hash)
        ON CONFLICT (caller, tool, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
    ), ev AS (
        INSERT INTO workflow_events (workflow_id, event_key, kind, status, data)
        SELECT id, 'created', 'created', :status, :event_data FROM wf
    )
    INSERT INTO outbox (workflow_id, subject, msg_id, headers, payload, held)
    SELECT id, :subject, :msg_id, :headers, :payload, :held FROM wf
    RETURNING id
    """
).bindparams(
    bindparam("arguments", type_=JSONB),
    bindparam("questions", type_=JSONB),
    bindparam("event_data", type_=JSONB),
    bindparam("headers", type_=JSONB),
    bindparam("payload", type_=LargeBinary),
)

CREATE_RAW = """
    WITH wf AS (
        INSERT INTO workflows (id, tool, tool_version, arguments, status, caller, request_id, trace_id, deadline,
                               questions, idempotency_key, arguments_hash)
        VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10::jsonb, NULL, NULL)
        RETURNING id
    ), ev AS (
        INSERT INTO workflow_events (workflow_id, event_key, kind, status, data)
        SELECT id, 'created', 'created', $5, $11::jsonb FROM wf
    )
    INSERT INTO outbox (workflow_id, subject, msg_id, headers, payload, held)
    SELECT id, $12, $13, $14::jsonb, $15, $16 FROM wf
    RETURNING id
"""
"""`CREATE` without an idempotency key, for asyncpg (prepared once per connection)."""

# Several calls' creates in one statement and one commit (group commit): the rows as one JSON parameter, the
# commands' bytes as an array beside it (`ord` indexes both).
CREATE_MANY = """
    WITH input AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
            ord int, id text, tool text, tool_version text, arguments jsonb, status text, caller text,
            request_id text, trace_id text, deadline timestamptz, questions jsonb, event_data jsonb, subject text,
            msg_id text, headers jsonb, held bool)
    ), wf AS (
        INSERT INTO workflows (id, tool, tool_version, arguments, status, caller, request_id, trace_id, deadline,
                               questions, idempotency_key, arguments_hash)
        SELECT id, tool, tool_version, arguments, status, caller, request_id, trace_id, deadline, questions, NULL, NULL
        FROM input ORDER BY ord
        RETURNING id
    ), ev AS (
        INSERT INTO workflow_events (workflow_id, event_key, kind, status, data)
        SELECT i.id, 'created', 'created', i.status, i.event_data FROM input i JOIN wf ON wf.id = i.id
    )
    INSERT INTO outbox (workflow_id, subject, msg_id, headers, payload, held)
    SELECT i.id, i.subject, i.msg_id, i.headers, ($2::bytea[])[i.ord], i.held FROM input i JOIN wf ON wf.id = i.id
    ORDER BY i.ord
    RETURNING id, workflow_id
"""

RELEASE_KEY = text(
    "UPDATE workflows SET idempotency_key = NULL WHERE caller = :caller AND tool = :tool "
    "AND idempotency_key = :key AND created_at < now() - make_interval(secs => :window)"
)
BY_KEY = text(
    "SELECT id, arguments_hash FROM workflows WHERE caller = :caller AND tool = :tool AND idempotency_key = :key"
)

# asyncpg's own pool: one prepared statement for a batch of the relay's marks. The workflows it moves are locked
# in id order, as FOLD_MANY locks its own: locked in the order the outbox gave them, a mark and a fold batch could
# each hold a row the other waits for (PostgreSQL found the deadlock after its deadlock_timeout, a second, and
# failed one of them).
MARK_PUBLISHED = """
    WITH sent AS (
        DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING workflow_id
    ), pending AS (
        SELECT w.id FROM workflows w JOIN sent ON w.id = sent.workflow_id
        WHERE w.status = 'pending'
        ORDER BY w.id FOR UPDATE OF w
    ), moved AS (
        UPDATE workflows w SET status = 'dispatched', updated_at = now(), version = w.version + 1
        FROM pending WHERE w.id = pending.id AND w.status = 'pending'
        RETURNING w.id
    )
    INSERT INTO workflow_events (workflow_id, event_key, kind, status)
    SELECT sent.workflow_id, 'dispatched', 'dispatched', CASE WHEN moved.id IS NULL THEN NULL ELSE 'dispatched' END
    FROM sent LEFT JOIN moved ON moved.id = sent.workflow_id
    ON CONFLICT (workflow_id, event_key) DO NOTHING
    RETURNING workflow_id, status
"""

UNPUBLISHED = text(
    """
    SELECT id, workflow_id, subject, msg_id, headers, payload FROM outbox
    WHERE created_at < now() - make_interval(secs => :age) AND NOT held
    ORDER BY id LIMIT :limit
    """
)

LOCK = text(
    """
    SELECT tool, status, attempt, last_seq, progress, progress_total, progress_message, result, error, version,
           questions, answers, content
    FROM workflows WHERE id = :id FOR UPDATE
    """
)

RECORD_EVENT = text(
    """
    INSERT INTO workflow_events (workflow_id, event_key, kind, status, data, note, at)
    VALUES (:id, :key, :kind, :status, :data, :note, :at)
    ON CONFLICT (workflow_id, event_key) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("data", type_=JSONB))

# The change is announced in the same transaction: PostgreSQL delivers a NOTIFY only after commit, and in
# commit order, to every listening gateway process, so waiters see a workflow's changes in the order they happened.
UPDATE = text(
    """
    WITH changed AS (
        UPDATE workflows SET status = :status, attempt = :attempt, last_seq = :last_seq, progress = :progress,
            progress_total = :total, progress_message = :message, result = :result, error = :error,
            version = :version, questions = :questions, answers = :answers, content = :content, updated_at = now()
        WHERE id = :id
        RETURNING id
    )
    SELECT pg_notify(:channel, :change) FROM changed
    """
).bindparams(
    bindparam("result", type_=JSONB),
    bindparam("error", type_=JSONB),
    bindparam("questions", type_=JSONB),
    bindparam("answers", type_=JSONB),
    bindparam("content", type_=JSONB),
)

RELEASE = text(
    """
    UPDATE outbox SET held = false, created_at = now() WHERE workflow_id = :id AND held
    RETURNING id, workflow_id, subject, msg_id, headers, payload
    """
)

REOPEN = text(
    """
    WITH moved AS (
        UPDATE workflows SET deadline = :deadline, arguments = :arguments WHERE id = :id RETURNING id
    )
    INSERT INTO outbox (workflow_id, subject, msg_id, headers, payload, held)
    SELECT id, :subject, :msg_id, :headers, :payload, false FROM moved
    RETURNING id
    """
).bindparams(
    bindparam("arguments", type_=JSONB),
    bindparam("headers", type_=JSONB),
    bindparam("payload", type_=LargeBinary),
)

DROP_HELD = text("DELETE FROM outbox WHERE workflow_id = :id AND held")
"""A held command whose workflow ended before it was approved (denied, cancelled, timed out): never sent."""

# The fold's fast path, in one statement (one round trip, one commit): the event is recorded and the state
# written only if the workflow is still at the version its state was read at (the row locked meanwhile) and the
# event's key is new; otherwise nothing is written and the fold takes the locked path (`_transition_in`).
FOLD_AT_VERSION = """
    WITH cur AS (
        SELECT id FROM workflows WHERE id = $1 AND version = $2 FOR UPDATE
    ), ev AS (
        INSERT INTO workflow_events (workflow_id, event_key, kind, status, data, note, at)
        SELECT id, $3::text, $4::text, $5::text, $6::jsonb, $7::text, $8::timestamptz FROM cur
        ON CONFLICT (workflow_id, event_key) DO NOTHING
        RETURNING workflow_id
    ), up AS (
        UPDATE workflows w SET status = $5::text, attempt = $9, last_seq = $10, progress = $11, progress_total = $12,
            progress_message = $13, result = $14::jsonb, error = $15::jsonb, version = $16,
            questions = $17::jsonb, answers = $18::jsonb, content = $19::jsonb, updated_at = now()
        FROM ev WHERE w.id = ev.workflow_id
        RETURNING w.id
    )
    SELECT pg_notify($20, $21) FROM up
"""
# Several workflows' folds in one statement (one commit): each written only if its row is still at the version its
# state was decided on and its event's key is new; the rows are locked in id order (two gateways never deadlock on
# each other's batches). What it did not write, the caller folds alone. The batch is one JSON parameter.
FOLD_MANY = """
    WITH input AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
            id text, at_version int, key text, kind text, status text, data jsonb, note text, at timestamptz,
            attempt int, last_seq int, progress float8, total float8, message text, result jsonb, error jsonb,
            version int, questions jsonb, answers jsonb, content jsonb, change text)
    ), cur AS (
        SELECT w.id FROM workflows w JOIN input i ON w.id = i.id AND w.version = i.at_version
        ORDER BY w.id FOR UPDATE OF w
    ), ev AS (
        INSERT INTO workflow_events (workflow_id, event_key, kind, status, data, note, at)
        SELECT i.id, i.key, i.kind, i.status, i.data, i.note, i.at FROM input i JOIN cur ON cur.id = i.id
        ON CONFLICT (workflow_id, event_key) DO NOTHING
        RETURNING workflow_id
    ), up AS (
        UPDATE workflows w SET status = i.status, attempt = i.attempt, last_seq = i.last_seq, progress = i.progress,
            progress_total = i.total, progress_message = i.message, result = i.result, error = i.error,
            version = i.version, questions = i.questions, answers = i.answers, content = i.content,
            updated_at = now()
        FROM input i JOIN ev ON ev.workflow_id = i.id
        WHERE w.id = i.id
        RETURNING w.id, i.change
    )
    SELECT id, pg_notify($2, change) FROM up
"""
STATES_OF = (
    "SELECT id, tool, status, attempt, last_seq, progress, progress_total, progress_message, result, error, version, "
    "questions, answers, content FROM workflows WHERE id = ANY($1::text[])"
)
STATE_OF = (
    "SELECT tool, status, attempt, last_seq, progress, progress_total, progress_message, result, error, version, "
    "questions, answers, content FROM workflows WHERE id = $1"
)

CHANGES_CHANNEL = "mcpgw_changes"
NOTIFY_LIMIT = 7_500  # PostgreSQL's payload limit is 8000 bytes

DEAD_LETTER = text(
    "INSERT INTO dead_letters (source, subject, workflow_id, reason, headers, head, size, delivered) "
    "VALUES (:source, :subject, :workflow_id, :reason, :headers, :head, :size, :delivered) RETURNING id"
).bindparams(bindparam("headers", type_=JSONB), bindparam("head", type_=LargeBinary))
DEAD_LETTERS = text(
    "SELECT * FROM dead_letters WHERE CAST(:letter AS bigint) IS NULL OR id = :letter ORDER BY id DESC LIMIT :limit"
)
COUNTS = text(
    f"""
    SELECT tool, status, count(*) AS n FROM workflows
    WHERE (NOT :open_only OR status NOT IN ({", ".join(repr(s.value) for s in sorted(TERMINAL))}))
      AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since)
    GROUP BY tool, status
    """
)
OUTBOX_DEPTH = text(
    "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS oldest FROM outbox WHERE NOT held"
)
OVERDUE = text(
    """
    SELECT id FROM workflows
    WHERE deadline < now() AND status NOT IN ('completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered')
    ORDER BY deadline LIMIT :limit
    """
)

COLUMNS = (
    "id, tool, tool_version, arguments, caller, request_id, trace_id, created_at, updated_at, deadline, "
    "status, attempt, last_seq, progress, progress_total, progress_message, result, error, version, questions, "
    "answers, content"
)
