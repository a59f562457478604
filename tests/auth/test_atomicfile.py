"""Atomic writes of key files with exact permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.auth.atomicfile import create_exclusive, write_atomic


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_write_atomic_sets_exact_mode(tmp_path: Path, strict_umask: None) -> None:
    path = tmp_path / "ca.pem"
    write_atomic(path, b"one", mode=0o644)  # not narrowed by the umask
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomic(path, b"two", mode=0o600)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["ca.pem"]


def test_write_atomic_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "no" / "file", b"x", mode=0o600)


def test_create_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert create_exclusive(path, b"first", mode=0o600) is True
    assert create_exclusive(path, b"second", mode=0o600) is False
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]
