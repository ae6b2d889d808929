"""The one error root of the gateway, and the errors that carry where a bad value came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BusError",
    "ConfigError",
    "ConfigProblem",
    "EmbeddedServerError",
    "GatewayError",
    "StoreError",
    "StoreRejected",
]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a config file: which file, which tool, which key path, what was expected."""

    file: str
    message: str
    tool: str | None = None
    key_path: str | None = None
    kind: str = "tool"
    """What `tool` names: a tool, or a prompt."""

    def __str__(self) -> str:
        where = self.file
        if self.tool:
            where += f": {self.kind} {self.tool!r}"
        if self.key_path:
            where += f": {self.key_path}"
        return f"{where}: {self.message}"


class ConfigError(GatewayError):
    """Settings or the tool registry are invalid; every problem found is listed, not only the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} config problem(s):\n{lines}")


class EmbeddedServerError(GatewayError):
    """An embedded NATS or PostgreSQL server could not be started or stopped."""


class StoreError(GatewayError):
    """The workflow store (PostgreSQL) failed in a way the caller should see."""


class StoreRejected(StoreError):
    """PostgreSQL refused the data itself (a value it cannot store: a NUL in text, a number out of range, a
    broken constraint): trying again will not help, unlike a lost connection."""


class BusError(GatewayError):
    """The bus (NATS JetStream) failed in a way the caller should see."""
