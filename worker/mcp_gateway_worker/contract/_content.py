"""Content blocks a worker may return besides (or instead of) its structured result: MCP's wire form.

The gateway checks each block against MCP's content types; a block that is not one fails the workflow with
code `invalid_content`. These helpers build them without depending on the MCP SDK.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["audio", "blob_contents", "embedded", "image", "resource_link", "text", "text_contents"]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(data: bytes, mime_type: str) -> dict[str, Any]:
    return {"type": "image", "data": base64.b64encode(data).decode(), "mimeType": mime_type}


def audio(data: bytes, mime_type: str) -> dict[str, Any]:
    return {"type": "audio", "data": base64.b64encode(data).decode(), "mimeType": mime_type}


def embedded(uri: str, *, text: str | None = None, blob: bytes | None = None, mime_type: str) -> dict[str, Any]:
    """An embedded resource: its text, or its bytes (`blob`)."""
    resource: dict[str, Any] = {"uri": uri, "mimeType": mime_type}
    if blob is not None:
        resource["blob"] = base64.b64encode(blob).decode()
    else:
        resource["text"] = text or ""
    return {"type": "resource", "resource": resource}


def resource_link(uri: str, name: str, *, mime_type: str | None = None) -> dict[str, Any]:
    link: dict[str, Any] = {"type": "resource_link", "uri": uri, "name": name}
    if mime_type:
        link["mimeType"] = mime_type
    return link


def text_contents(uri: str, text: str, mime_type: str = "text/plain") -> dict[str, Any]:
    """The contents of a resource read (text)."""
    return {"uri": uri, "mimeType": mime_type, "text": text}


def blob_contents(uri: str, data: bytes, mime_type: str) -> dict[str, Any]:
    """The contents of a resource read (bytes)."""
    return {"uri": uri, "mimeType": mime_type, "blob": base64.b64encode(data).decode()}
