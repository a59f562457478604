"""Small helpers shared by the benchmarks: ports, waiting, statistics, clean exits."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # One is enough: a second signal must not cut the clean-up short (SIGKILL still works).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so every ``finally`` and context manager runs."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGHUP, _raise_on_sigterm)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p90: float
    p99: float
    mean: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            n=len(values),
            median=statistics.median(values),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            mean=statistics.fmean(values),
            minimum=min(values),
            maximum=max(values),
        )


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def verdict(value: float, aim: float, floor: float) -> str:
    """Which of the issue's targets a ratio meets (lower is better)."""
    if value <= aim:
        return f"aim met (≤ {aim:g})"
    if value <= floor:
        return f"floor met (≤ {floor:g}), aim (≤ {aim:g}) not met"
    return f"NEITHER met (floor ≤ {floor:g})"


BUSY_FRACTION = 0.15  # CPU share used by others before we start that earns a warning


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all CPUs that were busy during ``seconds`` (None where /proc is missing)."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else None


def machine_line(idle_check: bool = True) -> str:
    """One line about where the figures come from; warns when others keep the CPUs busy."""
    kernel = os.uname()
    cpus = os.cpu_count() or 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    line = f"{kernel.sysname} {kernel.release} on {kernel.machine}, {cpus} CPUs, load {load}"
    busy = busy_fraction() if idle_check else None
    if busy is not None:
        line += f", {busy:.0%} busy before start"
        if busy >= BUSY_FRACTION:
            line += "\n  note: other processes keep this machine busy; expect noisier figures"
    return line


class CpuWatch:
    """How much CPU processes other than ours (and our children) used while we measured.

    Total busy time from /proc/stat minus our own and our reaped children's CPU time (the
    server, agent, sshd and clients are all reaped before ``__exit__`` when the block stops
    them). Clock-tick and accounting granularity make it approximate: a noise indicator.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None
        self._end: tuple[float, float, float] | None = None

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        tick = float(os.sysconf("SC_CLK_TCK"))
        busy, _total = _cpu_times()
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return time.monotonic(), busy / tick, own

    def __enter__(self) -> CpuWatch:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._end = self._snapshot()

    def others_share(self) -> float | None:
        """Others' CPU time as a share of all CPUs over the block's wall time."""
        if self._start is None or self._end is None:
            return None
        wall = (self._end[0] - self._start[0]) * (os.cpu_count() or 1)
        others = (self._end[1] - self._start[1]) - (self._end[2] - self._start[2])
        return max(0.0, others / wall) if wall > 0 else None

    def line(self) -> str:
        share = self.others_share()
        if share is None:
            return "other processes' CPU use during the run: unknown"
        note = "  (noisy: compare runs)" if share >= BUSY_FRACTION else ""
        return f"other processes used {share:.0%} of the CPUs during the run{note}"
