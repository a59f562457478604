"""The useradd lock: root must not be tricked into following a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hatchway.agent import runas
from hatchway.auth.atomicfile import exclusive_lock
from hatchway.errors import ConfigError


def test_the_lock_is_not_in_a_world_writable_directory() -> None:
    assert Path("/run/lock") != runas.LOCK_DIR
    assert not str(runas.LOCK_DIR).startswith(("/tmp", "/var/tmp", "/run/lock", "/dev/shm"))


def test_the_lock_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    with exclusive_lock(directory, "useradd.lock"):
        assert (directory / "useradd.lock").is_file()
    assert directory.stat().st_mode & 0o777 == 0o700


def test_a_symlink_in_place_of_the_lock_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    (directory / "useradd.lock").symlink_to(victim)
    with (
        pytest.raises(ConfigError, match="cannot open lock file"),
        exclusive_lock(directory, "useradd.lock"),
    ):
        pass
    assert victim.read_text() == "root:x:0:0\n"


def test_a_world_writable_or_foreign_lock_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with (
        pytest.raises(ConfigError, match="no one else can write"),
        exclusive_lock(shared, "useradd.lock"),
    ):
        pass
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ConfigError), exclusive_lock(link, "useradd.lock"):
        pass
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 12345, 12345)
        with pytest.raises(ConfigError), exclusive_lock(foreign, "useradd.lock"):
            pass
