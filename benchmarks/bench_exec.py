"""Non-interactive commands: ``hatchway exec NODE -- true`` against ``ssh host true``.

Hatchway: ``hatchway exec --target NODE -- true``, a new process each time: CLI start-up and
imports, StartSession with AWS-StartNonInteractiveCommand, the data channel, the handshake,
``true`` on the node without a terminal, its exit status back, process exit.
Anchor: ``ssh <opts> 127.0.0.1 true`` against a private sshd (a full connection each time).
Runs are interleaved (the order alternates every round) after warm-up runs of each; prints
median, p90 and mean in ms and the hatchway/ssh ratio of medians (the issue names no target
for it; session start's are shown).

Then, for context, the output rate of a command without a terminal: ``head -c N /dev/zero``
through ``hatchway exec`` and through ``ssh host`` (no ``-t``), stdout read through a pipe and
counted (a short count is an error). Never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench_start import AIM, FLOOR, timed
from common import CpuWatch, Summary, exit_cleanly_on_sigterm, machine_line, ratio, verdict
from hatchway_env import HatchwayEnv, hatchway_binary, hatchway_cluster
from sshd import SshServer, ensure_sshd, openssh_server

MIB = 1 << 20
OUTPUT_TIMEOUT = 600.0


@dataclass(frozen=True)
class ExecResult:
    hatchway: Summary | None  # None with --anchor-only
    ssh: Summary

    @property
    def ratio(self) -> float:
        return ratio(self.hatchway.median, self.ssh.median) if self.hatchway else float("nan")


def exec_command(hw: HatchwayEnv, *command: str) -> list[str]:
    return [hw.hatchway, "exec", "--target", hw.node, "--", *command]


def run(
    hw: HatchwayEnv, sshd: SshServer, runs: int, warmup: int, *, anchor_only: bool = False
) -> ExecResult:
    hatchway_cmd = exec_command(hw, "true")
    ssh_cmd = [*sshd.ssh_command(), "true"]

    def hatchway_once(into: list[float] | None = None) -> None:
        if not anchor_only:
            elapsed = timed(hatchway_cmd, hw.env)
            if into is not None:
                into.append(elapsed)

    for _ in range(warmup):
        hatchway_once()
        timed(ssh_cmd)
    hatchway_ms: list[float] = []
    ssh_ms: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            hatchway_once(hatchway_ms)
            ssh_ms.append(timed(ssh_cmd))
        else:
            ssh_ms.append(timed(ssh_cmd))
            hatchway_once(hatchway_ms)
    return ExecResult(Summary.of(hatchway_ms) if hatchway_ms else None, Summary.of(ssh_ms))


def report(result: ExecResult) -> str:
    h, s = result.hatchway, result.ssh
    lines = [f"exec `true` ({s.n} runs each, interleaved)               median      p90     mean"]
    if h is not None:
        lines.append(
            f"  hatchway exec -- true           {h.median:8.1f} ms {h.p90:8.1f} {h.mean:8.1f}"
        )
    lines.append(f"  ssh 127.0.0.1 true (anchor)     {s.median:8.1f} ms {s.p90:8.1f} {s.mean:8.1f}")
    if h is not None:
        lines.append(
            f"  ratio hatchway/ssh of medians   {result.ratio:8.2f}   "
            f"-> session start's targets: {verdict(result.ratio, AIM, FLOOR)}"
        )
    else:
        lines.append("  (anchor only: no hatchway figures, no ratio)")
    return "\n".join(lines)


def output_seconds(args: Sequence[str], nbytes: int, env: dict[str, str] | None = None) -> float:
    """Seconds for the whole command, its stdout read and counted through a pipe."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(args), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        total = 0
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            total += len(chunk)
        proc.wait(OUTPUT_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or total != nbytes:
        raise RuntimeError(
            f"{shlex.join(args)} exited {proc.returncode} after {total} of {nbytes} bytes: {stderr}"
        )
    return elapsed


@dataclass(frozen=True)
class OutputResult:
    nbytes: int
    hatchway: list[float]  # empty with --anchor-only
    ssh: list[float]

    def mb_s(self, seconds: list[float]) -> float:
        return self.nbytes / statistics.median(seconds) / 1e6 if seconds else float("nan")


def run_output(
    hw: HatchwayEnv, sshd: SshServer, nbytes: int, rounds: int, *, anchor_only: bool = False
) -> OutputResult:
    command = ["head", "-c", str(nbytes), "/dev/zero"]
    hatchway_cmd = exec_command(hw, *command)
    ssh_cmd = [*sshd.ssh_command(), shlex.join(command)]
    hatchway_s: list[float] = []
    ssh_s: list[float] = []
    for i in range(rounds):
        order = ["hatchway", "ssh"] if i % 2 == 0 else ["ssh", "hatchway"]
        for which in order:
            if which == "ssh":
                ssh_s.append(output_seconds(ssh_cmd, nbytes))
            elif not anchor_only:
                hatchway_s.append(output_seconds(hatchway_cmd, nbytes, hw.env))
    return OutputResult(nbytes, hatchway_s, ssh_s)


def report_output(result: OutputResult) -> str:
    h, s = result.mb_s(result.hatchway), result.mb_s(result.ssh)
    lines = [
        f"exec output: head -c {result.nbytes} /dev/zero, no terminal "
        f"(median of {len(result.ssh)}, whole command)",
    ]
    if result.hatchway:
        lines.append(f"  hatchway exec                   {h:8.1f} MB/s")
    lines.append(f"  ssh 127.0.0.1 (anchor)          {s:8.1f} MB/s")
    if result.hatchway:
        lines.append(f"  ratio hatchway/ssh              {ratio(h, s):8.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="measured runs of each (30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs of each (3)")
    parser.add_argument(
        "--output-mib", type=int, default=256, help="MiB of output for the rate, 0 skips (256)"
    )
    parser.add_argument("--output-rounds", type=int, default=3, help="output runs of each (3)")
    parser.add_argument(
        "--anchor-only", action="store_true", help="ssh alone (while `hatchway exec` is missing)"
    )
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    hatchway_binary()
    ensure_sshd()
    print(machine_line(), flush=True)
    with CpuWatch() as cpu, openssh_server() as sshd, hatchway_cluster() as hw:
        result = run(hw, sshd, max(1, args.runs), max(0, args.warmup), anchor_only=args.anchor_only)
        print(report(result), flush=True)
        if args.output_mib > 0:
            output = run_output(
                hw,
                sshd,
                args.output_mib * MIB,
                max(1, args.output_rounds),
                anchor_only=args.anchor_only,
            )
            print(report_output(output), flush=True)
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
