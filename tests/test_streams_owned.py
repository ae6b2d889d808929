"""The gateway owns the streams' settings: a worker that connects after it (or first) never changes them."""

from __future__ import annotations

import nats
from mcp_gateway_worker.contract import Subjects

from mcp_gateway.app import open_gateway
from tests.conftest import Env
from tests.workers import worker as test_worker


async def test_a_worker_leaves_the_gateways_stream_settings_as_they_are(env: Env) -> None:
    subjects = Subjects(env.prefix)
    # The worker SDK would create missing streams with the contract's default window (3600 s).
    async with (
        open_gateway(env.settings(duplicate_window=120.0)),
        test_worker.with_prefix(env.prefix).connect(env.nats_url),
    ):
        nc = await nats.connect(env.nats_url)
        try:
            js = nc.jetstream()
            for name in (subjects.command_stream, subjects.event_stream, subjects.dead_letter_stream):
                info = await js.stream_info(name)
                assert info.config.duplicate_window == 120.0, name
        finally:
            await nc.close()
