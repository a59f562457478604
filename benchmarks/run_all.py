"""Run the benchmarks the issues name, in one run, and summarise.

Session start and keystroke echo against one private sshd and one Hatchway server + agent (the
anchor: OpenSSH on this machine, same run); then, on the same server, echo while 64 clients
guess activation codes; `hatchway exec -- true`; shell output and 1 GiB through port
forwarding (``--no-throughput`` skips those two, the longest); then a server restarted under a
live session (its own server); then the audit trail's recording rate (``bench_audit.py``).

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

import bench_audit
import bench_echo
import bench_exec
import bench_forward
import bench_guessing
import bench_restart
import bench_start
from common import CpuWatch, exit_cleanly_on_sigterm, machine_line, ratio, verdict
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
    parser.add_argument("--exec-runs", type=int, default=30, help="exec runs of each (30)")
    parser.add_argument(
        "--forward-mib", type=int, default=1024, help="MiB through port forwarding (1024)"
    )
    parser.add_argument(
        "--shell-bytes",
        type=int,
        default=bench_forward.SHELL_BYTES,
        help=f"shell output: head -c N ({bench_forward.SHELL_BYTES})",
    )
    parser.add_argument(
        "--no-throughput", action="store_true", help="skip shell output and port forwarding"
    )
    parser.add_argument(
        "--audit-seconds", type=float, default=5.0, help="each audit measurement (5; 0 skips)"
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
        guessing = bench_guessing.run(
            hw, max(1, args.guessers), max(10, args.samples // 2), max(0.0, args.gap_ms)
        )
        print(guessing + "\n", flush=True)
        execs = bench_exec.run(hw, sshd, max(1, args.exec_runs), max(0, args.start_warmup))
        print(bench_exec.report(execs) + "\n", flush=True)
        shell: list[bench_forward.Output] = []
        forward: bench_forward.ForwardResult | None = None
        if not args.no_throughput:
            shell_bytes = max(1, args.shell_bytes)
            shell = bench_forward.run_shell(hw, sshd, shell_bytes)
            print(bench_forward.report_shell(shell_bytes, shell) + "\n", flush=True)
            with bench_forward.temporary_directory() as logs:
                forward = bench_forward.run_forward(hw, sshd, logs, max(1, args.forward_mib), 16, 1)
            print(bench_forward.report_forward(forward) + "\n", flush=True)
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-restart-"))
    try:
        restarts = bench_restart.run(root, 4000, max(1, args.restarts))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(bench_restart.report(*restarts) + "\n", flush=True)
    audit = bench_audit.run(args.audit_seconds, 64, 16, 100_000) if args.audit_seconds > 0 else []
    print("\n".join(audit) + "\n", flush=True)
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
    if execs.hatchway is not None:
        exec_verdict = verdict(execs.ratio, bench_start.AIM, bench_start.FLOOR)
        print(
            f"  exec true      hatchway {execs.hatchway.median:6.1f} ms  "
            f"ssh {execs.ssh.median:6.1f} ms  ratio {execs.ratio:4.2f}  "
            f"(session start's targets: {exec_verdict})"
        )
    if shell:
        rate = ratio(shell[0].mb_s, shell[1].mb_s)
        aim = bench_forward.SHELL_AIM
        print(
            f"  shell output   hatchway {shell[0].mb_s:6.1f} MB/s ssh {shell[1].mb_s:6.1f} MB/s"
            f"  ratio {rate:4.2f}  {bench_forward.higher_verdict(rate, aim, aim)}"
        )
    if forward is not None:
        for h, s, r in zip(forward.hatchway, forward.ssh, forward.ratios(), strict=True):
            what = "forward 1 conn" if h.connections == 1 else f"forward {h.connections} conn"
            print(
                f"  {what:<14} hatchway {h.mb_s:6.1f} MB/s ssh {s.mb_s:6.1f} MB/s"
                f"  ratio {r:4.2f}  {bench_forward.higher_verdict(r)}"
            )
    results, output, status = restarts
    if results:
        port = sorted(r.port_ms for r in results)[len(results) // 2]
        health = sorted(r.healthz_ms for r in results)[len(results) // 2]
        print(
            f"  restart        port open {port:5.0f} ms  /healthz {health:5.0f} ms (median of "
            f"{len(results)}); {output.line()}; client exit {status}"
        )
    for line in audit[:2] + audit[3:5] + audit[6:]:
        print(f"  audit          {line}")
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
