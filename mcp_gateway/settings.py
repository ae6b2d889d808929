"""Gateway settings: defaults, then a settings file, then `MCPGW_*` environment variables, then command-line flags.

The settings file is the first of: `--config FILE`, `MCPGW_CONFIG`, `./config/gateway.yaml` (a checkout of the
repository); with none, defaults and the environment alone. Relative paths in a settings file are relative to
that file's folder. Without a `data_dir`, the embedded servers keep their data in the user's data folder
(`$XDG_DATA_HOME/mcp-gateway`, else `~/.local/share/mcp-gateway`), so that `serve` and `workflows list` find
each other from any folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import yaml
from limits import parse_many
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidatorFunctionWrapHandler, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from mcp_gateway.auth import JwtSettings
from mcp_gateway.errors import ConfigError, ConfigProblem

__all__ = ["DEFAULT_SETTINGS_FILE", "EXAMPLE_TOOLS", "Settings", "load_settings", "user_data_dir"]

DEFAULT_SETTINGS_FILE = Path("config/gateway.yaml")
DEFAULT_TOOLS_DIR = Path("config/tools")
_PACKAGE = Path(__file__).resolve().parent
EXAMPLE_TOOLS = next(
    (p for p in (_PACKAGE / "examples" / "tools", _PACKAGE.parent / "config" / "tools") if p.is_dir()),
    _PACKAGE / "examples" / "tools",
)
"""The example tools' config: inside the installed package, or `config/tools` of a checkout (editable install)."""


