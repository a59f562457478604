"""Echo round trip of one keystroke through an interactive shell session, against ``ssh -tt``.

Each client runs in its own pseudo-terminal, as under a user's terminal emulator; the client
puts that terminal in raw mode itself. On the remote side we type
``stty raw -echo isig; printf 'BENCH_%s\\n' READY; cat`` and wait for the marker, so the
remote terminal no longer echoes or translates and ``cat`` returns exactly the byte it reads.
(``isig`` keeps Ctrl-C working so the benchmark can stop ``cat`` and ``exit`` the shell; it
changes nothing for the letters we send.) Then single bytes are written one at a time to the
local pty master and timed until the same byte comes back (select + os.read).

Samples of the two sessions are interleaved (both sessions stay open, order rotates) after
warm-up; a local pty running the same ``cat`` without any network is shown for context. Each
sample is followed by a pause (``--gap-ms``, default 20 ms) as between a person's keystrokes:
it lets the previous sample's trailing work (Hatchway's acknowledgements) finish instead of
competing with the next sample, and it measures what a typist meets, processes woken from
idle. Back to back (``--gap-ms 0``) every figure is lower and noisier; see README.md.
Prints p50/p90/p99 in µs and the hatchway/ssh ratios of p50 and p99. Never asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common import CpuWatch, Summary, exit_cleanly_on_sigterm, machine_line, ratio, verdict
from hatchway_env import HatchwayEnv, hatchway_binary, hatchway_cluster
from sshd import SshServer, ensure_sshd, openssh_server

AIM = 2.0
FLOOR = 4.0
ROWS, COLS = 24, 80
REMOTE_COMMAND = b"stty raw -echo isig; printf 'BENCH_%s\\n' READY; cat"
MARKER = re.compile(rb"BENCH_READY")
PROMPT = re.compile(rb"[$#] $")
SAMPLE_TIMEOUT = 10.0
SETUP_TIMEOUT = 30.0
PROMPT_TIMEOUT = 10.0
GAP_MS = 20.0  # keystrokes are spaced: each sample starts from idle processes
CHILD_DEFAULT_SIGNALS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


class PtySession:
    """A command with a fresh pseudo-terminal as its controlling terminal."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.transcript = b""
        pid, fd = pty.fork()
        if pid == 0:  # child: never returns
            try:
                # Dispositions survive exec: a benchmark started in the background (SIGINT
                # ignored) or Python's own SIGPIPE setting must not reach the programs.
                for sig in CHILD_DEFAULT_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
                os.execvpe(args[0], list(args), env)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.status: int | None = None

    # ---- reading and writing ------------------------------------------------------------

    def _read(self, timeout: float) -> bytes | None:
        """Whatever is available within ``timeout``; b"" at end of file, None on timeout."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        try:
            data = os.read(self.fd, 65536)
        except OSError as exc:  # EIO: every slave descriptor is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        self.transcript = (self.transcript + data)[-8192:]
        return data

    def expect(self, pattern: re.Pattern[bytes], timeout: float, what: str) -> None:
        buffer = b""
        end = time.monotonic() + timeout
        while not pattern.search(buffer):
            left = end - time.monotonic()
            data = self._read(max(0.0, left)) if left > 0 else None
            if data is None:
                raise TimeoutError(f"{self.name}: no {what} after {timeout:.0f} s; {self.tail()}")
            if data == b"":
                raise RuntimeError(f"{self.name}: the session ended before {what}; {self.tail()}")
            buffer = (buffer + data)[-4096:]

    def drain(self, quiet: float = 0.3, limit: float = 5.0) -> None:
        """Read until nothing arrives for ``quiet`` seconds (at most ``limit`` seconds)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            data = self._read(quiet)
            if not data:
                return

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def tail(self) -> str:
        return f"last output: {self.transcript[-400:]!r}"

    # ---- the benchmark --------------------------------------------------------------------

    def start_cat(self, *, type_command: bool) -> None:
        """Get the remote end to a raw-mode ``cat`` and check the local end is raw too."""
        if type_command:
            # Typed-ahead input is kept by both clients, so an unrecognised prompt only costs
            # PROMPT_TIMEOUT; the marker below is what proves the command ran.
            with contextlib.suppress(TimeoutError):
                self.expect(PROMPT, PROMPT_TIMEOUT, "shell prompt")
            self.write(REMOTE_COMMAND + b"\r")
        self.expect(MARKER, SETUP_TIMEOUT, "raw-mode marker")
        self.drain()
        # Linux applies termios requests on a master to its slave: this is the client's tty.
        lflag = termios.tcgetattr(self.fd)[3]
        if lflag & (termios.ECHO | termios.ICANON):
            raise RuntimeError(f"{self.name}: the local terminal is not in raw mode")

    def round_trip(self, byte: bytes) -> int:
        """Nanoseconds from writing one byte to reading it back."""
        t0 = time.perf_counter_ns()
        os.write(self.fd, byte)
        got = b""
        while not got:
            ready, _, _ = select.select([self.fd], [], [], SAMPLE_TIMEOUT)
            if not ready:
                raise TimeoutError(f"{self.name}: {byte!r} did not come back; {self.tail()}")
            got = os.read(self.fd, 64)
        elapsed = time.perf_counter_ns() - t0
        if got != byte:
            # A late extra byte would make the next sample too short: stop rather than guess.
            raise RuntimeError(f"{self.name}: sent {byte!r}, read back {got!r}")
        return elapsed

    # ---- stopping -------------------------------------------------------------------------

    def close(self, shell: bool, polite: bool = True) -> None:
        """Ctrl-C for ``cat`` and ``exit`` for the shell (when ``polite``), then SIGTERM and
        SIGKILL to the client's process group for whatever is still running."""
        if polite and self.status is None:
            with contextlib.suppress(OSError):
                self.write(b"\x03")
                if shell:
                    with contextlib.suppress(TimeoutError, RuntimeError):
                        self.expect(PROMPT, 5, "prompt after Ctrl-C")
                    self.write(b"exit\r")
            self._wait(5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, sig)  # pty.fork made the child a session leader
                self._wait(3)
        os.close(self.fd)

    def _wait(self, timeout: float) -> None:
        """Reap the child within ``timeout`` seconds, reading its output meanwhile."""
        end = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() >= end:
                return
            else:
                data: bytes | None = b""
                with contextlib.suppress(OSError):
                    data = self._read(0.05)
                if data == b"":  # end of file: select would not wait any more
                    time.sleep(0.01)


