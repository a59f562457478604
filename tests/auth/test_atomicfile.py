"""Atomic writes of key files with exact permissions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.auth.atomicfile import (
    create_exclusive,
    ensure_private_dir,
    write_atomic,
    write_private_text,
)
from hatchway.errors import ConfigError


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


def test_private_dir_is_created_0700(tmp_path: Path, strict_umask: None) -> None:
    target = tmp_path / "a" / "b"
    ensure_private_dir(target, what="data directory")
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_loose_private_dir_is_tightened(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    os.chmod(target, 0o755)
    ensure_private_dir(target, what="data directory")
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_private_dir_refuses_a_file_and_an_impossible_path(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"data directory .* is not a directory"):
        ensure_private_dir(afile, what="data directory")
    with pytest.raises(ConfigError, match="cannot create the state directory /proc/nope/x"):
        ensure_private_dir(Path("/proc/nope/x"), what="state directory")


def test_private_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        ensure_private_dir(target, what="data directory")


def test_private_text_is_0600_and_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "profile.toml"
    write_private_text(target, "one\n")
    write_private_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["profile.toml"]
