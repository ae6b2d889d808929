"""Who is asking, and what they may use.

A `Viewer` is the principal of a request: the authenticated subject of an HTTP token, the local principal of
stdio (from settings), or an admin. A tool, prompt or resource may require scopes; a principal may use it when
it holds every one of them, or holds `*` (every scope), or is an admin. What a principal may not use is not
listed to it, and asking for it gets the same answer as asking for something that does not exist, so names
cannot be probed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ADMIN", "ALL_SCOPES", "Viewer"]

ALL_SCOPES = "*"
"""The scope that stands for every scope (the local principal's default)."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: a caller's subject and scopes; an admin sees and acts on every workflow."""

    subject: str
    admin: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset[str])

    def may(self, required: Iterable[str]) -> bool:
        """Whether this principal may see and use something that requires the `required` scopes."""
        return self.admin or ALL_SCOPES in self.scopes or all(scope in self.scopes for scope in required)


ADMIN = Viewer("admin", admin=True)
"""The command line's principal (it reaches PostgreSQL directly, so it is an admin by construction)."""
