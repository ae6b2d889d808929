"""The house's arrows: the core owns its ports and imports no adapter, transport or driver; the worker
distribution imports nothing of the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        (
            "mcp_gateway/core",
            (
                "mcp_gateway.store",
                "mcp_gateway.bus",
                "mcp_gateway.server",
                "mcp_gateway.embedded",
                "mcp_gateway.app",
                "sqlalchemy",
                "asyncpg",
                "nats",
                "mcp",
                "starlette",
                "prometheus_client",  # the core tells its Telemetry port; mcp_gateway.observability counts
            ),
        ),
        ("worker/mcp_gateway_worker", ("mcp_gateway.", "mcp.", "sqlalchemy", "asyncpg", "starlette", "uvicorn")),
    ],
)
def test_no_arrow_points_the_wrong_way(folder: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        module: sorted(
            n for n in names if any(n == f.rstrip(".") or n.startswith(f.rstrip(".") + ".") for f in forbidden)
        )
        for module, names in imports(ROOT / folder).items()
    }
    assert {m: w for m, w in wrong.items() if w} == {}
