"""Session start: a whole CLI command that opens a shell and leaves, against ``ssh host true``.

Hatchway: ``sh -c "printf 'exit\\n' | hatchway start-session --target NODE"`` (the StartSession
call, the data channel, the handshake, a login shell on the node, its exit status back).
Anchor: ``ssh <opts> 127.0.0.1 true`` against a private sshd (a full connection each time: key
exchange, public-key authentication, a session channel, ``true``).

Runs are interleaved (the order alternates every round) after warm-up runs of each; prints
median, p90 and mean in ms and the hatchway/ssh ratio of medians. Never asserts on time.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common import CpuWatch, Summary, exit_cleanly_on_sigterm, machine_line, ratio, verdict
from hatchway_env import HatchwayEnv, hatchway_binary, hatchway_cluster
from sshd import SshServer, ensure_sshd, openssh_server

AIM = 0.8
FLOOR = 1.5
RUN_TIMEOUT = 60.0


@dataclass(frozen=True)
class StartResult:
    hatchway: Summary
    ssh: Summary
    version: Summary

    @property
    def ratio(self) -> float:
        return ratio(self.hatchway.median, self.ssh.median)


def timed(args: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one command in ms; a failing command is an error, not a sample."""
    t0 = time.perf_counter()
    result = subprocess.run(
        list(args),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    elapsed = (time.perf_counter() - t0) * 1000.0
    if result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(args)} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return elapsed


def run(hw: HatchwayEnv, sshd: SshServer, runs: int, warmup: int) -> StartResult:
    hatchway_cmd = [
        "sh",
        "-c",
        f"printf 'exit\\n' | {shlex.quote(hw.hatchway)} start-session --target {hw.node}",
    ]
    ssh_cmd = [*sshd.ssh_command(), "true"]
    version_cmd = [hw.hatchway, "--version"]

    def hatchway_once() -> float:
        return timed(hatchway_cmd, hw.env)

    def ssh_once() -> float:
        return timed(ssh_cmd)

    for _ in range(warmup):
        hatchway_once()
        ssh_once()
        timed(version_cmd, hw.env)

    hatchway_ms: list[float] = []
    ssh_ms: list[float] = []
    version_ms: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            hatchway_ms.append(hatchway_once())
            ssh_ms.append(ssh_once())
        else:
            ssh_ms.append(ssh_once())
            hatchway_ms.append(hatchway_once())
        version_ms.append(timed(version_cmd, hw.env))
    return StartResult(Summary.of(hatchway_ms), Summary.of(ssh_ms), Summary.of(version_ms))


def report(result: StartResult) -> str:
    h, s, v = result.hatchway, result.ssh, result.version
    lines = [
        f"session start ({h.n} runs each, interleaved)            median      p90     mean",
        f"  hatchway start-session + exit   {h.median:8.1f} ms {h.p90:8.1f} {h.mean:8.1f}",
        f"  ssh 127.0.0.1 true (anchor)     {s.median:8.1f} ms {s.p90:8.1f} {s.mean:8.1f}",
        f"  hatchway --version (context)    {v.median:8.1f} ms {v.p90:8.1f} {v.mean:8.1f}",
        f"  ratio hatchway/ssh of medians   {result.ratio:8.2f}   "
        f"-> {verdict(result.ratio, AIM, FLOOR)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="measured runs of each (30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs of each (3)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    hatchway_binary()
    ensure_sshd()
    print(machine_line(), flush=True)
    with CpuWatch() as cpu, openssh_server() as sshd, hatchway_cluster() as hw:
        result = run(hw, sshd, max(1, args.runs), max(0, args.warmup))
    print(report(result))
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