@dataclass(frozen=True)
class EchoResult:
    hatchway: Summary
    ssh: Summary
    local: Summary
    gap_ms: float

    @property
    def p50_ratio(self) -> float:
        return ratio(self.hatchway.median, self.ssh.median)

    @property
    def p99_ratio(self) -> float:
        return ratio(self.hatchway.p99, self.ssh.p99)


def run(
    hw: HatchwayEnv, sshd: SshServer, samples: int, warmup: int, gap_ms: float = GAP_MS
) -> EchoResult:
    env = dict(hw.env)
    env["TERM"] = "xterm"
    sessions: list[tuple[PtySession, bool]] = []
    polite = False  # interrupted or failed: no Ctrl-C and exit, signals at once
    try:
        hatchway = PtySession("hatchway", [hw.hatchway, "start-session", "--target", hw.node], env)
        sessions.append((hatchway, True))
        ssh = PtySession("ssh", sshd.ssh_command("-tt"), env)
        sessions.append((ssh, True))
        local = PtySession("local", ["sh", "-c", REMOTE_COMMAND.decode()], env)
        sessions.append((local, False))
        hatchway.start_cat(type_command=True)
        ssh.start_cat(type_command=True)
        local.start_cat(type_command=False)

        order = [hatchway, ssh, local]
        times: dict[str, list[int]] = {s.name: [] for s in order}
        for i in range(warmup + samples):
            byte = ALPHABET[i % len(ALPHABET) : i % len(ALPHABET) + 1]
            rotation = order[i % 3 :] + order[: i % 3]
            for session in rotation:
                elapsed = session.round_trip(byte)
                if i >= warmup:
                    times[session.name].append(elapsed)
                time.sleep(gap_ms / 1000.0)  # let trailing work (acknowledgements) settle
        polite = True
    finally:
        for session, shell in reversed(sessions):
            session.close(shell, polite)

    def summary(name: str) -> Summary:
        return Summary.of([ns / 1000.0 for ns in times[name]])

    return EchoResult(summary("hatchway"), summary("ssh"), summary("local"), gap_ms)


def report(result: EchoResult) -> str:
    h, s, loc = result.hatchway, result.ssh, result.local
    lines = [
        f"echo round trip ({h.n} samples each, interleaved, {result.gap_ms:g} ms apart)",
        "                                       p50      p90      p99",
        f"  hatchway start-session          {h.median:8.0f} µs {h.p90:8.0f} {h.p99:8.0f}",
        f"  ssh -tt (anchor)                {s.median:8.0f} µs {s.p90:8.0f} {s.p99:8.0f}",
        f"  local pty + cat (context)       {loc.median:8.0f} µs {loc.p90:8.0f} {loc.p99:8.0f}",
        f"  ratio hatchway/ssh  p50 {result.p50_ratio:5.2f}   p99 {result.p99_ratio:5.2f}"
        f"   -> p50 {verdict(result.p50_ratio, AIM, FLOOR)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="measured bytes per client")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up bytes per client")
    parser.add_argument(
        "--gap-ms", type=float, default=GAP_MS, help=f"pause after each sample ({GAP_MS:g})"
    )
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    hatchway_binary()
    ensure_sshd()
    print(machine_line(), flush=True)
    with CpuWatch() as cpu, openssh_server() as sshd, hatchway_cluster() as hw:
        result = run(hw, sshd, max(1, args.samples), max(0, args.warmup), max(0.0, args.gap_ms))
    print(report(result))
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
