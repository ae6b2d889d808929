"""Resources from config: static ones (their text or bytes in the file) and templates whose reads are answered
by a worker, through a request on the bus (subject `<prefix>.res.<subject>`, see docs/bus-contract.md)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_gateway.registry._scopes import Scope

__all__ = ["Resource", "ResourceConfig", "Template", "TemplateConfig"]

SUBJECT = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceConfig(_Strict):
    uri: str = Field(min_length=3, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:")
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str = "text/plain"
    text: str | None = None
    blob: str | None = Field(default=None, description="base64")
    scopes: list[Scope] = Field(
        default_factory=list[Scope],
        description="scopes a caller needs, all of them, to see and use this resource (none: every caller)",
    )

    @model_validator(mode="after")
    def _one_body(self) -> ResourceConfig:
        if (self.text is None) == (self.blob is None):
            raise ValueError("give exactly one of 'text' or 'blob' (base64)")
        if self.blob is not None:
            try:
                base64.b64decode(self.blob, validate=True)
            except binascii.Error:
                raise ValueError("'blob' is not valid base64") from None
        return self


class TemplateConfig(_Strict):
    uri_template: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    subject: str = Field(pattern=SUBJECT, description="reads are requests to '<prefix>.res.<subject>'")
    timeout: float = Field(default=5.0, gt=0, le=60)
    scopes: list[Scope] = Field(
        default_factory=list[Scope],
        description="scopes a caller needs, all of them, to see and use this resource template (none: every caller)",
    )

    @field_validator("uri_template")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            UriTemplate.parse(value)
        except InvalidUriTemplate as exc:
            raise ValueError(f"not a URI template (RFC 6570): {exc}") from None
        return value


@dataclass(frozen=True, slots=True)
class Resource:
    config: ResourceConfig
    listing: types.Resource

    @classmethod
    def of(cls, config: ResourceConfig) -> Resource:
        listing = types.Resource(
            uri=config.uri,
            name=config.name,
            title=config.title,
            description=config.description,
            mime_type=config.mime_type,
        )
        return cls(config, listing)

    def contents(self) -> types.ReadResourceResult:
        c = self.config
        body: types.TextResourceContents | types.BlobResourceContents
        if c.text is not None:
            body = types.TextResourceContents(uri=c.uri, mime_type=c.mime_type, text=c.text)
        else:
            body = types.BlobResourceContents(uri=c.uri, mime_type=c.mime_type, blob=c.blob or "")
        return types.ReadResourceResult(contents=[body])


@dataclass(frozen=True, slots=True)
class Template:
    config: TemplateConfig
    template: UriTemplate
    listing: types.ResourceTemplate

    @classmethod
    def of(cls, config: TemplateConfig) -> Template:
        listing = types.ResourceTemplate(
            uri_template=config.uri_template,
            name=config.name,
            title=config.title,
            description=config.description,
            mime_type=config.mime_type,
        )
        return cls(config, UriTemplate.parse(config.uri_template), listing)

    def match(self, uri: str) -> dict[str, Any] | None:
        return self.template.match(uri)
