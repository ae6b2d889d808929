"""The garbage collector of a long-running process (a gateway, a worker), set for serving once it has started.

Measured on the gateway under load (`tools/bench.py`, c=32 on 2 cores), CPython's default collector took about a
fifth of the process's CPU: every full collection walked the 170,000 objects that importing and starting left
behind (the SDK's and pydantic's schemas, the config, the routes), about 200 ms each, several times a second of
load, and each such pause reached every call in flight (the p99). Those objects live as long as the process.

`settle_heap` is called once, when the process has started and before it serves: one full collection, then
`gc.freeze()` moves what survived out of the collector's sight (never freed, never walked again: they live as
long as the process anyway), and the young generation is collected every `YOUNG_THRESHOLD` allocations instead of
700, so that short-lived cycles (a cancelled task's exception and its frames) are gathered in fewer, larger
passes. Reference counting frees everything else at once, as before; cycles are still collected.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

YOUNG_THRESHOLD: Final = 10_000
"""Allocations (net of deallocations) of container objects between two collections of the young generation
(CPython's default 700; 3.12 raised it to 2,000). The older generations keep their default ratios."""


def settle_heap() -> None:
    """Collect once, freeze what survived, and collect the young generation less often (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
