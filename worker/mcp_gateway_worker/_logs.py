"""structlog set-up: JSON lines on stderr (stdout may carry the MCP protocol), with the bound context ids."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's fast PrintLogger, knowing the name it was asked for (`get_logger(__name__)`), so that
    `add_logger_name` can put it on the line as `logger`."""

    def __init__(self, name: str | None, file: TextIO) -> None:
        super().__init__(file)
        self.name = name or "root"


def _named_print_logger(*args: Any) -> _NamedPrintLogger:
    return _NamedPrintLogger(str(args[0]) if args else None, sys.stderr)


def _serializer() -> Callable[..., str]:
    """What the JSON renderer writes a line with: orjson when it is installed (the gateway has it; several times
    faster on a hot path that logs each call), else the standard library. A line orjson cannot write (an integer
    past 64 bits, a key that is not a string) goes to the standard library, so no line is lost to the faster one."""
    try:
        import orjson
    except ImportError:  # a worker's own environment need not have it
        return json.dumps

    def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
        try:
            return orjson.dumps(value, default=default).decode()
        except TypeError:
            return json.dumps(value, default=default)

    return dumps


def configure_logging(level: str = "info", fmt: Literal["json", "console", "auto"] = "auto") -> None:
    """Every log line carries the context variables bound by the request (workflow_id, tool, request_id,
    trace_id) and the logger's name; standard-library loggers (uvicorn, the SDK) go through the same renderer.
    `auto`: a console renderer when stderr is a terminal, JSON lines otherwise."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_serializer())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_named_print_logger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO) if level != "debug" else logging.DEBUG)
