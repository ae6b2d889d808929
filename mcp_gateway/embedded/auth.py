"""Who may speak on the embedded NATS: its users, their permissions, and its JetStream key, in its data folder.

One account (NATS's global one, `$G`: JetStream's streams are shared by the gateway and its workers, so they
must be in one account) with users in `authorization { users = [...] }`, each with its own permissions:
- the gateway's user, `mcpgw-gateway`, may do anything;
- a worker user (`mcp-gateway bus-user create NAME --tools-subjects a.b,c`) may consume the commands of its tool
  subjects only, publish only their events, hear cancels, the answers of its tools' workflows, the reads of its
  resources, and its own replies (`worker_permissions` lists each subject).
Separate accounts would not serve: a worker must consume the gateway's streams, and imports of JetStream's API
across accounts would give no finer control than these permissions do.

Files (each mode 0600, written whole and renamed into place, under `auth.lock`):
- `auth.json`: the users (name, prefix, tool subjects, resources, the bcrypt hash of the password, when made);
- `gateway.password`: the plaintext of the gateway's password (random), for the gateway and `mcp-gateway`'s
  commands on this machine to connect; no other password is kept anywhere, only bcrypt hashes;
- `jetstream.key`: the key of JetStream's encryption at rest (`cipher: chachapoly`), handed to the server in
  its environment (`key: $MCPGW_JS_KEY`), so commands (and the secrets in their arguments) are not in plain text
  in the stream files;
- `nats.conf`: the server's config, made from the above at every start and every change of users (a running
  server reloads it at SIGHUP: `reload_running`). Edits to it are overwritten.

A data folder made before this existed gets them at its next start; its unencrypted store is encrypted by NATS
(2.15 rewrites the existing message blocks with the key, checked by tests/test_bus_permissions.py). A store that
is encrypted while its key file is missing is refused: a new key could not read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import structlog
from mcp_gateway_worker.contract import Subjects, worker_durable

from mcp_gateway.errors import EmbeddedServerError, GatewayError

__all__ = [
    "GATEWAY_USER",
    "KEY_ENV",
    "BusAuth",
    "BusUser",
    "BusUserError",
    "worker_permissions",
]

log = structlog.get_logger(__name__)

GATEWAY_USER = "mcpgw-gateway"
KEY_ENV = "MCPGW_JS_KEY"
WORKER_QUEUE = "mcpgw-workers"
BCRYPT_COST = 8
"""bcrypt's work factor for the hashes in the server config. The passwords are 32 random bytes, not chosen by
people: no work factor makes them guessable or not. NATS checks the hash at every connect (cost 11: 150 ms of
server CPU; cost 8: 20 ms), and the test suite connects thousands of times."""
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
RELOAD_WAIT = 5.0


class BusUserError(GatewayError):
    """A bus user that cannot be made or found (a bad name or subject, a name taken, an unknown name)."""


@dataclass(frozen=True, slots=True)
class BusUser:
    """A worker user of the embedded NATS (its password is nowhere; `password_hash` is its bcrypt hash)."""

    name: str
    prefix: str
    tool_subjects: tuple[str, ...]
    resources: tuple[str, ...]
    created_at: str
    password_hash: str

    def view(self) -> dict[str, Any]:
        """What `bus-user list --json` shows (not the hash)."""
        return {
            "name": self.name,
            "prefix": self.prefix,
            "tool_subjects": list(self.tool_subjects),
            "resources": list(self.resources),
            "created_at": self.created_at,
        }


def worker_permissions(
    name: str, subjects: Subjects, tool_subjects: Sequence[str], resources: Sequence[str] = ()
) -> dict[str, Any]:
    """The NATS permissions of a worker user serving `tool_subjects` (and reading `resources`), under the prefix
    of `subjects`. Each allowed subject is what the Python SDK (nats-py 2.16) and the Node worker send:
    - publish: `$JS.API.STREAM.INFO.<stream>` (the three streams: workers look them up; creating one is the
      gateway's: a user that may create streams could capture any subject, answers included, into one of its
      own), per tool subject the consumer's `$JS.API.CONSUMER.INFO`, its filtered create
      (`$JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>`: the filter is in the subject, so it cannot be
      another tool's; the unfiltered and `DURABLE.CREATE` forms, whose filter is in the body, are not allowed),
      `$JS.API.CONSUMER.MSG.NEXT` (pull) and `$JS.ACK.<stream>.<durable>.>` (ack, nak, in progress, term); the
      events `<prefix>.evt.<tool subject>.*`;
    - subscribe: cancels `<prefix>.ctl.cancel.*`, answers `<prefix>.ctl.input.<tool subject>.*`, resource reads
      `<prefix>.res.<resource>` in queue group `mcpgw-workers` only, and its own replies `_INBOX_<name>.>` (its
      connection's `inbox_prefix`; `_INBOX.>` would be everyone's);
    - with resources, `allow_responses` (a reply to a read it received, to the gateway's inbox).
    """
    cmd = subjects.command_stream
    publish = [f"$JS.API.STREAM.INFO.{s}" for s in (cmd, subjects.event_stream, subjects.dead_letter_stream)]
    subscribe = [subjects.all_cancels]
    for subject in tool_subjects:
        durable = worker_durable(subject)
        publish += [
            f"$JS.API.CONSUMER.INFO.{cmd}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{cmd}.{durable}.{subjects.command(subject)}",
            f"$JS.API.CONSUMER.MSG.NEXT.{cmd}.{durable}",
            f"$JS.ACK.{cmd}.{durable}.>",
            subjects.tool_events(subject),
        ]
        subscribe.append(subjects.tool_answers(subject))
    subscribe += [f"{subjects.resource(r)} {WORKER_QUEUE}" for r in resources]
    subscribe.append(f"_INBOX_{name}.>")
    permissions: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if resources:
        permissions["allow_responses"] = True
    return permissions


def _hash(password: str) -> str:
    try:
        import bcrypt
    except ImportError as exc:
        raise EmbeddedServerError(
            "the embedded NATS's users need the bcrypt package: pip install 'mcp-gateway[embedded]'"
        ) from exc

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")).decode()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), whole: a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def subject_list(values: Sequence[str], what: str) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if not _SUBJECT.match(item):
                raise BusUserError(f"{what} {item!r} is not a subject (dot-separated tokens of A-Z a-z 0-9 _ -)")
            if item not in found:
                found.append(item)
    return tuple(found)


class BusAuth:
    """The users, passwords and key files of one embedded NATS data folder (see the module's docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.users_path = self.data_dir / "auth.json"
        self.password_path = self.data_dir / "gateway.password"
        self.key_path = self.data_dir / "jetstream.key"
        self.config_path = self.data_dir / "nats.conf"
        self.lock_path = self.data_dir / "auth.lock"

    @contextlib.contextmanager
    def _locked(self) -> Generator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- state ---------------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.users_path.read_text())
        except FileNotFoundError:
            return {"version": 1, "gateway": None, "workers": {}}
        except (OSError, ValueError) as exc:
            raise EmbeddedServerError(f"cannot read the bus users in {self.users_path}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("workers"), dict):
            raise EmbeddedServerError(f"{self.users_path} is not a bus users file (no 'workers' object)")
        return cast(dict[str, Any], raw)

    def _save(self, state: dict[str, Any]) -> None:
        _write_private(self.users_path, json.dumps(state, indent=2) + "\n")

    def users(self) -> list[BusUser]:
        """The worker users, by name."""
        return self.users_from(self._read())

    def gateway_password(self) -> str | None:
        """The gateway user's password, if this folder has one (a folder of before bus permissions has none)."""
        try:
            return self.password_path.read_text().strip() or None
        except OSError:
            return None

    def with_credentials(self, url: str) -> str:
        """`url` with the gateway user's credentials in it (unchanged when there is no password)."""
        password = self.gateway_password()
        if password is None:
            return url
        parts = urlsplit(url)
        netloc = f"{GATEWAY_USER}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    # --- at the server's start -----------------------------------------------------------------------------

    def prepare(self, store_dir: Path) -> tuple[Path, str]:
        """Make what a first start needs (the gateway's password, the JetStream key), write the server config;
        the config's path and the key (for the server's environment)."""
        with self._locked():
            state = self._read()
            password = self.gateway_password()
            if password is None or not state.get("gateway"):
                password = secrets.token_urlsafe(32)
                _write_private(self.password_path, password + "\n")
                state["gateway"] = {"user": GATEWAY_USER, "password_hash": _hash(password)}
                self._save(state)
                log.info("embedded.nats.gateway_user_created", user=GATEWAY_USER, file=str(self.password_path))
            key = self._key(store_dir)
            self._write_config(state, store_dir)
        return self.config_path, key

    def _key(self, store_dir: Path) -> str:
        try:
            key = self.key_path.read_text().strip()
        except FileNotFoundError:
            key = ""
        if key:
            return key
        encrypted = any(store_dir.rglob("*.key")) if store_dir.exists() else False
        if encrypted:
            raise EmbeddedServerError(
                f"the JetStream store in {store_dir} is encrypted, but its key ({self.key_path}) is missing: put the "
                "key file back, or move the store away to start with an empty one (its messages are then lost)"
            )
        existing = store_dir.exists() and any(p.is_file() for p in store_dir.rglob("*"))
        key = secrets.token_urlsafe(32)
        _write_private(self.key_path, key + "\n")
        if existing:
            log.warning(
                "embedded.nats.encrypting_store",
                store_dir=str(store_dir),
                key_file=str(self.key_path),
                note="a store of before encryption at rest: NATS encrypts it with the new key at this start; keep "
                "the key file with the data (without it the store cannot be read)",
            )
        return key

    def _write_config(self, state: dict[str, Any], store_dir: Path) -> None:
        gateway = cast(dict[str, Any], state["gateway"])
        users: list[dict[str, Any]] = [{"user": GATEWAY_USER, "password": gateway["password_hash"]}]
        for user in self.users_from(state):
            users.append(
                {
                    "user": user.name,
                    "password": user.password_hash,
                    "permissions": worker_permissions(
                        user.name, Subjects(user.prefix), user.tool_subjects, user.resources
                    ),
                }
            )
        lines = [
            "# Written by mcp-gateway (mcp_gateway/embedded/auth.py) from auth.json at every start and change of",
            "# users: edits here are overwritten. Users: mcp-gateway bus-user create|list|revoke.",
            "jetstream {",
            f"  store_dir: {json.dumps(str(store_dir))}",
            "  cipher: chachapoly",
            f"  key: ${KEY_ENV}",
            "}",
            "authorization {",
            "  users = [",
            *(f"    {json.dumps(u)}" for u in users),
            "  ]",
            "}",
            "",
        ]
        _write_private(self.config_path, "\n".join(lines))

    @staticmethod
    def users_from(state: dict[str, Any]) -> list[BusUser]:
        workers = cast(dict[str, dict[str, Any]], state["workers"])
        return [
            BusUser(
                name,
                str(w["prefix"]),
                tuple(w["tool_subjects"]),
                tuple(w.get("resources", ())),
                str(w.get("created_at", "")),
                str(w["password_hash"]),
            )
            for name, w in sorted(workers.items())
        ]

    # --- worker users --------------------------------------------------------------------------------------

    def create(
        self, name: str, prefix: str, tool_subjects: Sequence[str], resources: Sequence[str] = ()
    ) -> tuple[BusUser, str]:
        """Make a worker user; the user and its password (the only time the password exists in the clear)."""
        if not _NAME.match(name) or name == GATEWAY_USER:
            raise BusUserError(
                f"bus user name {name!r}: 1 to 64 of A-Z a-z 0-9 _ -, and not {GATEWAY_USER!r} (the gateway's)"
            )
        subjects = subject_list(tool_subjects, "tool subject")
        if not subjects:
            raise BusUserError("a bus user needs at least one tool subject (--tools-subjects a.b,c)")
        reads = subject_list(resources, "resource subject")
        Subjects(prefix)  # a bad prefix is refused here, not in the server's config
        password = secrets.token_urlsafe(32)
        with self._locked():
            state = self._read()
            if name in state["workers"]:
                raise BusUserError(f"bus user {name!r} exists already (revoke it first to make it anew)")
            state["workers"][name] = {
                "prefix": prefix,
                "tool_subjects": list(subjects),
                "resources": list(reads),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "password_hash": _hash(password),
            }
            self._save(state)
            if state.get("gateway"):  # a server has started here: its config follows
                self._write_config(state, self.data_dir / "jetstream")
        user = next(u for u in self.users() if u.name == name)
        return user, password

    def revoke(self, name: str) -> BusUser:
        """Remove a worker user (its connections are closed when the server reloads)."""
        with self._locked():
            state = self._read()
            if name not in state["workers"]:
                known = ", ".join(sorted(state["workers"])) or "none"
                raise BusUserError(f"no bus user {name!r} (bus users: {known})")
            user = next(u for u in self.users_from(state) if u.name == name)
            del state["workers"][name]
            self._save(state)
            if state.get("gateway"):
                self._write_config(state, self.data_dir / "jetstream")
        return user

    def reload_running(self, pid: int | None, log_path: Path) -> str:
        """Have the server running here (pid, from its pidfile) reload its config: SIGHUP, then wait for its log
        to say it did. What happened, in a sentence."""
        if pid is None:
            return f"no embedded NATS runs on {self.data_dir}: the users apply when it starts"
        try:
            offset = log_path.stat().st_size
        except OSError:
            offset = 0
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            try:
                with log_path.open("rb") as f:
                    f.seek(offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                text = ""
            if "Reloaded server configuration" in text:
                return f"the embedded NATS (pid {pid}) reloaded its users"
            if "Failed to reload" in text:
                line = next(li for li in text.splitlines() if "Failed to reload" in li)
                raise EmbeddedServerError(f"the embedded NATS (pid {pid}) could not reload its config: {line}")
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"the embedded NATS (pid {pid}) did not say it reloaded its config within {RELOAD_WAIT:g} s; see {log_path}"
        )
