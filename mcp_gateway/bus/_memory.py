"""The core's `Bus` port in memory, with JetStream's semantics the core relies on: de-duplication by
`Nats-Msg-Id`, explicit ack, NAK with a delay (redelivered, its delivery count raised), TERM. For fast behaviour
tests of the core; `serve` registers an in-process worker for a tool subject."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mcp_gateway_worker.contract import Cancel, Command, Headers, InputAnswer, Subjects, decode_command

from mcp_gateway.core.ports import OutboxMessage
from mcp_gateway.errors import BusError

__all__ = ["InMemoryBus", "MemoryDelivery"]

Handler = Callable[[Command, Callable[[bytes, str], Awaitable[None]]], Awaitable[None]]
"""An in-process worker: gets a command and a way to publish one event (body, Nats-Msg-Id)."""


@dataclass
class MemoryDelivery:
    """One event message, settled as JetStream would."""

    data: bytes
    headers: dict[str, str]
    subject: str
    bus: InMemoryBus
    attempts: int = 1
    settled: list[str] = field(default_factory=list[str])

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")
        self.bus.redeliver(self, delay or 0.0)

    async def term(self) -> None:
        self.settled.append("term")


class InMemoryBus:
    def __init__(self, subjects: Subjects, *, max_payload: int = 1024 * 1024) -> None:
        self._subjects = subjects
        self._max_payload = max_payload
        self._events: asyncio.Queue[MemoryDelivery] = asyncio.Queue()
        self._seen: set[str] = set()
        self._workers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.commands: list[OutboxMessage] = []
        self.cancels: list[Cancel] = []
        self.answers: list[InputAnswer] = []
        self.dead_letters: list[tuple[str, bytes]] = []

    async def __aenter__(self) -> InMemoryBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def subjects(self) -> Subjects:
        return self._subjects

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def reconnected_for(self) -> float:
        return float("inf")

    def serve(self, tool_subject: str, handler: Handler) -> None:
        """Run `handler` for each command on the tool subject (an in-process worker)."""
        self._workers[self._subjects.command(tool_subject)] = handler

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish_command(self, message: OutboxMessage) -> None:
        if len(message.payload) > self._max_payload:
            raise BusError(f"publishing to {message.subject} failed: the message exceeds max_payload")
        if message.msg_id in self._seen:  # JetStream's de-duplication
            return
        self._seen.add(message.msg_id)
        self.commands.append(message)
        handler = self._workers.get(message.subject)
        if handler is not None:
            command = decode_command(message.payload)
            self._spawn(handler(command, self._emitter(command.reply_subject)))

    def _emitter(self, reply_subject: str) -> Callable[[bytes, str], Awaitable[None]]:
        """What an in-process worker publishes with: its command's `reply_subject`, as a worker on NATS does."""

        async def emit(body: bytes, msg_id: str) -> None:
            await self.publish_event(reply_subject, body, {Headers.MSG_ID: msg_id})

        return emit

    async def publish_event(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        """What a worker publishes (de-duplicated by its Nats-Msg-Id, as JetStream does)."""
        msg_id = (headers or {}).get(Headers.MSG_ID)
        if msg_id is not None:
            if f"evt:{msg_id}" in self._seen:
                return
            self._seen.add(f"evt:{msg_id}")
        self._events.put_nowait(MemoryDelivery(body, dict(headers or {}), subject, self))

    def redeliver(self, delivery: MemoryDelivery, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            delivery.attempts += 1
            self._events.put_nowait(delivery)

        self._spawn(later())

    async def fetch_events(self, batch: int, max_wait: float) -> Sequence[MemoryDelivery]:
        try:
            first = await asyncio.wait_for(self._events.get(), max_wait)
        except TimeoutError:
            return []
        taken = [first]
        while len(taken) < batch and not self._events.empty():
            taken.append(self._events.get_nowait())
        return taken

    async def publish_cancel(
        self, workflow_id: str, reason: Literal["cancelled", "timed_out"], attempt: int | None = None
    ) -> None:
        self.cancels.append(Cancel(workflow_id=workflow_id, reason=reason, attempt=attempt))

    async def publish_answer(self, answer: InputAnswer) -> None:
        self.answers.append(answer)

    async def request(self, subject: str, payload: bytes, max_wait: float) -> bytes:
        raise BusError(f"no worker answers on {subject}")

    async def listened_subjects(self) -> list[str]:
        return list(self._workers)

    async def publish_dead_letter(self, workflow_id: str, body: bytes) -> None:
        self.dead_letters.append((workflow_id, body))
