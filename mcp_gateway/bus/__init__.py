"""The bus adapter: the core's `Bus` port on NATS JetStream (one implementation)."""

from mcp_gateway.bus._nats import NatsBus, NatsDelivery

__all__ = ["NatsBus", "NatsDelivery"]
