"""The scope names a tool, prompt or resource may require (RFC 6749 scope tokens)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

__all__ = ["Scope"]

Scope = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")]
"""An OAuth scope token: 1-128 visible ASCII characters other than `"` and `\\` (no spaces)."""
