"""The bus adapter: the core's `Bus` port on NATS JetStream (one implementation)."""

from mcp_gateway.bus._memory import InMemoryBus, MemoryDelivery
from mcp_gateway.bus._nats import ConsumerState, NatsBus, NatsDelivery, events_consumer_at

__all__ = ["ConsumerState", "InMemoryBus", "MemoryDelivery", "NatsBus", "NatsDelivery", "events_consumer_at"]
