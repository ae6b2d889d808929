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
