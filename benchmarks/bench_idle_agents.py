"""Idle agents: what many connected, heartbeating agents cost one server process, and how long
``hatchway nodes`` takes to list them.

    python benchmarks/bench_idle_agents.py [--agents 1000] [--processes 4] [--register 100]
                                           [--idle-seconds 60] [--listings 3]

One ``hatchway server`` with TLS (``hatchway_env.hatchway_server``). ``--register`` nodes
register through the real API (``agent.registration.register``, concurrently: registration
errors are counted by type, a 500 among them is reported); the rest are copies of the first
node's row written straight into the server's SQLite database (scrypt makes each registration
cost the server ~150 ms of CPU, 25 minutes for 10,000 — registration is not what this measures).
Every node then runs the agent's own code (``agent.agent.Agent`` with its ``Dialer``: nonce,
RSA-signed upgrade, TLS WebSocket, heartbeats every 10 s) in ``--processes`` load-generator
processes, with the open-file limit raised. Only the heartbeat's facts are fixed (collecting
them from the machine thousands of times is the generator's cost, not the server's).

Prints: the server's RSS per connected agent (RSS with every agent connected and settled minus
RSS before the first dial, over the agents), the server's CPU while idle with heartbeats (utime
+ stime from /proc/PID/stat over ``--idle-seconds``, as % of one core), and the wall time of the
real ``hatchway nodes --output json`` (every page over one kept-alive connection) over N nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from common import exit_cleanly_on_sigterm, machine_line, percentile
from hatchway_env import ServerEnv, _cli, hatchway_server

WORKER_FLAG = "--worker"


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one (inherited by the server and workers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line; 12 and 13 after ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- registration -----------------------------------------------------------------------------


def register_some(srv: ServerEnv, root: Path, count: int) -> tuple[list[Path], Counter[str]]:
    """Register ``count`` nodes through the API at once (16 threads); their state dirs, and
    the errors by type."""
    from hatchway.agent.registration import register
    from hatchway.transport.apiclient import ApiError

    activation = json.loads(
        _cli(srv.hatchway, srv.env, "activation", "create", "--registration-limit",
             str(max(count, 1)), "--output", "json")
    )  # fmt: skip
    errors: Counter[str] = Counter()

    def one(i: int) -> Path | None:
        state_dir = root / f"reg-{i}"
        try:
            register(
                endpoint=srv.endpoint,
                activation_id=activation["ActivationId"],
                activation_code=activation["ActivationCode"],
                state_dir=state_dir,
                ca_file=srv.ca_file,
            )
        except ApiError as exc:
            errors[f"{exc.status} {exc.code}"] += 1
            return None
        return state_dir

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        done = [d for d in pool.map(one, range(count)) if d is not None]
    return done, errors


def seed(srv: ServerEnv, root: Path, template: Path, count: int) -> list[Path]:
    """``count`` more nodes: copies of ``template``'s row and state dir (same key)."""
    state = json.loads((template / "registration.json").read_text())
    db = sqlite3.connect(srv.root / "server" / "hatchway.db", timeout=60)
    db.row_factory = sqlite3.Row
    row = dict(
        db.execute("SELECT * FROM nodes WHERE instance_id = ?", (state["node_id"],)).fetchone()
    )
    dirs = []
    rows = []
    base = time.time()
    for i in range(count):
        node_id = f"mi-{i:017x}"
        rows.append({**row, "instance_id": node_id, "registration_date": base + i * 1e-3,
                     "connected": 0, "last_ping_at": None, "agent_generation": 0})  # fmt: skip
        d = root / f"seed-{i}"
        d.mkdir(mode=0o700)
        for name in os.listdir(template):
            if name in ("private-key.pem", "ca.pem"):
                shutil.copy2(template / name, d / name)
        ca = state["ca_file"] and str(d / Path(state["ca_file"]).name)
        (d / "registration.json").write_text(json.dumps({**state, "node_id": node_id,
                                                         "ca_file": ca}))  # fmt: skip
        os.chmod(d / "registration.json", 0o600)
        dirs.append(d)
    columns = list(rows[0])
    db.executemany(
        f"INSERT INTO nodes ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [tuple(r[c] for c in columns) for r in rows],
    )
    db.commit()
    db.close()
    return dirs


# ---- the load generator (worker processes) ------------------------------------------------


