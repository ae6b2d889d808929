"""The scale run's client (tools/bench.py --scale N): many long calls held open at once, each streaming progress.

tools/bench.py starts a few of these as `python tools/_bench_stream.py SPEC_JSON RESULT_PATH`; each opens its
share of the connections at `start_at` (one call per connection: connect, the handshake on 2025-11-25, then a
`tools/call` of `slow_progress`) and writes one JSON object (a StreamResult) to its file.

With `progress`, each call carries `params._meta.progressToken`; the server answers with an SSE stream
(2026-07-28: the POST's response turns into `text/event-stream` at the first notification; 2025-11-25: every
POST of a stateful session answers with one) carrying `notifications/progress`, then the reply. The worker's
progress message is `t=<its time.time() when it sent it>`: the progress latency is this process's `time.time()`
when the chunk holding the notification arrived, minus that (one machine, one clock). Without `progress`, no
token and no progress: the call waits silently (2026-07-28: a JSON reply at the end). A call counts as completed
if its reply is a result, not `isError`, whose `structuredContent.steps` says how many steps the worker sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from _loadgen import CallError, McpConnection, successful_result

__all__ = ["TOOL", "SseDecoder", "StreamResult", "StreamSpec", "run_streams"]

TOOL = "slow_progress"
MAX_ERROR_SAMPLES = 5
FD_HEADROOM = 64


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What one client process does. `start_at` is a `time.monotonic()` value (one clock for every process)."""

    host: str
    port: int
    wire: str
    calls: int
    first: int  # the index of its first call among all processes' (progress tokens are unique)
    start_at: float
    seconds: float
    interval: float
    progress: bool
    timeout: float  # for the whole call: connect, handshake, the stream to its end


@dataclass(slots=True)
class StreamResult:
    completed: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list[str])
    sse: int = 0  # replies that came as an SSE stream
    progress_sent: int = 0  # steps the completed calls' workers say they sent
    progress_received: int = 0
    progress_latency_ms: list[float] = field(default_factory=list[float])
    call_seconds: list[float] = field(default_factory=list[float])  # completed calls, request sent to reply read
    spans: list[list[float]] = field(default_factory=list[list[float]])  # every call: [started, ended], monotonic

    def add_error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES and what not in self.error_samples:
            self.error_samples.append(what)

    def merge(self, other: StreamResult) -> None:
        self.completed += other.completed
        self.sse += other.sse
        self.progress_sent += other.progress_sent
        self.progress_received += other.progress_received
        self.progress_latency_ms += other.progress_latency_ms
        self.call_seconds += other.call_seconds
        self.spans += other.spans
        self.errors += other.errors
        for sample in other.error_samples:
            if len(self.error_samples) < MAX_ERROR_SAMPLES and sample not in self.error_samples:
                self.error_samples.append(sample)


class SseDecoder:
    """Server-sent events from a byte stream cut anywhere: `feed` returns the `data` of each event completed
    (lines end in LF or CRLF; an event ends at a blank line; several `data:` lines join with LF)."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        events: list[bytes] = []
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for raw in lines:
            line = raw.removesuffix(b"\r")
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return events


def _steps(reply: dict[str, Any]) -> int:
    """The steps of a successful `slow_progress` reply, or CallError."""
    result = successful_result(reply)
    structured = result.get("structuredContent")
    steps = cast(dict[str, Any], structured).get("steps") if isinstance(structured, dict) else None
    if not isinstance(steps, int):
        raise CallError(f"no steps in the result: {json.dumps(result)[:160]}")
    return steps


async def _read_reply(conn: McpConnection, spec: StreamSpec, token: str, result: StreamResult) -> dict[str, Any]:
    """Send the call, read its answer to the end (timing each progress notification), return the reply."""
    arguments = {"seconds": spec.seconds, "interval": spec.interval if spec.progress else 0}
    meta = {"progressToken": token} if spec.progress else None
    status, headers, chunks = await conn.stream_call(1, TOOL, arguments, meta)
    if status != 200:
        body = b"".join([chunk async for chunk in chunks])
        raise CallError(f"HTTP {status}: {body[:160]!r}")
    if not headers.get("content-type", "").startswith("text/event-stream"):
        message: Any = json.loads(b"".join([chunk async for chunk in chunks]))
        return cast(dict[str, Any], message)
    result.sse += 1
    decoder, reply = SseDecoder(), None
    async for chunk in chunks:
        arrived = time.time()
        for data in decoder.feed(chunk):
            if not data.strip():
                continue  # the priming event of a resumable stream (2025-11-25 on the gateway): an id, no data
            try:
                message = cast(dict[str, Any], json.loads(data))
            except ValueError:
                raise CallError(f"an SSE event whose data is not JSON: {data[:120]!r}") from None
            if message.get("method") == "notifications/progress":
                params = cast(dict[str, Any], message.get("params") or {})
                if params.get("progressToken") != token:
                    raise CallError(f"progress for token {params.get('progressToken')!r}, expected {token!r}")
                result.progress_received += 1
                text = params.get("message")
                if isinstance(text, str) and text.startswith("t="):
                    result.progress_latency_ms.append((arrived - float(text[2:])) * 1000.0)
            elif message.get("id") == 1:
                reply = message
    if reply is None:
        raise CallError("the SSE stream ended without the reply")
    return reply


async def _one_call(spec: StreamSpec, index: int, result: StreamResult) -> None:
    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    started = time.monotonic()
    conn = McpConnection(spec.host, spec.port, spec.wire, "")
    try:
        async with asyncio.timeout(spec.timeout):
            await conn.open()
            sent = time.monotonic()
            steps = _steps(await _read_reply(conn, spec, f"p{spec.first + index}", result))
        result.completed += 1
        result.progress_sent += steps
        result.call_seconds.append(time.monotonic() - sent)
    except CallError as exc:
        result.add_error(str(exc))
    except TimeoutError:
        result.add_error(f"no reply within {spec.timeout:g} s")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        result.add_error(f"{type(exc).__name__}: {exc}")
    finally:
        result.spans.append([started, time.monotonic()])
        await conn.close()


async def run_streams(spec: StreamSpec) -> StreamResult:
    result = StreamResult()
    outcomes = await asyncio.gather(*(_one_call(spec, i, result) for i in range(spec.calls)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            result.add_error(f"call task failed: {type(outcome).__name__}: {outcome}")
    return result


def raise_fd_limit(needed: int) -> None:
    """Lift this process's open-file limit to what `needed` sockets take (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard)
            )


def main(argv: list[str]) -> int:
    """`python tools/_bench_stream.py SPEC_JSON RESULT_PATH`: run the calls on uvloop, write the StreamResult."""
    import uvloop

    spec = StreamSpec(**json.loads(argv[1]))
    raise_fd_limit(spec.calls)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run_streams(spec))
    Path(argv[2]).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
