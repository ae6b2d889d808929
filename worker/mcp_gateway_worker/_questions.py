"""A command's questions, worker side: those asked at the same moment travel together, answers come by id.

    name, greeting = await asyncio.gather(ctx.ask("Your name?", schema), ctx.sample(messages, max_tokens=50))

Both questions leave in one `input_required` event, so the client sees them in one round (one input-required
result, or one task status); each answer wakes its own `ask` as it arrives. Answers are heard on
`<prefix>.ctl.input.<workflow id>` from before the first question leaves until the command is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mcp_gateway_worker._credentials import PermissionDenied, Violations
from mcp_gateway_worker.contract import Command, ContractError, EventKind, InputAnswer, InputRequest, decode_answer

__all__ = ["Questions"]

log = structlog.get_logger(__name__)

Emit = Callable[..., Awaitable[object]]


class Questions:
    def __init__(
        self, nc: NatsClient, answer_subject: str, command: Command, emit: Emit, violations: Violations | None = None
    ) -> None:
        self._nc = nc
        self._violations = violations
        self._subject = answer_subject
        self._command = command
        self._emit = emit
        self._waiting: dict[str, asyncio.Future[InputAnswer]] = {}
        self._batch: list[InputRequest] = []
        self._sending: asyncio.Task[None] | None = None
        self._sent: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self._closed = False
        self._unwatch: Callable[[], None] | None = None

    async def ask(self, request: InputRequest) -> InputAnswer:
        """Ask (together with any question asked at the same moment) and wait for this one's answer; at the
        command's deadline the answer is `cancel`."""
        if request.id in self._waiting:
            raise ValueError(f"question {request.id!r} is already being asked; give each question its own key")
        answered: asyncio.Future[InputAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = answered
        self._batch.append(request)
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
            self._sent.add(self._sending)
            self._sending.add_done_callback(self._sent.discard)
        try:
            wait = (self._command.deadline - datetime.now(UTC)).total_seconds()
            return await asyncio.wait_for(answered, timeout=max(wait, 0.001))
        except TimeoutError:
            return InputAnswer(workflow_id=self._command.workflow_id, request_id=request.id, action="cancel")
        finally:
            self._waiting.pop(request.id, None)

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let the questions asked at the same moment join this one
        batch, self._batch, self._sending = self._batch, [], None
        batch = [r for r in batch if r.id in self._waiting]  # an ask cancelled meanwhile is not sent
        if not batch or self._closed:
            return
        try:
            if self._subscription is None:  # listen before asking, so no answer is missed
                mark = Violations.mark()
                if self._violations is not None:  # a refusal reported after the check below fails the asks too
                    self._unwatch = self._violations.watch(self._subject, self._refused)
                self._subscription = await self._nc.subscribe(self._subject, cb=self._on_answer)
                if self._violations is not None:
                    # A refused subscription is reported before the flush is answered (NATS away: go on unknowing).
                    with contextlib.suppress(Exception):
                        await self._nc.flush(timeout=2)
                    refused = self._violations.since(mark, [self._subject], "hear the answers", exact=True)
                    if refused is not None:
                        raise refused
            batch = [r for r in batch if not self._waiting[r.id].done()]  # refused meanwhile: not asked
            if batch:
                await self._emit(EventKind.INPUT_REQUIRED, requests=batch)
        except Exception as exc:  # the bus failed: each waiting ask raises it
            for request in batch:
                future = self._waiting.get(request.id)
                if future is not None and not future.done():
                    future.set_exception(exc)

    def _refused(self, denied: PermissionDenied) -> None:
        """NATS refused the answers' subscription: every waiting ask fails with it (none could be answered)."""
        error = PermissionDenied(denied.user, denied.operation, denied.subject, "hear the answers")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)

    async def _on_answer(self, msg: Msg) -> None:
        try:
            answer = decode_answer(msg.data)
        except ContractError as exc:
            log.warning("worker.bad_answer", error=str(exc))
            return
        future = self._waiting.get(answer.request_id)
        if future is not None and not future.done():
            future.set_result(answer)

    async def close(self) -> None:
        """The command is settled: stop listening, and send nothing more."""
        self._closed = True
        if self._unwatch is not None:
            self._unwatch()
        for sending in list(self._sent):
            sending.cancel()
        if self._sent:
            await asyncio.gather(*self._sent, return_exceptions=True)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
