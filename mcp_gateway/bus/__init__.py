"""The bus adapter: the core's `Bus` port on NATS JetStream (one implementation)."""

from mcp_gateway.bus._memory import InMemoryBus, MemoryDelivery
from mcp_gateway.bus._nats import NatsBus, NatsDelivery

__all__ = ["InMemoryBus", "MemoryDelivery", "NatsBus", "NatsDelivery"]
