"""Run the benchmarks the issues name, in one run, and summarise.

Session start and keystroke echo against one private sshd and one Hatchway server + agent (the
anchor: OpenSSH on this machine, same run); then, on the same server, echo while 64 clients
guess activation codes; then a server restarted under a live session (its own server).

/tmp/hv/bin/python benchmarks/run_all.py [--runs 30] [--samples 500] [--guessers 64]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bench_echo
import bench_guessing
import bench_restart
import bench_start
from common import CpuWatch, exit_cleanly_on_sigterm, machine_line, verdict
from hatchway_env import hatchway_binary, hatchway_cluster
from sshd import ensure_sshd, openssh_server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="session-start runs of each (30)")
    parser.add_argument("--start-warmup", type=int, default=3, help="warm-up starts (3)")
    parser.add_argument("--samples", type=int, default=500, help="echo samples per client (500)")
    parser.add_argument("--echo-warmup", type=int, default=50, help="warm-up echoes (50)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=bench_echo.GAP_MS,
        help=f"pause after each echo sample ({bench_echo.GAP_MS:g})",
    )
    parser.add_argument("--guessers", type=int, default=64, help="activation guessers (64)")
    parser.add_argument("--restarts", type=int, default=4, help="server restarts (4)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    hatchway_binary()
    ensure_sshd()
    print(machine_line(), flush=True)
    began = time.monotonic()
    with CpuWatch() as cpu, openssh_server() as sshd, hatchway_cluster() as hw:
        start = bench_start.run(hw, sshd, max(1, args.runs), max(0, args.start_warmup))
        print(bench_start.report(start) + "\n", flush=True)
        echo = bench_echo.run(
            hw, sshd, max(1, args.samples), max(0, args.echo_warmup), max(0.0, args.gap_ms)
        )
        print(bench_echo.report(echo) + "\n", flush=True)
        guessing = bench_guessing.run(
            hw, max(1, args.guessers), max(10, args.samples // 2), max(0.0, args.gap_ms)
        )
        print(guessing + "\n", flush=True)
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-restart-"))
    try:
        restarts = bench_restart.run(root, 4000, max(1, args.restarts))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(bench_restart.report(*restarts) + "\n", flush=True)
    print(f"summary (anchor: OpenSSH on this machine, same run; {time.monotonic() - began:.0f} s)")
    start_verdict = verdict(start.ratio, bench_start.AIM, bench_start.FLOOR)
    print(
        f"  session start  hatchway {start.hatchway.median:6.1f} ms  ssh {start.ssh.median:6.1f} ms"
        f"  ratio {start.ratio:4.2f}  {start_verdict}"
    )
    echo_verdict = verdict(echo.p50_ratio, bench_echo.AIM, bench_echo.FLOOR)
    print(
        f"  echo p50       hatchway {echo.hatchway.median:6.0f} µs  ssh {echo.ssh.median:6.0f} µs"
        f"  ratio {echo.p50_ratio:4.2f}  {echo_verdict}"
    )
    print(
        f"  echo p99       hatchway {echo.hatchway.p99:6.0f} µs  ssh {echo.ssh.p99:6.0f} µs"
        f"  ratio {echo.p99_ratio:4.2f}"
    )
    results, output, status = restarts
    if results:
        port = sorted(r.port_ms for r in results)[len(results) // 2]
        health = sorted(r.healthz_ms for r in results)[len(results) // 2]
        print(
            f"  restart        port open {port:5.0f} ms  /healthz {health:5.0f} ms (median of "
            f"{len(results)}); {output.line()}; client exit {status}"
        )
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
