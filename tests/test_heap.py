"""The collector settings of a serving process (`settle_heap`): what starting left behind is frozen, and cycles
made afterwards are still collected (only less often)."""

from __future__ import annotations

import subprocess
import sys


def test_a_settled_heap_still_collects_new_cycles() -> None:
    script = (
        "import gc, weakref\n"
        "from mcp_gateway_worker._heap import YOUNG_THRESHOLD, settle_heap\n"
        "import mcp_gateway.app\n"  # a gateway's imports: what a started process holds
        "settle_heap()\n"
        "assert gc.isenabled()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "assert gc.get_threshold()[0] == YOUNG_THRESHOLD\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "gone = weakref.ref(a); del a, b\n"
        "kept = [[] for _ in range(YOUNG_THRESHOLD * 2)]\n"  # allocations alone (no explicit collect) free it
        "assert gone() is None, 'a cycle made after settling was never collected'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
