"""Private directories and crash-safe writes of small files that hold keys and secrets.

Key material must never be observed half-written or with loose permissions, not even for a
moment: a reader that races the writer would otherwise load a truncated key, and a file created
with the default umask and ``chmod``-ed afterwards is world-readable in between. Both helpers
therefore write a temporary file in the destination directory, created with its final mode, and
move it into place with one atomic directory operation.

Standard library only: the CLI imports this (through ``auth.pinning``) and must start fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from hatchway.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "create_exclusive",
    "ensure_private_dir",
    "exclusive_lock",
    "write_atomic",
    "write_private_text",
]


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary file next to ``path`` with exactly ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never follow or reuse a file someone else planted under our temporary name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        # The umask may have removed bits we want (0644 under umask 077); set the mode exactly.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    """Persist a rename or link; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically; the file has permission bits ``mode``.

    Readers see either the old content or the new one, never a mix, and the file never exists
    with wider permissions than ``mode``.

    Raises:
        OSError: the directory is missing or not writable.
    """
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_directory(path.parent)


def create_exclusive(path: Path, data: bytes, *, mode: int) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet; return whether we did.

    Unlike ``open(path, "x")``, the file appears complete or not at all, so a second process
    racing us either loses cleanly (``False``) or reads the full content we wrote. ``os.link``
    fails with ``FileExistsError`` if the name is taken, which makes it the atomic
    create-if-absent operation; on file systems without hard links we fall back to ``O_EXCL``
    on the final name.

    Raises:
        OSError: the directory is missing or not writable.
    """
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (some FUSE/SMB mounts): O_EXCL still guarantees one winner.
        return _create_exclusive_direct(path, data, mode)
    finally:
        _unlink_quietly(tmp)
    _fsync_directory(path.parent)
    return True


def _create_exclusive_direct(path: Path, data: bytes, mode: int) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    return True


def write_private_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8), readable by the owner only (0600)."""
    write_atomic(path, text.encode("utf-8"), mode=0o600)


def ensure_private_dir(path: Path, *, what: str) -> None:
    """Make sure ``path`` is a directory only its owner (this process's user) can enter.

    Creates it (and missing parents) with mode 0700. A directory that exists with group or
    other permission bits is tightened to 0700, with a warning; one owned by another user, or
    a path that is not a directory, is refused.

    Raises:
        ConfigError: the directory cannot be created, is not a directory, or belongs to
            another user; the message names ``what`` it is for (e.g. "data directory").
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"the {what} {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot create the {what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"the {what} {path} is not a directory (a symbolic link?)")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the {what} {path} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}); use a directory of your own"
        )
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        try:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
        except OSError as exc:
            raise ConfigError(
                f"the {what} {path} is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}) and cannot be tightened: {exc.strerror}"
            ) from exc
        log.warning(
            "the %s %s was accessible by other users (mode %o); tightened to %o",
            what,
            path,
            stat.S_IMODE(info.st_mode),
            stat.S_IMODE(info.st_mode) & 0o700,
        )


@contextlib.contextmanager
def exclusive_lock(directory: Path, name: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory/name`` without trusting the file system.

    ``directory`` is created private (0700) if missing and must be a real directory owned by
    us and writable by nobody else; the lock file is opened without following a symlink and
    must be a regular file we own. Anything else is refused rather than used.

    Raises:
        ConfigError: the directory or the lock file is not safe to use.
    """
    uid = os.geteuid()
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise ConfigError(f"cannot use lock directory {directory}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
        raise ConfigError(
            f"lock directory {directory} must be a directory owned by uid {uid} that no one "
            "else can write"
        )
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(directory / name, flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open lock file {directory / name}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            raise ConfigError(f"lock file {directory / name} is not a regular file of ours")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
