"""``hatchway.policy`` is pure: the standard library and ``hatchway.errors``, no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

POLICY = Path(__file__).resolve().parents[2] / "src" / "hatchway" / "policy"
FORBIDDEN = frozenset(
    {"asyncio", "socket", "select", "selectors", "threading", "subprocess", "time", "os", "io"}
)
ALLOWED = (frozenset(sys.stdlib_module_names) - FORBIDDEN) | {"__future__"}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("hatchway.policy" if node.level else node.module or "")
    return names


@pytest.mark.parametrize("path", sorted(POLICY.glob("*.py")), ids=lambda p: p.name)
def test_policy_imports_only_stdlib_and_errors(path: Path) -> None:
    bad = [
        name
        for name in _imports(path)
        if name.split(".")[0] not in ALLOWED and name not in ("hatchway.errors", "hatchway.policy")
    ]
    assert not bad, f"{path.name} imports {bad}"
