"""The gateway's own JSON (store columns, change feed): orjson where it agrees with the standard library, the
standard library where they would differ, so that nothing is read or written differently than before."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_gateway.core.encoding import dumps, dumps_text, loads


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, None, True, "é", {"c": "ü\n"}]},
        {"big": 2**70, "negative": -(2**65)},  # past 64 bits: orjson would refuse to write or read them as floats
        {"i64": 2**63 - 1, "u64": 2**64 - 1},
        {"lone": "\ud800"},  # a lone surrogate: orjson refuses it
        {"digits in a string": "12345678901234567890123"},
        [],
        "text",
        0.1,
    ],
)
def test_a_value_comes_back_as_the_standard_library_would_give_it(value: Any) -> None:
    assert loads(dumps(value)) == json.loads(json.dumps(value))
    assert loads(dumps(value).decode()) == json.loads(json.dumps(value))
    if value != {"lone": "\ud800"}:  # (text with a lone surrogate cannot be UTF-8: PostgreSQL refuses it anyway)
        assert loads(dumps_text(value)) == json.loads(json.dumps(value))


def test_what_only_the_standard_library_writes_is_written_by_it() -> None:
    assert dumps({1: "a"}) == b'{"1":"a"}'  # a key that is not a string, as json writes it
    assert dumps_text({"x": "é"}) == '{"x":"é"}'
    with pytest.raises(json.JSONDecodeError):
        loads(b"{not json")


def test_log_lines_are_json_whatever_they_carry() -> None:
    """The JSON log renderer (orjson when installed) writes every line, also one orjson refuses (an integer past
    64 bits), one with a value no JSON library knows (written as its repr) and one with non-ASCII text."""
    import subprocess
    import sys

    script = (
        "from mcp_gateway.logs import configure_logging\n"
        "import structlog\n"
        "configure_logging('info', 'json')\n"
        "log = structlog.get_logger('t')\n"
        "log.info('big', n=2**70)\n"
        "log.info('odd', v=object.__new__(type('Odd', (), {'__repr__': lambda self: 'odd!'})))\n"
        "log.info('text', s='é\\u2603', lone='\\ud800')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == ""  # stdout may carry the MCP protocol: logs go to stderr only
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["big", "odd", "text"]
    assert lines[0]["n"] == 2**70
    assert lines[1]["v"] == "odd!"
    assert lines[2]["s"] == "é\u2603" and lines[2]["logger"] == "t"
