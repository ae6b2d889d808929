"""The bus contract (version 2): subjects, envelopes, headers and event kinds, shared by gateway and workers.

This package is the whole of what a worker needs to know; the language-neutral text is `docs/bus-contract.md`.
It imports nothing from the gateway.
"""

from mcp_gateway_worker.contract import _content as content
from mcp_gateway_worker.contract._envelopes import (
    CONTRACT_VERSION,
    MAX_DEPTH,
    SYSTEM_FAILURES,
    Caller,
    Cancel,
    ClientAbility,
    Command,
    ContractError,
    ErrorInfo,
    Event,
    EventKind,
    InputAnswer,
    InputRequest,
    ResourceRead,
    ResourceReply,
    RetryOn,
    RetryPolicy,
    decode_answer,
    decode_cancel,
    decode_command,
    decode_event,
    decode_resource_read,
    decode_resource_reply,
    encode,
    json_depth,
)
from mcp_gateway_worker.contract._streams import ensure_streams, stream_configs
from mcp_gateway_worker.contract._subjects import Headers, Subjects, subject_matches, worker_durable

__all__ = [
    "CONTRACT_VERSION",
    "MAX_DEPTH",
    "SYSTEM_FAILURES",
    "Caller",
    "Cancel",
    "ClientAbility",
    "Command",
    "ContractError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "Headers",
    "InputAnswer",
    "InputRequest",
    "ResourceRead",
    "ResourceReply",
    "RetryOn",
    "RetryPolicy",
    "Subjects",
    "content",
    "decode_answer",
    "decode_cancel",
    "decode_command",
    "decode_event",
    "decode_resource_read",
    "decode_resource_reply",
    "encode",
    "ensure_streams",
    "json_depth",
    "stream_configs",
    "subject_matches",
    "worker_durable",
]