def worker(list_file: Path, rate: float) -> None:
    """Run one agent per state dir listed in ``list_file``; print READY when all are up."""
    raise_nofile()
    import logging

    import hatchway.agent.dialer as dialer_module
    from hatchway import __version__
    from hatchway.agent.agent import Agent, AgentSettings
    from hatchway.agent.state import AgentState
    from hatchway.eventloop import run as run_loop
    from hatchway.protocol.controlchannel import Heartbeat

    logging.basicConfig(level=logging.ERROR)
    contexts: dict[object, object] = {}
    make_context = dialer_module.client_ssl_context

    def shared_context(ca_file: object) -> object:  # one TLS context per process, not per agent
        key = Path(str(ca_file)).read_bytes() if ca_file else None
        if key not in contexts:
            contexts[key] = make_context(ca_file)  # type: ignore[arg-type]
        return contexts[key]

    dialer_module.client_ssl_context = shared_context  # type: ignore[assignment]

    class FixedFacts:
        async def heartbeat(self, session_ids: object) -> Heartbeat:
            return Heartbeat.create(
                hostname="bench",
                platform_type="Linux",
                platform_name="Debian GNU/Linux",
                platform_version="12",
                ip_address="127.0.0.1",
                agent_version=__version__,
                session_ids=(),
            )

    async def main() -> None:
        dirs = [Path(p) for p in list_file.read_text().split()]
        stop = asyncio.Event()
        agents = []
        tasks = []
        for i, d in enumerate(dirs):
            agent = Agent(AgentState.load(d), AgentSettings(), facts=FixedFacts())
            agents.append(agent)
            tasks.append(asyncio.create_task(agent.run(stop)))
            if i % 10 == 9:
                await asyncio.sleep(10 / rate)
        while not all(a.connected.is_set() for a in agents):
            await asyncio.sleep(0.5)
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    # The agent's own event loop (uvloop): asyncio's TLS would cost each agent's two
    # connections 256 KiB of zeroed read buffer apiece, and 2,500 such agents stall a generator.
    run_loop(main())


# ---- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    nofile = raise_nofile()
    lines = [f"idle agents: {machine_line()}", f"  open-file limit {nofile}"]
    # Every agent dials from 127.0.0.1: lift the per-source cap (a quarter of the total).
    with hatchway_server("--max-connections-per-source", str(nofile)) as srv:
        root = srv.root / "agents"
        root.mkdir()
        t0 = time.monotonic()
        registered, errors = register_some(srv, root, min(args.register, args.agents))
        took = time.monotonic() - t0
        lines.append(
            f"  registration: {len(registered)} of {min(args.register, args.agents)} through "
            f"the API in {took:.1f} s (16 at once); errors: {dict(errors) or 'none'}"
        )
        if not registered:
            raise RuntimeError("no node registered")
        dirs = registered + seed(srv, root, registered[0], args.agents - len(registered))
        rss_before = rss_kib(srv.pid)
        workers = []
        per = -(-len(dirs) // args.processes)
        t0 = time.monotonic()
        for w in range(args.processes):
            mine = dirs[w * per : (w + 1) * per]
            if not mine:
                continue
            list_file = root / f"worker-{w}.txt"
            list_file.write_text("\n".join(map(str, mine)))
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, WORKER_FLAG, str(list_file), str(args.rate)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=srv.env,
                )
            )
        try:
            for proc in workers:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line.startswith(b"READY"):
                    raise RuntimeError(f"a load generator failed (exit {proc.wait()})")
            up = time.monotonic() - t0
            lines.append(f"  {len(dirs)} agents connected in {up:.1f} s ({args.processes} "
                         "load-generator processes)")  # fmt: skip
            # Let every nonce connection's keep-alive end and the heartbeats settle.
            time.sleep(args.settle)
            rss_after = rss_kib(srv.pid)
            cpu0, w0 = cpu_seconds(srv.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            cpu1, w1 = cpu_seconds(srv.pid), time.monotonic()
            per_agent = (rss_after - rss_before) / len(dirs)
            lines.append(
                f"  server RSS: {rss_before / 1024:.1f} MiB before the agents, "
                f"{rss_after / 1024:.1f} MiB with them: {per_agent:.1f} KiB per agent "
                f"(aim ≤ 48 KiB)"
            )
            lines.append(
                f"  server CPU while idle with heartbeats: {100 * (cpu1 - cpu0) / (w1 - w0):.1f} % "
                f"of one core over {w1 - w0:.0f} s"
            )
            times = []
            for _ in range(args.listings):
                t = time.monotonic()
                out = _cli(srv.hatchway, srv.env, "nodes", "--output", "json")
                times.append(time.monotonic() - t)
                listed = json.loads(out)["InstanceInformationList"]
                online = sum(1 for n in listed if n["PingStatus"] == "Online")
                if len(listed) != len(dirs):
                    raise RuntimeError(f"hatchway nodes listed {len(listed)} of {len(dirs)}")
            lines.append(
                f"  hatchway nodes (--output json, 50 per page, {len(dirs)} nodes, "
                f"{online} Online): median {percentile(times, 50):.2f} s, "
                f"runs {', '.join(f'{x:.2f}' for x in times)} s"
            )
        finally:
            for proc in workers:
                if proc.poll() is None and proc.stdin is not None:
                    proc.stdin.close()
            for proc in workers:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == WORKER_FLAG:
        worker(Path(argv[1]), float(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--register", type=int, default=100)
    parser.add_argument(
        "--rate", type=float, default=8.0, help="dials/s per generator (the server takes ~30/s)"
    )
    parser.add_argument("--settle", type=float, default=40.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--listings", type=int, default=3)
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()  # stop the server and the generators on SIGTERM too
    print(run(args), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
