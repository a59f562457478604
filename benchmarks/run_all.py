"""Run every benchmark against one private sshd and one Hatchway server + agent; summarise.

/tmp/hv/bin/python benchmarks/run_all.py [--runs 30] [--samples 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import bench_echo
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
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
