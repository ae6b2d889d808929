"""`Pull` (mcp_gateway_worker/_pull.py): a pull consumer's messages through one open request per batch, against
the real JetStream: as they come, with far fewer requests than messages; asked again when a request expires, is
used up, or is lost to a reconnect; what a stopped pull held is redelivered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

import nats
import pytest
from mcp_gateway_worker._pull import Pull
from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from tests.conftest import Env


@pytest.fixture
async def stream(env: Env) -> AsyncGenerator[tuple[Client, JetStreamContext, str]]:
    nc = await nats.connect(env.nats_url)
    js = nc.jetstream()
    name = "PULL_" + uuid.uuid4().hex[:8].upper()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    try:
        yield nc, js, name
    finally:
        await js.delete_stream(name)
        await nc.close()


async def consumer(js: JetStreamContext, stream: str, ack_wait: float = 30.0) -> str:
    durable = "c" + uuid.uuid4().hex[:8]
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait)
    await js.add_consumer(stream, config)
    return durable


async def test_messages_come_as_they_are_stored_through_one_request(
    stream: tuple[Client, JetStreamContext, str],
) -> None:
    nc, js, name = stream
    durable = await consumer(js, name)
    async with Pull(nc, name, durable) as pull:
        assert await pull.fetch(8, max_wait=0.2) == []  # nothing yet: it waited and came back empty
        got: list[bytes] = []
        for i in range(20):  # one at a time, as at light load: each is taken as it comes
            await js.publish(f"{name.lower()}.x", str(i).encode())
            msgs = await pull.fetch(8, max_wait=5)
            assert msgs, f"message {i} did not come"
            for msg in msgs:
                got.append(msg.data)
                await msg.ack()
                assert msg.metadata.stream == name  # nats-py's own Msg: ack and metadata work
        assert got == [str(i).encode() for i in range(20)]
        assert pull.requests <= 4  # one request per batch of 8 (fetch asked once per message)
        for i in range(30):  # a burst is taken in batches of at most the size asked for
            await js.publish(f"{name.lower()}.y", str(i).encode())
        burst: list[int] = []
        while len(burst) < 30:
            msgs = await pull.fetch(8, max_wait=5)
            assert msgs and len(msgs) <= 8
            burst.extend(int(m.data) for m in msgs)
            await asyncio.gather(*(m.ack() for m in msgs))
        assert burst == list(range(30))


async def test_a_request_that_expires_or_is_lost_is_asked_again(stream: tuple[Client, JetStreamContext, str]) -> None:
    nc, js, name = stream
    durable = await consumer(js, name)
    async with Pull(nc, name, durable, expires=0.3) as pull:
        assert await pull.fetch(4, max_wait=1.0) == []  # its request expired meanwhile (the server said 408)
        asked = pull.requests
        assert asked >= 2
        await js.publish(f"{name.lower()}.x", b"after expiry")
        assert [m.data for m in await pull.fetch(4, max_wait=5)] == [b"after expiry"]
        before = pull.requests
        pull.reset()  # as after a reconnect: the next fetch asks at once, not when the lost request would expire
        assert await pull.fetch(4, max_wait=0.1) == []
        assert pull.requests == before + 1


async def test_what_a_stopped_pull_was_sent_is_delivered_again(stream: tuple[Client, JetStreamContext, str]) -> None:
    nc, js, name = stream
    durable = await consumer(js, name, ack_wait=1.0)
    async with Pull(nc, name, durable) as pull:
        await js.publish(f"{name.lower()}.x", b"one")
        (first,) = await pull.fetch(1, max_wait=5)  # taken, never acked: its handler was stopped
        assert first.data == b"one"
    async with Pull(nc, name, durable) as again:
        (redelivered,) = await again.fetch(1, max_wait=10)
        assert redelivered.data == b"one" and redelivered.metadata.num_delivered == 2
        await redelivered.ack()


async def test_a_pull_not_open_refuses_to_fetch(stream: tuple[Client, JetStreamContext, str]) -> None:
    """Never an empty answer that a fetch loop would spin on."""
    nc, js, name = stream
    pull = Pull(nc, name, await consumer(js, name))
    with pytest.raises(ConnectionClosedError):
        await pull.fetch(1, max_wait=1)
    async with pull:
        assert await pull.fetch(1, max_wait=0.05) == []
    with pytest.raises(ConnectionClosedError):
        await pull.fetch(1, max_wait=1)


async def test_a_refused_request_is_not_asked_again_at_once(stream: tuple[Client, JetStreamContext, str]) -> None:
    """The consumer deleted under an open request: the server ends it (409) and refuses the next; the pull asks
    again after a pause, never in a loop as fast as the refusals come."""
    nc, js, name = stream
    durable = await consumer(js, name)
    async with Pull(nc, name, durable) as pull:
        assert await pull.fetch(4, max_wait=0.2) == []
        await js.delete_consumer(name, durable)
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5
        while loop.time() < until:
            assert await pull.fetch(4, max_wait=until - loop.time()) == []
        assert pull.requests <= 1 + 3, pull.requests  # at most one a PAUSE (1 s) after the refusals


async def test_a_message_not_from_the_consumer_is_dropped(stream: tuple[Client, JetStreamContext, str]) -> None:
    """Someone publishing to the pull's inbox (its subject is no secret to a peer on the same account) hands it
    nothing: only messages JetStream delivered, with their ack subject, are taken; the request's count holds."""
    nc, js, name = stream
    durable = await consumer(js, name)
    async with Pull(nc, name, durable) as pull:
        assert await pull.fetch(2, max_wait=0.1) == []
        inbox = pull._inbox  # pyright: ignore[reportPrivateUsage]
        await nc.publish(inbox, b"forged", reply="$JS.API.STREAM.DELETE." + name)
        await nc.publish(inbox, b"no reply")
        await js.publish(f"{name.lower()}.x", b"real")
        msgs = await pull.fetch(2, max_wait=5)
        assert [m.data for m in msgs] == [b"real"]
        await msgs[0].ack()
        assert await pull.fetch(2, max_wait=0.3) == []
        assert pull.requests == 1  # the forged ones did not use up the request
