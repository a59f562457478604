"""Throughput: bytes through ``hatchway port-forward`` and shell output, against OpenSSH.

**Port forwarding.** One sink server on 127.0.0.1 (this process, a thread per connection)
reads each connection to its end, checks every byte against the pattern it was sent (1 MiB of
random bytes, repeated), then answers with the count and closes. Two tunnels lead to it:
``hatchway port-forward --target NODE --remote-port SINK --local-port 0`` (TLS to the server,
the agent dials the sink) and ``ssh -N -L PORT:127.0.0.1:SINK`` against a private sshd (its
default cipher). Through each, ``--mib`` MiB (1 GiB by default) is sent over one connection,
then the same total over ``--parallel`` connections at once (16 by default, each a share); a
transfer is timed from before the first connect until every sender has the sink's answer (all
bytes arrived; half-close carries the end of the data). Prints MB/s (10^6 bytes/s), the
hatchway/ssh ratio (higher is better: floor ≥ 0.5, aim ≥ 1.0) and the CPU seconds each process
(client, server, agent; ssh, sshd) spent per GiB.

**Shell output.** ``head -c N /dev/zero | base64 -w0`` (the issue's command, N = 200,000,000
by default: 266.7 MB of output) typed into an interactive shell through ``hatchway
start-session`` and through ``ssh -tt``, each client in its own pseudo-terminal as in
bench_echo.py; timed from typing the command until the end marker printed after it arrives,
with every byte read (select + os.read, as a terminal emulator does). The same command in a
local pty (no network) is shown for context.

Never asserts on time; a failing transfer (wrong count, corrupted bytes, a tunnel that dies) is
an error.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench_echo import PROMPT, PtySession
from common import (
    CpuWatch,
    exit_cleanly_on_sigterm,
    free_port,
    machine_line,
    port_open,
    ratio,
    stop_process,
    tail,
    wait_for,
)
from hatchway_env import HatchwayEnv, hatchway_binary, hatchway_cluster
from sshd import HOST, SSHD, SshServer, ensure_sshd, openssh_server

AIM = 1.0  # hatchway/ssh throughput, higher is better
FLOOR = 0.5
MIB = 1 << 20
BLOCK = MIB  # the pattern: BLOCK random bytes, repeated
CHUNK = 256 * 1024  # bytes per send/recv
IO_TIMEOUT = 120.0  # no progress for this long on one connection: the tunnel is broken
WARMUP_MIB = 16
LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
REPLY = struct.Struct("!QB")  # bytes received, 1 if every byte matched the pattern
SHELL_BYTES = 200_000_000
SHELL_AIM = 1.0  # "at least ssh -tt's rate"
SHELL_TIMEOUT = 900.0
DONE = re.compile(rb"BENCH_DONE")
CLK_TCK = float(os.sysconf("SC_CLK_TCK"))


def higher_verdict(value: float, aim: float = AIM, floor: float = FLOOR) -> str:
    """Which of the issue's targets a throughput ratio meets (higher is better)."""
    if aim == floor:
        return f"target (≥ {aim:g}) {'met' if value >= aim else 'NOT met'}"
    if value >= aim:
        return f"aim met (≥ {aim:g})"
    if value >= floor:
        return f"floor met (≥ {floor:g}), aim (≥ {aim:g}) not met"
    return f"NEITHER met (floor ≥ {floor:g})"


# ---- CPU time of process trees ------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    # fields[0] is the state; ppid is field 4, utime..cstime are fields 14-17 of stat(5).
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / CLK_TCK


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every descendant (living or reaped by them)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total


def own_children() -> dict[str, int]:
    """This process's children by role: hatchway server, agent; sshd."""
    roles: dict[str, int] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (st := _stat(int(entry))) is None or st[0] != me:
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if b"server" in argv and b"--data-dir" in argv:
            roles["server"] = int(entry)
        elif b"agent" in argv and b"run" in argv:
            roles["agent"] = int(entry)
        elif exe == SSHD:  # sshd rewrites its command line ("sshd: … [listener]")
            roles["sshd"] = int(entry)
    return roles


class CpuMeter:
    """CPU seconds that named process trees spend between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        self.before["bench"] = time.process_time()

    def stop(self) -> None:
        self.used = {name: tree_cpu(pid) - self.before[name] for name, pid in self.pids.items()}
        # This process: the senders and the sink, or the terminal reader.
        self.used["bench"] = time.process_time() - self.before["bench"]


# ---- the sink and the senders ----------------------------------------------------------------

PATTERN = os.urandom(BLOCK)
PATTERN2 = memoryview(PATTERN * 2)  # any slice of ≤ BLOCK bytes at any offset, without copies


class Sink:
    """Counts and checks what each connection sends, answers REPLY at its end and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0), backlog=256)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, name="sink", daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(IO_TIMEOUT)
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            total, intact = 0, True
            while n := conn.recv_into(view):
                if intact:
                    offset = total % BLOCK
                    intact = bytes(view[:n]) == PATTERN2[offset : offset + n]
                total += n
            conn.sendall(REPLY.pack(total, int(intact)))

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(5)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            break
        data += part
    return data


