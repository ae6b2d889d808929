"""The JetStream streams of the contract. The gateway owns their settings (it creates or updates them); a worker
that connects first creates what is missing with the same settings, and never changes a stream that exists."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from mcp_gateway_worker.contract._envelopes import CONTRACT_VERSION
from mcp_gateway_worker.contract._subjects import Subjects

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
            (
                subjects.command_stream,
                subjects.all_commands,
                f"mcp-gateway commands to workers (contract v{CONTRACT_VERSION})",
            ),
            (
                subjects.event_stream,
                subjects.all_events,
                f"worker events back to mcp-gateway (contract v{CONTRACT_VERSION})",
            ),
            (
                subjects.dead_letter_stream,
                subjects.all_dead_letters,
                f"workflows mcp-gateway gave up on (contract v{CONTRACT_VERSION})",
            ),
        )
    ]


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, *, duplicate_window: float = 3_600.0, update: bool = False
) -> None:
    """Create the streams that are missing; with `update` (the gateway, which owns them), also bring existing
    ones to this configuration. Workers leave existing streams as they are."""
    for config in stream_configs(subjects, duplicate_window=duplicate_window):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:  # created meanwhile by another process (gateway or worker): theirs stands
                await js.stream_info(config.name)
        else:
            if update:
                await js.update_stream(config)