def user_data_dir() -> Path:
    """Where the embedded servers keep their data when no `data_dir` is set."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mcp-gateway"


_PATH_KEYS = ("data_dir", "tools_dir")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCPGW_", env_nested_delimiter="__", extra="forbid", frozen=True)
    _file_values: ClassVar[dict[str, Any]] = {}

    nats_url: str | None = Field(default=None, description="NATS server; none: start an embedded one")
    database_url: str | None = Field(default=None, description="postgresql://...; none: start an embedded one")
    data_dir: Path = Field(default_factory=user_data_dir, description="where embedded servers keep their data")
    tools_dir: Path | None = Field(
        default=None, description="folder of tool YAML files; none: ./config/tools, else the examples' (with them)"
    )
    ready_max_event_backlog: int = Field(
        default=10_000,
        ge=1,
        description="worker events waiting in JetStream for the fold above which /readyz says the gateway lags",
    )
    reload_interval: float = Field(
        default=2.0, ge=0, description="seconds between checks of tools_dir for changes (0: only at SIGHUP)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="gateway processes serving the HTTP port (SO_REUSEPORT; `serve --processes N`); 1: this process",
    )
    reuse_port: bool = Field(
        default=False,
        description="internal: bind the port with SO_REUSEPORT, beside sibling processes (set by `serve --processes` "
        "for its children)",
    )
    subject_prefix: str = Field(default="mcpgw", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console", "auto"] = "auto"
    """auto: a console renderer when stderr is a terminal, JSON lines otherwise."""
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry traces (the otel extra), exported as OTEL_* says (default otlp); they are on "
        "without it too when OTEL_TRACES_EXPORTER names an exporter",
    )
    migrate_on_start: bool = True
    outbox_relay_after: float = Field(default=5.0, gt=0, description="seconds before the relay re-publishes")
    duplicate_window: float = Field(default=3_600.0, gt=0, description="JetStream de-duplication window, seconds")
    db_pool_size: int = Field(default=20, ge=1)
    idempotency_window: float = Field(
        default=86_400.0, gt=0, description="seconds an idempotency key names its workflow (then it may name a new one)"
    )
    allowed_hosts: list[str] = Field(default_factory=list[str], description="extra Host values, e.g. gw.example:443")
    allowed_origins: list[str] = Field(default_factory=list[str])
    max_request_body: int = Field(default=4 * 1024 * 1024, ge=1024)
    auth: Literal["required", "optional"] | None = Field(
        default=None,
        description="HTTP callers: required (a bearer token on every request) or optional (no token: the local "
        "principal); none: required unless the host is a loopback address",
    )
    allow_anonymous_remote: bool = Field(
        default=False, description="let `auth: optional` serve a non-loopback address (anyone who reaches it acts)"
    )
    local_subject: str = Field(
        default="local", min_length=1, description="the principal of stdio, and of HTTP callers without a token"
    )
    local_scopes: list[str] = Field(
        default_factory=lambda: ["*"], description="that principal's scopes ('*': every tool's scopes)"
    )
    admin_scope: str = Field(
        default="mcpgw:admin", min_length=1, description="the scope that makes a token's holder an admin"
    )
    metrics_scope: str = Field(
        default="mcpgw:metrics",
        min_length=1,
        description="the scope that lets a token read GET /metrics and nothing else (for Prometheus; admins may too)",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="the URL clients reach the gateway at (RFC 9728 metadata names `<public_url>/mcp`); "
        "default http://host:port",
    )
    authorization_servers: list[str] = Field(
        default_factory=list[str], description="issuers clients get tokens from (RFC 9728); default: jwt.issuer"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="the key of the keyed digests of secret arguments (idempotency); every gateway process of one "
        "database needs the same; none: a random key kept in data_dir/secret.key (made at first start, mode 0600), "
        "or with both URLs configured, a random key per process",
    )
    jwt: JwtSettings | None = Field(default=None, description="accept JWT access tokens verified against a JWKS")
    admin_token_sha256: str | None = Field(default=None, exclude=True, description="replaced by admin tokens")
    # Limits (README "Limits"): mcp_gateway/server/_guard.py, _connections.py, mcp_gateway/core/limits.py.
    rate_limit: str | None = Field(
        default="1000/second",
        description="HTTP requests per caller (token subject, else client address), `limits` syntax: "
        "'20/second', '600/minute;10000/hour'; none: no limit",
    )
    max_in_flight_per_caller: int = Field(default=64, ge=1, description="tool calls one caller may have running")
    max_requests_in_flight_per_caller: int = Field(
        default=128, ge=1, description="MCP requests (POST /mcp) one caller may have open; past it, 429 at once"
    )
    max_in_flight: int = Field(default=1024, ge=1, description="tool calls the gateway runs at once, all callers")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="largest request head (line and headers)")
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to receive a request's head")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds to receive a request's body")
    keep_alive_timeout: int = Field(default=5, ge=1, description="seconds an idle connection is kept after a response")
    limit_concurrency: int | None = Field(
        default=1000, ge=1, description="connections or requests at once (then 503); none: no limit"
    )
    backlog: int = Field(default=2048, ge=1, description="connections the kernel queues before they are accepted")
    auth_failure_limit: int = Field(
        default=10, ge=1, description="failed authentications per client address within auth_failure_window"
    )
    auth_failure_window: float = Field(default=60.0, gt=0, description="seconds over which failures are counted")
    auth_failure_cooloff: float = Field(default=60.0, gt=0, description="seconds an address is then refused (429)")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list[str],
        description="proxies trusted to name the client in X-Forwarded-For; none: the peer address is the client",
    )
    lean_http: bool = Field(
        default=True,
        description="answer tools/call and tools/list (2026-07-28, and in 2025-11-25 sessions) without the SDK's "
        "per-request SSE machinery (mcp_gateway/server/_lean.py); false: every request through the SDK's transport",
    )

    @field_validator("rate_limit")
    @classmethod
    def _a_rate(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "none", "off"):
            return None
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate: write '<count>/<unit>' or '<count> per <n> <unit>' (second, minute, "
                "hour, day), several joined by ';', e.g. '20/second;600/minute'; or none for no limit"
            ) from None
        return value

    @field_validator("processes", mode="wrap")
    @classmethod
    def _a_process_count(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                f"{value!r} is not a process count: expected a whole number from 1 to 64 (MCPGW_PROCESSES, "
                "serve --processes; 1: serve in this process)"
            ) from None

    @field_validator("admin_token_sha256")
    @classmethod
    def _replaced(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "admin_token_sha256 was replaced by admin tokens: remove it and create one with "
                "`mcp-gateway token create --subject NAME --admin`"
            )
        return value

    def secret_key_bytes(self) -> bytes | None:
        """`secret_key`, else (embedded servers) the data dir's key file, made now (0600) when missing: shared by
        every gateway process of this data dir. None with both URLs configured and no `secret_key` (nothing is
        written locally then; each process draws a key of its own)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.nats_url is not None and self.database_url is not None:
            return None
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def check_exposure(self) -> None:
        """Refuse to serve HTTP on a non-loopback address to callers without a token, unless told so."""
        if self.resolved_auth() == "optional" and self.host not in LOOPBACK and not self.allow_anonymous_remote:
            raise ConfigError(
                [
                    ConfigProblem(
                        self.source,
                        f"auth is optional but host {self.host!r} is not a loopback address: anyone who reaches it "
                        "would act without a token. Set auth: required (and create tokens with `mcp-gateway token "
                        "create`, or configure jwt), or set allow_anonymous_remote: true to accept that",
                        key_path="auth",
                    )
                ]
            )

    def resolved_auth(self) -> Literal["required", "optional"]:
        """`auth` as it applies: required unless set, or the host is a loopback address."""
        if self.auth is not None:
            return self.auth
        return "optional" if self.host in LOOPBACK else "required"

    _source: str = PrivateAttr(default="no settings file")

    @property
    def source(self) -> str:
        """Where the settings came from, for messages: the settings file, or that there was none."""
        return self._source

    def from_source(self, file: Path | None) -> Settings:
        """These settings, remembering the settings file they were read from (for messages)."""
        self._source = f"settings file {file.resolve()}" if file is not None else "no settings file"
        return self

    def tools_folder(self, *, examples: bool = False) -> Path:
        """The tool folder to serve: `tools_dir`, else `./config/tools`, else (serving the examples) theirs."""
        if self.tools_dir is not None:
            return self.tools_dir
        if DEFAULT_TOOLS_DIR.is_dir():
            return DEFAULT_TOOLS_DIR.resolve()
        if examples:
            return EXAMPLE_TOOLS
        raise ConfigError(
            [
                ConfigProblem(
                    self.source,
                    "no tool folder: set tools_dir in the settings file, MCPGW_TOOLS_DIR or --tools-dir "
                    f"(looked for {DEFAULT_TOOLS_DIR} in {Path.cwd()}), or serve --with-examples",
                    key_path="tools_dir",
                )
            ]
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=cls._file_values))


