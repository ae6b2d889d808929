"""The JetStream streams of the contract, created or updated by whoever connects first (gateway or worker)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from mcp_gateway.contract._subjects import Subjects

__all__ = ["ensure_streams", "stream_configs"]

DAY = 86_400.0


def stream_configs(
    subjects: Subjects, *, duplicate_window: float = 3_600.0, max_age: float = 7 * DAY
) -> list[StreamConfig]:
    """Commands and events: file storage, limits retention, de-duplication over `duplicate_window` seconds."""
    return [
        StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            duplicate_window=duplicate_window,
            description=description,
        )
        for name, subject, description in (
            (subjects.command_stream, subjects.all_commands, "mcp-gateway commands to workers (contract v1)"),
            (subjects.event_stream, subjects.all_events, "worker events back to mcp-gateway (contract v1)"),
        )
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects, *, duplicate_window: float = 3_600.0) -> None:
    """Create the streams, or update them to this configuration when they exist."""
    for config in stream_configs(subjects, duplicate_window=duplicate_window):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
