"""Example workers for the tools in `config/tools/`: the demo and the tests run them.

`support`: a customer-support domain (classify a ticket, look up an order, refund it with progress).
`diagnostics`: an echo tool, for checking the whole path and for the benchmark, and `slow_progress` (a slow
call reporting progress at a steady pace) for its scale run.
`conformance`: the fixtures of the official MCP conformance suite (config: `config/conformance/`).
"""

from mcp_gateway_worker import Worker

from mcp_gateway.examples.conformance import worker as conformance_worker
from mcp_gateway.examples.diagnostics import slow_worker as diagnostics_slow_worker
from mcp_gateway.examples.diagnostics import worker as diagnostics_worker
from mcp_gateway.examples.support import worker as support_worker

__all__ = ["all_workers", "conformance_worker", "diagnostics_slow_worker", "diagnostics_worker", "support_worker"]


def all_workers() -> list[Worker]:
    return [support_worker, diagnostics_worker, diagnostics_slow_worker, conformance_worker]
