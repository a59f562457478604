"""Server restart under a live session: how soon the server serves again, and nothing lost.

One session streams numbered lines (``line-1`` … ``line-N``) while the server is stopped —
alternately with SIGTERM (a clean shutdown) and SIGKILL — and started again on the same port and
data directory. For each restart it prints, from the moment the new process is spawned:

* **port**: until a TCP connection is accepted by the kernel (the server binds its port before
  it imports and sets up the rest, so a re-dial waits instead of being refused);
* **healthz**: until ``/healthz`` answers (the server serves again);
* **agent**: until the agent's data channel is attached again (the server's log says so);
* **session**: until both ends are back (the client resumed too).

AWS's plugin gives up after about 6 reconnect attempts (3–6 s), so the server must serve within
2 s of starting (docs/protocol.md §9.7, §12). At the end it checks the client's output: every line
exactly once (lost and doubled lines are counted), and the client's exit status. Never asserts
on time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Summary, exit_cleanly_on_sigterm, free_port, machine_line, stop_process, tail
from common import wait_for as _wait_for
from hatchway_env import hatchway_binary

AIM_MS = 2000.0  # the plugin's patience, with room to spare
POLL = 0.005


@dataclass(frozen=True)
class Restart:
    how: str
    port_ms: float
    healthz_ms: float
    agent_ms: float
    session_ms: float


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    return _wait_for(predicate, timeout, what, interval=POLL)


class Bench:
    """A server (restartable) and one agent in a temporary directory."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.binary = hatchway_binary()
        self.root = root
        self.stack = stack
        self.data_dir = root / "server"
        self.port = free_port()
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env["HATCHWAY_CONFIG"] = str(self.data_dir / "admin-profile.toml")
        self.env.pop("HATCHWAY_PROFILE", None)
        self.server_log = root / "server.log"
        self.server: subprocess.Popen[bytes] | None = None
        self._ctx: ssl.SSLContext | None = None

    def start_server(self) -> float:
        """Spawn the server; returns the moment it was spawned (perf_counter)."""
        listen = f"127.0.0.1:{self.port}"
        with open(self.server_log, "ab") as out:
            t0 = time.perf_counter()
            self.server = subprocess.Popen(
                [self.binary, "server", "--data-dir", str(self.data_dir), "--listen", listen],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env,
            )
        self.stack.callback(stop_process, self.server)
        return t0

    def port_open(self) -> bool:
        """Whether a TCP connection to the port is accepted (refused while nobody listens)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def healthy(self) -> bool:
        assert self.server is not None
        if self.server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{tail(self.server_log)}")
        ca = self.data_dir / "ca.pem"
        if self._ctx is None:
            if not ca.exists():
                return False
            self._ctx = ssl.create_default_context(cafile=str(ca))
        try:
            with urllib.request.urlopen(
                self.endpoint + "/healthz", context=self._ctx, timeout=1
            ) as r:
                return bool(json.load(r) == {"status": "ok"})
        except (OSError, ValueError):
            return False

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, env=self.env, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"hatchway {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout.decode()

    def start_agent(self) -> str:
        activation = json.loads(self.cli("activation", "create", "--output", "json"))
        state = self.root / "agent"
        node = self.cli(
            "agent", "register", "--endpoint", self.endpoint,
            "--ca-file", str(self.data_dir / "ca.pem"),
            "--activation-id", activation["ActivationId"],
            "--activation-code", activation["ActivationCode"],
            "--state-dir", str(state),
        ).strip()  # fmt: skip
        with open(self.root / "agent.log", "ab") as out:
            agent = subprocess.Popen(
                [self.binary, "agent", "run", "--state-dir", str(state)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env,
            )  # fmt: skip
        self.stack.callback(stop_process, agent)

        def online() -> bool:
            nodes = json.loads(self.cli("nodes", "--output", "json"))
            return any(
                n["InstanceId"] == node and n["PingStatus"] == "Online"
                for n in nodes["InstanceInformationList"]
            )

        _wait_for(online, 30, f"{node} to be Online", interval=0.2)
        return node

    def log_has(self, text: str, after: int) -> bool:
        with open(self.server_log, "rb") as f:
            f.seek(after)
            return text.encode() in f.read()


@dataclass(frozen=True)
class Output:
    """What the client printed, against ``line-1`` … ``line-<total>``."""

    total: int
    distinct: int
    lost: list[int]
    doubled: list[int]

    @classmethod
    def read(cls, path: Path, total: int) -> Output:
        seen = re.findall(rb"(?m)(?:^|\r)line-(\d+)\r?$", path.read_bytes())
        numbers = [int(n) for n in seen]
        distinct = set(numbers)
        lost = [i for i in range(1, total + 1) if i not in distinct]
        doubled = sorted({n for n in numbers if numbers.count(n) > 1}) if seen else []
        return cls(total, len(distinct), lost, doubled)

    def line(self) -> str:
        def some(values: list[int]) -> str:
            return f" ({', '.join(map(str, values[:5]))}{', …' if len(values) > 5 else ''})"

        return (
            f"output: {self.distinct} of {self.total} lines, {len(self.lost)} lost"
            f"{some(self.lost) if self.lost else ''}, {len(self.doubled)} doubled"
            f"{some(self.doubled) if self.doubled else ''}"
        )


def run(root: Path, lines: int, restarts: int) -> tuple[list[Restart], Output, int]:
    with ExitStack() as stack:
        bench = Bench(root, stack)
        bench.start_server()
        wait_for(bench.healthy, 30, "the server's /healthz")
        node = bench.start_agent()
        out = root / "client.out"
        with open(out, "wb") as stdout, open(root / "client.err", "wb") as stderr:
            client = subprocess.Popen(
                [bench.binary, "start-session", "--target", node],
                stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=bench.env,
            )  # fmt: skip
        stack.callback(stop_process, client)
        assert client.stdin is not None
        script = f"for i in $(seq 1 {lines}); do echo line-$i; sleep 0.005; done; exit\n"
        client.stdin.write(script.encode())
        client.stdin.close()

        def streamed(n: int) -> bool:
            return Output.read(out, lines).distinct >= n

        results: list[Restart] = []
        for i in range(restarts):
            wait_for(lambda i=i: streamed((i + 1) * lines // (restarts + 2)), 120, "output")
            if client.poll() is not None:
                break
            how = signal.SIGTERM if i % 2 == 0 else signal.SIGKILL
            assert bench.server is not None
            bench.server.send_signal(how)
            bench.server.wait(30)
            mark = bench.server_log.stat().st_size
            t0 = bench.start_server()
            wait_for(bench.port_open, 30, "the restarted server's port")
            t_port = time.perf_counter()
            wait_for(bench.healthy, 30, "the restarted server's /healthz")
            t_health = time.perf_counter()
            wait_for(lambda m=mark: bench.log_has("the agent is back", m), 60, "the agent")
            t_agent = time.perf_counter()
            wait_for(lambda m=mark: bench.log_has("both ends are back", m), 60, "the client")
            t_both = time.perf_counter()
            results.append(
                Restart(
                    how.name,
                    (t_port - t0) * 1000,
                    (t_health - t0) * 1000,
                    (t_agent - t0) * 1000,
                    (t_both - t0) * 1000,
                )
            )
        status = client.wait(300)
        return results, Output.read(out, lines), status


def report(results: list[Restart], output: Output, status: int) -> str:
    rows = [
        "server restart, live session   port   healthz     agent   session  (ms after spawn)",
    ]
    for r in results:
        rows.append(
            f"  {r.how:<8}              {r.port_ms:6.0f}  {r.healthz_ms:8.0f}  "
            f"{r.agent_ms:8.0f}  {r.session_ms:8.0f}"
        )
    if results:
        o = Summary.of([r.port_ms for r in results])
        h = Summary.of([r.healthz_ms for r in results])
        a = Summary.of([r.agent_ms for r in results])
        s = Summary.of([r.session_ms for r in results])
        rows.append(
            f"  median ({len(results)} restarts){o.median:6.0f}  {h.median:8.0f}  "
            f"{a.median:8.0f}  {s.median:8.0f}   serving within {AIM_MS:.0f} ms: "
            f"{'yes' if max(r.healthz_ms for r in results) <= AIM_MS else 'NO'}"
        )
    rows.append(f"  {output.line()}; client exit status {status}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=4000, help="lines the session prints")
    parser.add_argument("--restarts", type=int, default=4, help="restarts (SIGTERM, SIGKILL, …)")
    parser.add_argument("--keep", action="store_true", help="keep the logs (prints where)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    print(machine_line(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-restart-"))
    try:
        results, output, status = run(root, max(10, args.lines), max(1, args.restarts))
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results, output, status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
