"""Reading resources from config: static ones from the registry, template URIs from a worker over the bus."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_gateway_worker.contract import Caller, ContractError, ResourceRead, Subjects, decode_resource_reply, encode

from mcp_gateway.core.ports import Bus
from mcp_gateway.errors import BusError, GatewayError
from mcp_gateway.registry import Registry

__all__ = ["ResourceNotFound", "ResourceReader", "ResourceUnavailable"]


class ResourceNotFound(GatewayError):
    pass


class ResourceUnavailable(GatewayError):
    """The worker behind a resource template did not answer, or answered wrongly."""


class ResourceReader:
    def __init__(self, registry: Callable[[], Registry], bus: Bus, subjects: Subjects) -> None:
        self._registry = registry
        self._bus = bus
        self._subjects = subjects

    def known(self, uri: str) -> bool:
        return self.scopes_of(uri) is not None

    def scopes_of(self, uri: str) -> list[str] | None:
        """The scopes a reader of `uri` needs (None: config declares no such URI)."""
        registry = self._registry()
        static = registry.resources.get(uri)
        if static is not None:
            return static.config.scopes
        found = registry.template_for(uri)
        return found[0].config.scopes if found is not None else None

    async def read(self, uri: str, caller: Caller) -> list[dict[str, Any]] | None:
        """The contents of `uri` (`{uri, mimeType, text | blob}` each), or None when config declares no such URI."""
        registry = self._registry()
        static = registry.resources.get(uri)
        if static is not None:
            return [c.model_dump(by_alias=True, exclude_none=True) for c in static.contents().contents]
        found = registry.template_for(uri)
        if found is None:
            return None
        template, variables = found
        request = ResourceRead(uri=uri, variables=variables, caller=caller)
        subject = self._subjects.resource(template.config.subject)
        try:
            reply = decode_resource_reply(await self._bus.request(subject, encode(request), template.config.timeout))
        except (BusError, ContractError) as exc:
            raise ResourceUnavailable(f"reading {uri!r}: {exc}") from exc
        if reply.error is not None:
            if reply.error.code == "not_found":
                raise ResourceNotFound(f"{uri!r}: {reply.error.message}")
            raise ResourceUnavailable(f"reading {uri!r} failed ({reply.error.code}): {reply.error.message}")
        return reply.contents or []
