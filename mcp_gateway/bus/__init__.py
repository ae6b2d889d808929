"""The gateway's side of NATS JetStream, behind one small interface (`Bus`) with one implementation."""

from mcp_gateway.bus._nats import Bus, Delivery, NatsBus

__all__ = ["Bus", "Delivery", "NatsBus"]
