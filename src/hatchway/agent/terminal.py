"""A login shell in a pseudo-terminal, run as the session's user."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
from pathlib import Path

from hatchway.agent.runas import RunAsUser, login_environment

EXEC_HELPER = Path(__file__).with_name("exec_helper.py")


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyShell:
    """A process whose controlling terminal is a PTY we hold the master end of."""

    def __init__(self, process: asyncio.subprocess.Process, master_fd: int) -> None:
        self.process = process
        self.master_fd = master_fd
        self._closed = False

    @classmethod
    async def spawn(
        cls,
        user: RunAsUser,
        *,
        rows: int,
        cols: int,
        command: list[str] | None = None,
        profile: str = "",
    ) -> PtyShell:
        """Start ``user``'s login shell (or ``command`` via ``sh -c``) on a new PTY.

        ``profile`` (the ``shellProfile.linux`` preference) runs first, in the user's shell
        with the terminal as its output, which then ``exec``s the login shell: what it prints
        comes before the first prompt, nothing of it is echoed as if typed, and what it
        exports (and the directory it ``cd``s to) carries over.
        """
        master, slave = os.openpty()
        try:
            set_window_size(slave, rows, cols)
            os.set_blocking(master, False)
            if command is None and profile:
                shell = os.path.basename(user.shell)
                path, argv = user.shell, [shell, "-c", f'{profile}\nexec "$SHELL" -l']
            elif command is None:
                path, argv = user.shell, ["-" + os.path.basename(user.shell)]
            else:
                path, argv = "/bin/sh", ["sh", "-c", *command]
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(EXEC_HELPER),
                str(user.uid), str(user.gid), ",".join(str(g) for g in user.groups),
                user.home, path, *argv,
                stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True,
                cwd="/",
                env=login_environment(user),
            )  # fmt: skip
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    def resize(self, rows: int, cols: int) -> None:
        """New window size; the kernel sends SIGWINCH to the foreground process group."""
        if not self._closed:
            with contextlib.suppress(OSError):
                set_window_size(self.master_fd, rows, cols)

    def canonical(self) -> bool:
        """Whether the terminal is in canonical (line-by-line) input mode right now."""
        try:
            return bool(termios.tcgetattr(self.master_fd)[3] & termios.ICANON)
        except termios.error:
            return False

    def write(self, data: bytes) -> int:
        """Write what the PTY accepts now; returns the count (0 when full)."""
        try:
            return os.write(self.master_fd, data)
        except BlockingIOError:
            return 0

    def read(self, limit: int) -> bytes | None:
        """Read available output: None if nothing is ready, b"" at the end (EIO once every
        slave end is closed)."""
        try:
            return os.read(self.master_fd, limit)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def hangup(self) -> None:
        """End the session's processes as a terminal hangup would (SIGHUP, then SIGKILL)."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGHUP)
        loop = asyncio.get_running_loop()
        loop.call_later(2.0, self._kill)

    def _kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.master_fd)

    @staticmethod
    def exit_status(returncode: int) -> int:
        """A shell-style status: the exit code, or 128 + signal number."""
        return 128 - returncode if returncode < 0 else returncode
