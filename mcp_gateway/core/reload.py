"""Keeping the registry in step with its config folder, while the gateway runs.

Every `interval` seconds (and on `reload()`, e.g. at SIGHUP) the folder's YAML files are fingerprinted (name,
size, modification time); when that changes, the folder is loaded again. A folder that loads is swapped in at
once and `on_change(old, new)` runs (the MCP layer tells clients that listed tools, prompts or resources); a
folder with problems is not: every problem is logged, and the last good registry goes on serving. Calls already
running keep the tool they started with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import structlog

from mcp_gateway.core.supervisor import Supervisor
from mcp_gateway.errors import ConfigError
from mcp_gateway.registry import Registry, load_registry

__all__ = ["RegistryReloader"]

log = structlog.get_logger(__name__)

OnChange = Callable[[Registry, Registry], Awaitable[None]]


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies the folder's current config: each YAML file's path, size and modification time."""
    found: list[tuple[str, int, int]] = []
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            stat = path.stat()
            found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class RegistryReloader:
    def __init__(
        self,
        directory: Path,
        registry: Registry,
        on_change: OnChange,
        supervisor: Supervisor | None = None,
        *,
        interval: float = 2.0,
    ) -> None:
        """Without a supervisor (or with `interval` 0), only `reload()` loads the folder again."""
        self.registry = registry
        self._supervisor = supervisor
        self._directory = directory
        self._on_change = on_change
        self._interval = interval
        self._seen = fingerprint(directory) if directory.is_dir() else ()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> RegistryReloader:
        if self._interval > 0 and self._supervisor is not None:
            self._supervisor.start("reload", self._poll)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop("reload")

    async def reload(self, *, force: bool = True) -> bool:
        """Load the folder again (with `force=False`, only when its files changed); True when a new registry
        was swapped in."""
        async with self._lock:
            current = await asyncio.to_thread(fingerprint, self._directory) if self._directory.is_dir() else ()
            if not force and current == self._seen:
                return False
            self._seen = current
            try:
                loaded = await asyncio.to_thread(load_registry, self._directory)
            except ConfigError as exc:
                log.error(
                    "registry.reload_refused",
                    directory=str(self._directory),
                    problems=[str(p) for p in exc.problems],
                    note="the last good config goes on serving",
                )
                return False
            old, self.registry = self.registry, loaded
            log.info("registry.reloaded", tools=len(loaded), prompts=len(loaded.prompts))
            await self._on_change(old, loaded)
            return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload(force=False)
            except Exception as exc:  # never let a bad file (or a vanished folder) end the watch
                log.warning("registry.reload_failed", error=str(exc) or type(exc).__name__)