def _read_file(path: Path) -> dict[str, Any]:
    def refuse(message: str, key_path: str | None = None) -> ConfigError:
        return ConfigError([ConfigProblem(str(path), message, key_path=key_path)])

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise refuse("not valid YAML: " + " ".join(str(exc).split())) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise refuse(f"cannot be read: {exc}") from None
    except RecursionError:
        raise refuse("nests too deeply to read (YAML nested hundreds of levels)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise refuse(f"must be a mapping of settings, got {type(data).__name__}")
    settings = cast(dict[Any, Any], data)
    for key in settings:
        if not isinstance(key, str):
            raise refuse(f"setting names are words (strings), got {key!r} ({type(key).__name__})")
    for key in _PATH_KEYS:
        value = settings.get(key)
        if isinstance(value, str):
            if "\x00" in value:
                raise refuse("a path cannot contain a NUL character", key)
            if not Path(value).is_absolute():
                settings[key] = str((path.parent / value).resolve())
    return settings


def _settings_file(path: Path | None) -> Path | None:
    if path is None and (named := os.environ.get("MCPGW_CONFIG")):
        path = Path(named)
        if not path.is_file():
            raise ConfigError([ConfigProblem(named, "settings file named by MCPGW_CONFIG does not exist")])
    if path is not None and not path.is_file():
        raise ConfigError([ConfigProblem(str(path), "settings file does not exist")])
    return path if path is not None else (DEFAULT_SETTINGS_FILE if DEFAULT_SETTINGS_FILE.is_file() else None)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (else `MCPGW_CONFIG`, else `./config/gateway.yaml` when it exists), the environment
    and `overrides`."""
    file = _settings_file(path)
    file_values = _read_file(file) if file is not None else {}
    source = str(file) if file is not None else "environment"

    class _Loaded(Settings):
        _file_values: ClassVar[dict[str, Any]] = file_values

    try:
        loaded = _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = [
            ConfigProblem(
                source if str(err["loc"][0]) in file_values else f"{source} / MCPGW_* / flags",
                "unknown setting" if err["type"] == "extra_forbidden" else err["msg"],
                key_path=".".join(str(p) for p in err["loc"]),
            )
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None
    return Settings.model_validate(loaded.model_dump()).from_source(file)
