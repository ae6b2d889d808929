"""The benchmark's own parts: the example tool its scale run holds open (`slow_progress`, through a real gateway),
and the client's parsing of what the gateway streams (SSE cut anywhere, the priming event of a resumable stream)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mcp_gateway_worker.contract import Caller

from mcp_gateway.app import Gateway
from mcp_gateway.core.service import OutcomeKind, Progress

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))  # the tools import each other by name

from tools import _bench_scale, _bench_stream, _loadgen

CALLER = Caller(subject="bencher", request_id="1")
PRIMING = b"id: 1\r\ndata: \r\nretry: 1000\r\n\r\n"
"""What the SDK's legacy transport sends first on a stream it can resume (an event store): an id, empty data."""


async def test_slow_progress_reports_each_step_stamped_with_when_the_worker_sent_it(gateway: Gateway) -> None:
    seen: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        seen.append(p)

    before = time.time()
    outcome = await gateway.service.call(
        "slow_progress", {"seconds": 0.3, "interval": 0.1}, caller=CALLER, on_progress=on_progress
    )
    assert outcome.kind is OutcomeKind.COMPLETED, outcome
    assert outcome.result == {"steps": 3, "workflow_id": outcome.workflow_id}
    assert [p.progress for p in seen] == sorted(p.progress for p in seen) and seen[-1].progress == 3
    assert all(p.total == 3 and p.message is not None and p.message.startswith("t=") for p in seen), seen
    stamps = [float(p.message[2:]) for p in seen if p.message is not None]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= time.time()


async def test_slow_progress_without_an_interval_only_waits_and_refuses_a_tiny_one(gateway: Gateway) -> None:
    quiet = await gateway.service.call("slow_progress", {"seconds": 0, "interval": 0}, caller=CALLER)
    assert quiet.kind is OutcomeKind.COMPLETED and quiet.result is not None and quiet.result["steps"] == 0, quiet
    tiny = await gateway.service.call("slow_progress", {"seconds": 1, "interval": 0.001}, caller=CALLER)
    assert tiny.kind is OutcomeKind.INVALID_ARGUMENTS, tiny


def test_the_sse_decoder_gives_each_event_once_however_the_bytes_are_cut() -> None:
    stream = PRIMING + b'event: message\r\ndata: {"a":1}\r\n\r\n: ping\r\n\r\ndata: x\ndata: y\n\n'
    for cut in (1, 2, 7, len(stream)):
        decoder = _bench_stream.SseDecoder()
        events = [e for i in range(0, len(stream), cut) for e in decoder.feed(stream[i : i + cut])]
        assert events == [b"", b'{"a":1}', b"x\ny"], cut


def test_the_load_client_skips_the_priming_event_of_a_resumable_stream() -> None:
    body = PRIMING + b'id: 2\r\nevent: message\r\ndata: {"jsonrpc":"2.0","id":7,"result":{}}\r\n\r\n'
    response = _loadgen.Response(200, {"content-type": "text/event-stream"}, body)
    assert _loadgen.find_reply(response, 7) == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_max_open_counts_the_calls_open_at_one_moment() -> None:
    assert _bench_scale.max_open([[0, 10], [1, 2], [2, 3], [9, 11], [12, 13]]) == 2
    assert _bench_scale.max_open([]) == 0