def send_through(port: int, nbytes: int) -> None:
    """Send ``nbytes`` of the pattern to ``port``, half-close, check the sink's answer."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
        sent = 0
        while sent < nbytes:
            offset = sent % BLOCK
            n = min(CHUNK, nbytes - sent)
            sock.sendall(PATTERN2[offset : offset + n])
            sent += n
        sock.shutdown(socket.SHUT_WR)
        reply = _recv_exactly(sock, REPLY.size)
    if len(reply) != REPLY.size:
        raise RuntimeError(f"the tunnel closed without the sink's answer ({reply!r})")
    count, intact = REPLY.unpack(reply)
    if count != nbytes or not intact:
        raise RuntimeError(
            f"the sink received {count} of {nbytes} bytes"
            + ("" if intact else ", not the bytes that were sent")
        )


def transfer(port: int, total: int, connections: int) -> float:
    """Seconds to get ``total`` bytes to the sink over ``connections`` concurrent ones."""
    base, extra = divmod(total, connections)
    shares = [base + (1 if i < extra else 0) for i in range(connections)]
    t0 = time.perf_counter()
    if connections == 1:
        send_through(port, total)
    else:
        with ThreadPoolExecutor(connections) as pool:
            for future in [pool.submit(send_through, port, share) for share in shares]:
                future.result()
    return time.perf_counter() - t0


# ---- the tunnels ---------------------------------------------------------------------------


@dataclass
class Tunnel:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    cpu: dict[str, int]  # process trees whose CPU time this tunnel costs

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{tail(self.log)}")


def _stop_tunnel(proc: subprocess.Popen[bytes], interrupt: bool) -> None:
    """Ctrl-C first where that is the documented way to end it, then SIGTERM/SIGKILL."""
    if interrupt and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    stop_process(proc)


@contextmanager
def hatchway_tunnel(hw: HatchwayEnv, sink_port: int, log: Path) -> Iterator[Tunnel]:
    args = [hw.hatchway, "port-forward", "--target", hw.node, "--remote-port", str(sink_port),
            "--local-port", "0"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=hw.env,
            start_new_session=True,
        )  # fmt: skip
    try:

        def listening() -> int | None:
            if proc.poll() is not None:
                raise RuntimeError(f"hatchway port-forward exited {proc.returncode}:\n{tail(log)}")
            found = LISTENING.search(log.read_bytes())
            return int(found.group(1)) if found else None

        port = wait_for(listening, 30, "hatchway port-forward to listen")
        roles = own_children()
        cpu = {"client": proc.pid, "server": roles["server"], "agent": roles["agent"]}
        yield Tunnel("hatchway port-forward", port, proc, log, cpu)
    finally:
        _stop_tunnel(proc, interrupt=True)
        if proc.returncode != 0:  # Ctrl-C ends the session cleanly: exit status 0
            sys.stderr.write(
                f"note: hatchway port-forward exited {proc.returncode} on Ctrl-C:\n{tail(log, 5)}\n"
            )


@contextmanager
def ssh_tunnel(sshd: SshServer, sink_port: int, log: Path) -> Iterator[Tunnel]:
    port = free_port()
    args = sshd.ssh_command("-N", "-o", "ExitOnForwardFailure=yes", "-L",
                            f"{HOST}:{port}:{HOST}:{sink_port}")  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"ssh -N -L exited {proc.returncode}:\n{tail(log)}")
            return port_open(port)  # the sink answers this empty connection with a count of 0

        wait_for(listening, 30, "ssh -L to listen")
        cpu = {"ssh": proc.pid, "sshd": own_children()["sshd"]}
        yield Tunnel("ssh -N -L", port, proc, log, cpu)
    finally:
        _stop_tunnel(proc, interrupt=False)


def ssh_cipher(sshd: SshServer) -> str:
    """The cipher ssh negotiates with the private sshd by default (from ``ssh -v``)."""
    result = subprocess.run(
        [*sshd.ssh_command("-v"), "true"], capture_output=True, timeout=30, check=False
    )
    found = re.search(rb"kex: client->server cipher: (\S+)", result.stderr)
    return found.group(1).decode() if found else "unknown"


# ---- port-forward measurement ------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    tunnel: str
    connections: int
    nbytes: int
    seconds: list[float]
    cpu: dict[str, float]  # CPU seconds per GiB, median over rounds

    @property
    def mb_s(self) -> float:
        return self.nbytes / statistics.median(self.seconds) / 1e6


@dataclass(frozen=True)
class ForwardResult:
    nbytes: int
    parallel: int
    cipher: str
    hatchway: list[Transfer]  # single, parallel (empty with --anchor-only)
    ssh: list[Transfer]

    def ratios(self) -> list[float]:
        if not self.hatchway:
            return []
        return [ratio(h.mb_s, s.mb_s) for h, s in zip(self.hatchway, self.ssh, strict=True)]


def measure(tunnel: Tunnel, nbytes: int, connections: int, rounds: int) -> Transfer:
    seconds: list[float] = []
    cpu: dict[str, list[float]] = {name: [] for name in [*tunnel.cpu, "bench"]}
    for _ in range(rounds):
        meter = CpuMeter(tunnel.cpu)
        meter.start()
        try:
            seconds.append(transfer(tunnel.port, nbytes, connections))
        except (OSError, RuntimeError) as exc:
            tunnel.check()
            raise RuntimeError(f"{tunnel.name}: {exc}\n{tail(tunnel.log)}") from exc
        meter.stop()
        for name, used in meter.used.items():
            cpu[name].append(used * (1 << 30) / nbytes)
    return Transfer(
        tunnel.name,
        connections,
        nbytes,
        seconds,
        {name: statistics.median(v) for name, v in cpu.items()},
    )


def run_forward(
    hw: HatchwayEnv | None, sshd: SshServer, root: Path, mib: int, parallel: int, rounds: int
) -> ForwardResult:
    """Both tunnels (only ssh's when ``hw`` is None), single then parallel, order alternating."""
    nbytes = mib * MIB
    sink = Sink()
    try:
        with ExitStack() as stack:
            tunnels: list[Tunnel] = []
            if hw is not None:
                tunnels.append(stack.enter_context(hatchway_tunnel(hw, sink.port, root / "pf.log")))
            tunnels.append(stack.enter_context(ssh_tunnel(sshd, sink.port, root / "ssh-L.log")))
            warm = min(WARMUP_MIB, mib) * MIB
            for tunnel in tunnels:
                transfer(tunnel.port, warm, 1)
                transfer(tunnel.port, warm, parallel)
            results: dict[str, list[Transfer]] = {tunnel.name: [] for tunnel in tunnels}
            for i, connections in enumerate((1, parallel)):
                for tunnel in tunnels if i % 2 == 0 else tunnels[::-1]:
                    results[tunnel.name].append(measure(tunnel, nbytes, connections, rounds))
                    print(f"  {describe(results[tunnel.name][-1])}", flush=True)
            for tunnel in tunnels:
                tunnel.check()
    finally:
        sink.close()
    return ForwardResult(
        nbytes,
        parallel,
        ssh_cipher(sshd),
        results[tunnels[0].name] if hw is not None else [],
        results[tunnels[-1].name],
    )


def describe(t: Transfer) -> str:
    what = "1 connection" if t.connections == 1 else f"{t.connections} connections"
    cpu = ", ".join(f"{name} {s:.1f}" for name, s in t.cpu.items())
    return (
        f"{t.tunnel:<22} {what:<15} {t.mb_s:8.1f} MB/s  "
        f"({statistics.median(t.seconds):6.2f} s; CPU s/GiB: {cpu})"
    )


def report_forward(result: ForwardResult) -> str:
    gib = result.nbytes / (1 << 30)
    lines = [
        f"port forwarding: {result.nbytes / MIB:.0f} MiB ({gib:g} GiB) per transfer to a local "
        f"sink, TLS on; ssh cipher {result.cipher}",
    ]
    if not result.hatchway:
        lines.extend(f"  {describe(s)}" for s in result.ssh)
        lines.append("  (anchor only: no hatchway figures, no ratio)")
    for h, s, r in zip(result.hatchway, result.ssh, result.ratios(), strict=False):
        lines.append(f"  {describe(h)}")
        lines.append(f"  {describe(s)}")
        what = "single" if h.connections == 1 else f"{h.connections} parallel"
        lines.append(f"  ratio hatchway/ssh, {what}: {r:5.2f}   -> {higher_verdict(r)}")
    return "\n".join(lines)


# ---- shell output rate -------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    name: str
    nbytes: int  # bytes read from the terminal between typing the command and the marker
    seconds: float
    cpu: dict[str, float]

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


def shell_command(nbytes: int) -> bytes:
    # ``%s`` keeps the marker out of the echo of the command line itself.
    return f"head -c {nbytes} /dev/zero | base64 -w0; printf '\\nBENCH_%s\\n' DONE".encode()


def read_until_done(session: PtySession, timeout: float) -> int:
    """Read everything the terminal shows until the end marker; returns the byte count."""
    total, last = 0, b""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        ready, _, _ = select.select([session.fd], [], [], max(0.0, left))
        if not ready:
            raise TimeoutError(f"{session.name}: no end marker after {timeout:.0f} s")
        try:
            data = os.read(session.fd, 65536)
        except OSError:
            data = b""
        if not data:
            raise RuntimeError(f"{session.name}: the session ended before the end marker")
        total += len(data)
        window = last + data
        if DONE.search(window):
            return total
        last = window[-16:]


def shell_output(
    name: str,
    args: Sequence[str],
    env: dict[str, str],
    nbytes: int,
    cpu: Callable[[int], dict[str, int]],
    *,
    shell: bool,
) -> Output:
    session = PtySession(name, args, env)
    polite = False
    try:
        if shell:
            with contextlib.suppress(TimeoutError):
                session.expect(PROMPT, 10, "shell prompt")
            session.drain(quiet=0.2)
        meter = CpuMeter(cpu(session.pid))
        meter.start()
        t0 = time.perf_counter()
        if shell:
            session.write(shell_command(nbytes) + b"\r")
        got = read_until_done(session, SHELL_TIMEOUT)
        seconds = time.perf_counter() - t0
        meter.stop()
        polite = True
    finally:
        session.close(shell, polite)
    per_gib = {k: v * (1 << 30) / got for k, v in meter.used.items()}
    return Output(name, got, seconds, per_gib)


def run_shell(hw: HatchwayEnv, sshd: SshServer, nbytes: int) -> list[Output]:
    env = dict(hw.env)
    env["TERM"] = "xterm"
    roles = own_children()
    results = [
        shell_output(
            "hatchway start-session",
            [hw.hatchway, "start-session", "--target", hw.node],
            env,
            nbytes,
            lambda pid: {"client": pid, "server": roles["server"], "agent": roles["agent"]},
            shell=True,
        ),
        shell_output(
            "ssh -tt",
            sshd.ssh_command("-tt"),
            env,
            nbytes,
            lambda pid: {"ssh": pid, "sshd": roles["sshd"]},
            shell=True,
        ),
        shell_output(
            "local pty (context)",
            ["sh", "-c", shell_command(nbytes).decode()],
            env,
            nbytes,
            lambda pid: {"sh": pid},
            shell=False,
        ),
    ]
    return results


def report_shell(nbytes: int, results: list[Output]) -> str:
    hatch, ssh = results[0], results[1]
    r = ratio(hatch.mb_s, ssh.mb_s)
    lines = [
        f"shell output: head -c {nbytes} /dev/zero | base64 -w0 "
        f"({math.ceil(nbytes / 3) * 4 / 1e6:.1f} MB of output) in an interactive shell",
    ]
    for o in results:
        cpu = ", ".join(f"{name} {s:.1f}" for name, s in o.cpu.items())
        lines.append(f"  {o.name:<24} {o.mb_s:8.1f} MB/s  ({o.seconds:6.2f} s; CPU s/GiB: {cpu})")
    lines.append(f"  ratio hatchway/ssh: {r:5.2f}   -> {higher_verdict(r, SHELL_AIM, SHELL_AIM)}")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB per transfer (1024)")
    parser.add_argument("--parallel", type=int, default=16, help="parallel connections (16)")
    parser.add_argument("--rounds", type=int, default=1, help="transfers of each kind (1)")
    parser.add_argument(
        "--shell-bytes", type=int, default=SHELL_BYTES, help=f"head -c N ({SHELL_BYTES})"
    )
    parser.add_argument("--no-forward", action="store_true", help="skip port forwarding")
    parser.add_argument("--no-shell", action="store_true", help="skip the shell output rate")
    parser.add_argument(
        "--anchor-only",
        action="store_true",
        help="port forwarding through ssh alone (while `hatchway port-forward` is missing)",
    )
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    hatchway_binary()
    ensure_sshd()
    print(machine_line(), flush=True)
    with (
        CpuWatch() as cpu,
        openssh_server() as sshd,
        hatchway_cluster() as hw,
        temporary_directory() as root,
    ):
        if not args.no_shell:
            shell = run_shell(hw, sshd, max(1, args.shell_bytes))
            print(report_shell(max(1, args.shell_bytes), shell) + "\n", flush=True)
        if not args.no_forward:
            forward = run_forward(
                None if args.anchor_only else hw,
                sshd,
                root,
                max(1, args.mib),
                max(2, args.parallel),
                max(1, args.rounds),
            )
            print(report_forward(forward), flush=True)
    print(cpu.line())
    return 0


@contextmanager
def temporary_directory() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-forward-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
