"""Layering: ``hatchway.protocol`` stays sans-I/O, and dependencies point one way."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parent.parent / "src" / "hatchway" / "protocol"

FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "select",
        "selectors",
        "threading",
        "subprocess",
        "time",
        "websockets",
        "aiohttp",
        "sqlalchemy",
    }
)
ALLOWED_STDLIB = frozenset(sys.stdlib_module_names) - FORBIDDEN


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ["hatchway", "protocol"]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
                if node.module is None:
                    names.extend(f"{module}.{alias.name}" for alias in node.names)
                    continue
                names.append(module)
            else:
                names.append(node.module or "")
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "hatchway":
        return name == "hatchway.errors" or name.startswith("hatchway.protocol")
    return top in ALLOWED_STDLIB or top == "__future__"


MODULES = sorted(PROTOCOL.glob("*.py"))


def test_protocol_package_exists() -> None:
    assert PROTOCOL / "__init__.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_protocol_imports_only_stdlib_and_errors(path: Path) -> None:
    bad = [name for name in _imports(path) if not _allowed(name)]
    assert not bad, f"{path.name} imports {bad}"


def test_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import time\nfrom asyncio import sleep\nimport websockets\n"
        "from hatchway.transport import x\nfrom .. import store\nfrom ..errors import E\n"
        "import json\nfrom . import frames\n"
    )
    assert [n for n in _imports(sample) if not _allowed(n)] == [
        "time",
        "asyncio",
        "websockets",
        "hatchway.transport",
        "hatchway.store",
    ]


def test_dependencies_point_one_way() -> None:
    """The import-linter contract in pyproject.toml: cli → quickstart → service → server |
    agent | client → transport → auth | store | protocol → errors | eventloop."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent.parent
    exe = Path(sys.executable).parent / "lint-imports"
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert command, "import-linter is a test dependency"
    result = subprocess.run(
        [command, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
