"""Scale-out: many sessions, one session's throughput and failover across replicas.

Three ``hatchway server`` replicas on PostgreSQL + NATS behind a real HAProxy (the integration
tests' :class:`tests.integration.replicas.ReplicaSet`, docs/haproxy.cfg's setup), three real
agent processes, each registered directly with one replica (so we know where each agent's end
is), and a load generator that reuses the client's own code in-process: StartSession through
:class:`~hatchway.transport.apiclient.ApiClient`, the data channel through
:class:`~hatchway.client.session.ClientSession` with a small :class:`Handler` instead of the
terminal. Where each end lands is chosen, not guessed:

* ``local``: session *i* is started on replica *i mod 3* (which makes it the relay), its client
  dials that replica and its node's agent is on it: no pipe.
* ``piped``: started on replica *i*, the client dials replica *i+1*, the agent is on *i+2*:
  client and agent on different replicas. The session moves to the replica its first end
  reaches (docs/design.md, "Scale-out"), so one end is piped over NATS (both were, before
  that hand-over existed).
* ``balanced``: StartSession and the client's data channel through HAProxy (round-robin), as
  a user would; the session follows its first end, the other end is piped when it lands on
  another replica (about two thirds of the time).

**sessions**: N sessions at once (several load processes), each with ``stty raw -echo; cat``
on the node (as bench_echo.py), typing one byte every 100 ms at a random phase for
``--seconds``; each byte is timed until it comes back. Prints p50/p90/p99/max per mode (aim
p99 < 50 ms), lost keystrokes, and the replicas' RSS growth per session.

**throughput**: ``head -c SIZE /dev/zero | base64`` in one session consumed in-process (as
fast as it comes), ``local`` against ``relayed`` (client on another replica than the relay and
the agent): MB/s and the ratio relayed/local, the order alternating. Known problem: in the
cluster even the local case stalls after about a megabyte (a single server does 23 MB/s with
the same reader; benchmarks/README.md, "Scale-out"): a transfer unfinished after 300 s is
reported as such.

**failover**: 300 sessions on a node whose agent dials the balancer (as real agents do, so it
re-dials another replica when its own dies), clients through HAProxy (ResumeSession too), each
printing a tick with its time every 250 ms. A session is relayed where its first end landed
(about a third per replica); the replica relaying the most is SIGKILLed (its control channel
and data channels die with it too, when there). Per affected session (relayed by it), and over
all, the time from the kill until the first tick printed after the kill arrives (aim < 5 s
with the default back-off), and whether every tick arrived exactly once.

Never asserts on time. Needs PostgreSQL (127.0.0.1:5432), NATS (127.0.0.1:4222) and haproxy.

python benchmarks/bench_cluster.py [--sessions 100 500] [--only sessions|throughput|failover]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import exit_cleanly_on_sigterm, machine_line, percentile, ratio, tail

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.replicas import NATS_URL, PG_ADMIN, ReplicaSet  # noqa: E402

from hatchway.auth.sigv4 import Credentials  # noqa: E402
from hatchway.client.config import load_profile  # noqa: E402
from hatchway.client.session import (  # noqa: E402
    ApiSessions,
    ClientSession,
    Handler,
    StartedSession,
)
from hatchway.client.shell import ShellHandler  # noqa: E402
from hatchway.protocol.frames import PayloadType  # noqa: E402
from hatchway.protocol.payloads import SizePayload  # noqa: E402
from hatchway.transport.apiclient import ApiClient  # noqa: E402

MODES = ("local", "piped", "balanced")
KEY_INTERVAL = 0.1
AIM_P99_MS = 50.0
AIM_FAILOVER_S = 5.0
THROUGHPUT_WAIT = 300.0  # seconds one transfer may take before it is reported unfinished
FAILOVER_TICK = 0.25  # seconds between two ticks of a failover session
#: bench.nodes[BALANCED_NODE]: the node whose agent dials the balancer (failover).
BALANCED_NODE = 3
RECOVERY_WAIT = 90.0  # seconds after the kill before the sessions still silent are counted
READY = re.compile(rb"BENCH_READY")
DONE = re.compile(rb"BENCH_DONE")
TICK = re.compile(rb"tick-(\d+) (\d+\.\d+)\r?\n")
ECHO_COMMAND = b"stty raw -echo isig; printf 'BENCH_%s\\n' READY; cat\n"
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


# ---- the cluster --------------------------------------------------------------------------


def requirements() -> str | None:
    """Why the benchmark cannot run here, or None."""
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (apt-get install haproxy)"
    for what, url in (("PostgreSQL", PG_ADMIN), ("NATS", NATS_URL)):
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            return f"no {what} at {host}:{port} ({exc.strerror or exc})"
    return None


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Bench:
    """The replica set, one agent registered directly with each replica, and where to call."""

    replicas: ReplicaSet
    nodes: list[str] = field(default_factory=list)  # nodes[i]: the agent on replica i (3: LB)
    agents: list[Any] = field(default_factory=list)

    def url(self, index: int | None) -> str:
        """Replica ``index``'s own URL, or the balancer's (None)."""
        if index is None:
            return self.replicas.endpoint
        return f"https://127.0.0.1:{self.replicas.replicas[index].port}"

    def start_agents(self) -> None:
        """One agent registered with each replica's own URL (nodes[0..2]: its end is known
        to be there), and one with the balancer's (nodes[3]: it goes wherever HAProxy sends
        it, and re-dials another replica when its own dies)."""
        hatchway = self.replicas_bin()
        names = [r.name for r in self.replicas.replicas] + ["lb"]
        for i, name in enumerate(names):
            aid, code = self.replicas.activation("--registration-limit", "1")
            state = self.replicas.root / f"agent-{name}"
            endpoint = self.url(i if i < len(self.replicas.replicas) else None)
            node = self.replicas.cli(
                "agent", "register", "--endpoint", endpoint, "--ca-file",
                str(self.replicas.ca_file), "--activation-id", aid, "--activation-code", code,
                "--state-dir", str(state),
            ).stdout.decode().strip()  # fmt: skip
            log = open(self.replicas.root / f"agent-{name}.log", "ab")  # noqa: SIM115
            # (the agent keeps its own copy of the descriptor; the agents' RSS is theirs
            # alone: the node's shells are not counted)
            proc = subprocess.Popen(
                [hatchway, "agent", "run", "--state-dir", str(state)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.replicas.env(),
            )  # fmt: skip
            log.close()
            self.replicas.procs.append(proc)
            self.agents.append(proc)
            self.nodes.append(node)
        for node in self.nodes:
            wait_until(lambda n=node: self.replicas.ping_status(n) == "Online", 60, f"{node}")

    @staticmethod
    def replicas_bin() -> str:
        from tests.integration.cluster import HATCHWAY

        assert HATCHWAY is not None
        return HATCHWAY

    def profile(self) -> tuple[str, Credentials, Path | None]:
        p = load_profile(str(self.replicas.profile), "default")
        return p.region, Credentials(p.access_key_id, p.secret_access_key), p.ca_file

    def rss_kib(self) -> list[int]:
        return [rss_kib(r.proc.pid) if r.proc and r.alive else 0 for r in self.replicas.replicas]

    def agents_rss_kib(self) -> int:
        return sum(rss_kib(p.pid) for p in self.agents if p.poll() is None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class Watch:
    """Where the CPU went during a block: the replicas, the agents, HAProxy, the load
    generator (this process and its reaped workers), and everything else on the machine
    (other people's work: the figures are noisier the more of it there is)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.start: dict[str, float] = {}
        self.spent: dict[str, float] = {}
        self.wall = 0.0

    def _snapshot(self) -> dict[str, float]:
        r = self.bench.replicas
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "replicas": sum(cpu_seconds(x.proc.pid) for x in r.replicas if x.proc),
            "agents": sum(cpu_seconds(p.pid) for p in self.bench.agents),
            "haproxy": cpu_seconds(r.haproxy.pid) if r.haproxy else 0.0,
            "load generator": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "busy": busy_seconds(),
            "wall": time.monotonic(),
        }

    def __enter__(self) -> Watch:
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        self.spent = {k: end[k] - self.start[k] for k in end}

    def line(self) -> str:
        wall = self.spent["wall"] * (os.cpu_count() or 1)
        ours = ("replicas", "agents", "haproxy", "load generator")
        others = self.spent["busy"] - sum(self.spent[k] for k in ours)
        parts = ", ".join(f"{k} {self.spent[k] / wall:.0%}" for k in ours)
        return f"CPU (share of all CPUs): {parts}, everything else {max(0.0, others) / wall:.0%}"


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            result = predicate()
            if result:
                return result
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def cluster(count: int = 3) -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-cluster-"))
    replicas = ReplicaSet(root, count=count)
    try:
        replicas.start()
        bench = Bench(replicas)
        bench.start_agents()
        yield bench
    finally:
        replicas.close()
        shutil.rmtree(root, ignore_errors=True)


# ---- the load generator's handler ---------------------------------------------------------


class Probe:
    """A :class:`~hatchway.client.session.Handler` that types a command and watches output.

    ``command`` is typed once the handshake completes; the output is searched for
    ``marker``; after it, the output is either matched against the keys typed (echo) or
    given to ``sink``.
    """

    extensions = ShellHandler.extensions
    ended_status: int | None = 0

    def __init__(self, command: bytes, marker: re.Pattern[bytes] | None) -> None:
        self.command = command
        self.marker = marker
        self.channel: ClientSession | None = None
        self.ready = asyncio.Event()
        self.seen = bytearray()
        self.pending: collections.deque[tuple[int, float]] = collections.deque()
        self.latencies: list[float] = []
        self.stray = 0
        self.received = 0
        self.sink: Any = None

    def bind(self, channel: ClientSession) -> None:
        self.channel = channel

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        yield

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        pass

    def start(self) -> None:
        assert self.channel is not None
        self.channel.send(PayloadType.SIZE, SizePayload(cols=200, rows=50).to_json())
        self.channel.send(PayloadType.OUTPUT, self.command)

    def on_window(self) -> None:
        pass

    def type(self, key: int) -> None:
        assert self.channel is not None
        self.pending.append((key, time.perf_counter()))
        self.channel.send(PayloadType.OUTPUT, bytes((key,)))

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if payload_type != PayloadType.OUTPUT:
            return
        now = time.perf_counter()
        self.received += len(payload)
        if self.sink is not None:
            self.sink(payload, now)
            return
        if not self.ready.is_set():
            self.seen += payload
            if self.marker is not None and self.marker.search(self.seen):
                self.seen.clear()
                self.ready.set()
            else:
                del self.seen[:-64]
            return
        for byte in payload:
            if self.pending and self.pending[0][0] == byte:
                self.latencies.append((now - self.pending.popleft()[1]) * 1000)
            elif byte not in b"\r\n":
                self.stray += 1


def rewrite(stream_url: str, base: str) -> str:
    """``stream_url`` (``wss://``) with its authority replaced by ``base``'s."""
    scheme, rest = stream_url.split("://", 1)
    return f"{scheme}://{base.split('://', 1)[1].rstrip('/')}/{rest.split('/', 1)[1]}"


@dataclass(frozen=True)
class Placement:
    """Where one session's StartSession, client end and agent are."""

    api: int | None
    client: int | None
    node: int


def placement(mode: str, i: int) -> Placement:
    if mode == "local":
        return Placement(i % 3, i % 3, i % 3)
    if mode == "piped":
        return Placement(i % 3, (i + 1) % 3, (i + 2) % 3)
    return Placement(None, None, i % 3)


async def open_session(
    urls: list[str],
    balancer: str,
    profile: tuple[str, Credentials, Path | None],
    node: str,
    where: Placement,
    probe: Handler,
) -> tuple[ClientSession, asyncio.Task[int]]:
    region, credentials, ca_file = profile
    api_url = balancer if where.api is None else urls[where.api]
    api = ApiClient(api_url, region=region, credentials=credentials, ca_file=ca_file)
    response = await asyncio.to_thread(api.call, "StartSession", {"Target": node})
    started = StartedSession.from_response(response)
    if where.client is not None:
        started = StartedSession(
            started.session_id, started.token, rewrite(started.stream_url, urls[where.client])
        )
    # ResumeSession (after a drop) through the balancer, as a user's profile points there:
    # the replica StartSession went to may be the one that is gone.
    resume = ApiClient(balancer, region=region, credentials=credentials, ca_file=ca_file)
    session = ClientSession(
        started, probe, api=ApiSessions(resume), ssl_context=api.ssl_context(), stderr_fd=2
    )
    return session, asyncio.create_task(session.run())


async def close_session(session: ClientSession, task: asyncio.Task[int]) -> None:
    with contextlib.suppress(Exception):
        if not session.done:
            session.send(PayloadType.OUTPUT, b"\x03")
            session.send(PayloadType.OUTPUT, b"exit\n")
        async with asyncio.timeout(15):
            await asyncio.shield(task)
    if not task.done():
        session.terminate()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(5):
                await task
        task.cancel()


async def wait_ready(probe: Probe, task: asyncio.Task[int], timeout: float) -> str | None:
    """Wait until ``probe`` saw its marker; else why not (the session's end or a time-out)."""
    waiter = asyncio.ensure_future(probe.ready.wait())
    await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if probe.ready.is_set():
        return None
    waiter.cancel()
    if task.done():
        exc = task.exception()
        return f"session ended before its prompt: {exc!r}" if exc else "session ended early"
    return f"no shell prompt within {timeout:.0f} s"


# ---- sessions: echo under load ------------------------------------------------------------


@dataclass
class WorkerJob:
    mode: str
    indices: list[int]
    urls: list[str]
    balancer: str
    nodes: list[str]
    profile: tuple[str, Credentials, Path | None]
    seconds: float


def echo_worker(job: WorkerJob, ready: Any, go: Any, results: Any) -> None:
    """One load process: open its sessions, report ready, type when told, send results."""
    try:
        results.put(asyncio.run(_echo_worker(job, ready, go)))
    except BaseException as exc:  # a worker's failure is reported, not hung on
        results.put({"error": f"{exc!r}\n{traceback.format_exc()[-2000:]}"})
        ready.set()


async def _echo_worker(job: WorkerJob, ready: Any, go: Any) -> dict[str, Any]:
    opened: list[tuple[Probe, ClientSession, asyncio.Task[int]]] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        where = placement(job.mode, i)
        probe = Probe(ECHO_COMMAND, READY)
        async with gate:
            try:
                session, task = await open_session(
                    job.urls, job.balancer, job.profile, job.nodes[where.node], where, probe
                )
            except Exception as exc:
                errors.append(f"StartSession: {exc!r}")
                return
        opened.append((probe, session, task))
        problem = await wait_ready(probe, task, 120)
        if problem:
            errors.append(problem)

    await asyncio.gather(*(one(i) for i in job.indices))
    live = [(p, s, t) for p, s, t in opened if p.ready.is_set() and not t.done()]
    ready.set()
    await asyncio.to_thread(go.wait)
    loop = asyncio.get_running_loop()
    until = loop.time() + job.seconds

    async def typist(probe: Probe) -> None:
        at = loop.time() + random.uniform(0, KEY_INTERVAL)
        k = 0
        while at < until:
            await asyncio.sleep(max(0.0, at - loop.time()))
            probe.type(ALPHABET[k % len(ALPHABET)])
            k += 1
            at += KEY_INTERVAL

    await asyncio.gather(*(typist(p) for p, _, _ in live))
    await asyncio.sleep(2.0)  # the last keys come back
    latencies = [x for p, _, _ in live for x in p.latencies]
    lost = sum(len(p.pending) for p, _, _ in live)
    stray = sum(p.stray for p, _, _ in live)
    ended_early = sum(1 for _, _, t in live if t.done())
    await asyncio.gather(*(close_session(s, t) for _, s, t in opened))
    return {
        "latencies": latencies,
        "lost": lost,
        "stray": stray,
        "live": len(live),
        "ended_early": ended_early,
        "errors": errors,
    }


@dataclass
class EchoResult:
    mode: str
    sessions: int
    live: int
    latencies: list[float]
    lost: int
    stray: int
    errors: list[str]
    rss_delta_kib: list[int]
    agents_delta_kib: int
    cpu_line: str
    setup_s: float


def run_echo(bench: Bench, mode: str, sessions: int, seconds: float, procs: int) -> EchoResult:
    urls = [bench.url(i) for i in range(3)]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    go = ctx.Event()
    workers = []
    readies = []
    rss_before = bench.rss_kib()
    agents_before = bench.agents_rss_kib()
    began = time.monotonic()
    for w in range(procs):
        job = WorkerJob(mode, list(range(w, sessions, procs)), urls, bench.url(None),
                        bench.nodes, bench.profile(), seconds)  # fmt: skip
        ready = ctx.Event()
        proc = ctx.Process(target=echo_worker, args=(job, ready, go, results), daemon=True)
        proc.start()
        workers.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(600)
    setup = time.monotonic() - began
    time.sleep(1.0)
    rss_after = bench.rss_kib()
    agents_after = bench.agents_rss_kib()
    with Watch(bench) as watch:
        go.set()
        outcomes = [results.get(timeout=seconds + 300) for _ in workers]
        for proc in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    latencies: list[float] = []
    lost = stray = live = 0
    errors: list[str] = []
    for outcome in outcomes:
        if "error" in outcome:
            errors.append(outcome["error"])
            continue
        latencies += outcome["latencies"]
        lost += outcome["lost"]
        stray += outcome["stray"]
        live += outcome["live"]
        errors += outcome["errors"]
        if outcome["ended_early"]:
            errors.append(f"{outcome['ended_early']} sessions ended while typing")
    return EchoResult(
        mode, sessions, live, latencies, lost, stray, errors,
        [a - b for a, b in zip(rss_after, rss_before, strict=True)],
        agents_after - agents_before, watch.line(), setup,
    )  # fmt: skip


def print_echo(result: EchoResult) -> None:
    lat = result.latencies
    head = f"  {result.mode:<9} {result.live:>4}/{result.sessions:<4}"
    if not lat:
        print(f"{head} no samples")
    else:
        p99 = percentile(lat, 99)
        mark = "aim met" if p99 < AIM_P99_MS else "aim NOT met"
        print(
            f"{head} p50 {percentile(lat, 50):7.1f}  p90 {percentile(lat, 90):7.1f}  "
            f"p99 {p99:7.1f}  max {max(lat):7.1f} ms  ({len(lat)} keys, lost {result.lost}, "
            f"stray {result.stray}; p99 {mark}: < {AIM_P99_MS:g} ms)"
        )
    per = [d / max(1, result.live) for d in result.rss_delta_kib]
    print(
        f"{'':16}set-up {result.setup_s:.1f} s; replicas' RSS +"
        f"{'/'.join(f'{d // 1024}' for d in result.rss_delta_kib)} MiB "
        f"(~{sum(per):.0f} KiB per session over the three), agents +"
        f"{result.agents_delta_kib // 1024} MiB "
        f"(~{result.agents_delta_kib / max(1, result.live):.0f} KiB per session); {result.cpu_line}"
    )
    for error in sorted(set(result.errors))[:5]:
        count = result.errors.count(error)
        print(f"{'':16}error ×{count}: {error.strip().splitlines()[-1][:200]}")


# ---- throughput ---------------------------------------------------------------------------


async def one_throughput(bench: Bench, where: Placement, size: int) -> tuple[float, int]:
    """The CLI's own terminal handler on pipes (as ``hatchway start-session`` with stdin and
    stdout piped), its output read by a thread as fast as it comes: (seconds, bytes)."""
    urls = [bench.url(i) for i in range(3)]
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    handler = ShellHandler(stdin_fd=in_r, stdout_fd=out_w, stderr_fd=2)
    counted: list[float] = []

    def reader() -> None:
        count, window, began = 0, b"", time.perf_counter()
        while chunk := os.read(out_r, 1 << 20):
            count += len(chunk)
            window = window[-32:] + chunk[-32:]
            if b"BENCH_READY" in window and not counted:
                counted.append(0)
                os.write(in_w, b"\n")
                count, began, window = 0, time.perf_counter(), b""
            elif DONE.search(window):
                counted[:] = [time.perf_counter() - began, count]
                os.write(in_w, b"exit\n")
                return

    os.write(
        in_w,
        f"stty -echo; printf 'BENCH_%s\\n' READY; read go; head -c {size} /dev/zero | base64;"
        " printf 'BENCH_%s\\n' DONE\n".encode(),
    )
    thread = asyncio.create_task(asyncio.to_thread(reader))
    session, task = await open_session(
        urls, bench.url(None), bench.profile(), bench.nodes[where.node], where, handler
    )
    try:
        async with asyncio.timeout(THROUGHPUT_WAIT):
            await thread
        async with asyncio.timeout(30):
            await task
    finally:
        for fd in (in_r, in_w, out_w):
            os.close(fd)
        if not task.done():
            session.terminate()
        with contextlib.suppress(BaseException):
            await thread
        os.close(out_r)
    return counted[0], int(counted[1])


def run_throughput(bench: Bench, size: int, rounds: int) -> None:
    # relayed: started on r1 (the relay) with the agent there, the client's end on r2.
    setups = {"local": Placement(0, 0, 0), "relayed": Placement(0, 1, 0)}
    rates: dict[str, list[float]] = {k: [] for k in setups}
    print(f"Throughput: head -c {size} /dev/zero | base64 through one session, read in-process")
    with Watch(bench) as watch:
        for r in range(rounds):
            order = list(setups) if r % 2 == 0 else list(reversed(setups))
            for name in order:
                try:
                    seconds, count = asyncio.run(one_throughput(bench, setups[name], size))
                except TimeoutError:
                    print(f"  {name:<8} did not finish within {THROUGHPUT_WAIT:.0f} s")
                    continue
                rates[name].append(count / seconds / 1e6)
                print(f"  {name:<8} {count / 1e6:7.1f} MB in {seconds:6.2f} s: "
                      f"{count / seconds / 1e6:6.1f} MB/s")  # fmt: skip
    if not rates["local"] or not rates["relayed"]:
        print(f"  {watch.line()}")
        return
    local = statistics.median(rates["local"])
    relayed = statistics.median(rates["relayed"])
    print(f"  median: local {local:.1f} MB/s, relayed {relayed:.1f} MB/s, "
          f"ratio relayed/local {ratio(relayed, local):.2f}")  # fmt: skip
    print(f"  {watch.line()}")


# ---- failover -----------------------------------------------------------------------------


@dataclass
class Ticker:
    probe: Probe
    session: ClientSession
    task: asyncio.Task[int]
    ticks: list[int] = field(default_factory=list)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (printed, arrived)
    buffer: bytearray = field(default_factory=bytearray)

    def sink(self, payload: bytes, now: float) -> None:
        self.buffer += payload
        end = self.buffer.rfind(b"\n")
        if end < 0:
            return
        arrived = time.time()
        for m in TICK.finditer(bytes(self.buffer[: end + 1])):
            self.ticks.append(int(m.group(1)))
            self.arrivals.append((float(m.group(2)), arrived))
        del self.buffer[: end + 1]


async def run_failover(bench: Bench, count: int) -> None:
    """``count`` sessions on the node whose agent dials the balancer (as a real agent: it can
    re-dial another replica), clients through the balancer; each session is relayed where
    its first end landed. SIGKILL the replica relaying the most of them and time, for those
    (the affected ones), the first tick printed after the kill to arrive."""
    urls = [bench.url(i) for i in range(3)]
    perl = (
        b"exec perl -MTime::HiRes=time,sleep -e '$|=1; for ($i = 1; ; $i++) "
        b'{ printf "tick-%d %.6f\\n", $i, time; sleep PERIOD }\'\n'
    ).replace(b"PERIOD", b"%.2f" % FAILOVER_TICK)
    command = b"stty -echo; printf 'BENCH_%s\\n' READY; " + perl
    tickers: list[Ticker] = []
    gate = asyncio.Semaphore(8)
    print(
        f"Failover: {count} sessions, agent and clients through HAProxy, a tick every "
        f"{FAILOVER_TICK:g} s each; SIGKILL the replica relaying the most of them"
    )

    async def one() -> None:
        probe = Probe(command, READY)
        where = Placement(None, None, BALANCED_NODE)
        async with gate:
            session, task = await open_session(
                urls, bench.url(None), bench.profile(), bench.nodes[where.node], where, probe
            )
        ticker = Ticker(probe, session, task)
        async with asyncio.timeout(120):
            await probe.ready.wait()
        probe.sink = ticker.sink
        tickers.append(ticker)

    # Each client's API calls (StartSession, ResumeSession after the kill) run in a worker
    # thread; a user's client is a process of its own, so this one process must not queue
    # hundreds of them behind the default pool's few threads.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=min(count, 32))
    )
    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    async with asyncio.timeout(60):
        while not all(len(t.ticks) >= 5 for t in tickers):
            await asyncio.sleep(0.1)
    print(f"  {len(tickers)} sessions ticking after {time.monotonic() - began:.1f} s")
    api = ApiClient(bench.url(None), region=bench.profile()[0], credentials=bench.profile()[1],
                    ca_file=bench.profile()[2])  # fmt: skip
    ours = {t.session.session_id for t in tickers}
    relay_of = {
        s["SessionId"]: s.get("Relay", "")
        for s in await asyncio.to_thread(describe_sessions, api, "Active")
        if s["SessionId"] in ours
    }
    relays = collections.Counter(relay_of.values())
    cluster = await asyncio.to_thread(api.call, "DescribeCluster", {}, service="Hatchway")
    victim_id, affected_count = relays.most_common(1)[0]
    address = next(r["Address"] for r in cluster["Replicas"] if r["ReplicaId"] == victim_id)
    victim = next(r for r in bench.replicas.replicas if address.endswith(f":{r.port}"))
    affected = [t for t in tickers if relay_of.get(t.session.session_id) == victim_id]
    print(f"  relays: {dict(relays)}; killing {victim.name} ({victim_id}), which relays "
          f"{affected_count}")  # fmt: skip
    await asyncio.sleep(2.0)
    killed_at = time.time()
    bench.replicas.kill(victim)

    def recovery(group: list[Ticker]) -> list[float]:
        times = []
        for t in group:
            after = [a for p, a in t.arrivals if p > killed_at]
            if after:
                times.append(after[0] - killed_at)
        return times

    give_up = time.time() + RECOVERY_WAIT
    while time.time() < give_up and len(recovery(tickers)) < len(tickers):
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)
    await asyncio.gather(*(close_session(t.session, t.task) for t in tickers))
    broken = 0
    for t in tickers:
        # From the first tick seen: the first may come in the marker's payload, before the
        # sink is in place.
        if t.ticks and t.ticks != list(range(t.ticks[0], t.ticks[0] + len(t.ticks))):
            broken += 1
    for label, group in (("affected (relayed by it)", affected), ("all", tickers)):
        recovered = recovery(group)
        gaps = [
            max(b - a for (_, a), (_, b) in zip(t.arrivals, t.arrivals[1:], strict=False))
            for t in group
            if len(t.arrivals) > 1
        ] or [math.nan]
        if not recovered:
            print(f"  {label}: no session printed a new tick within {RECOVERY_WAIT:.0f} s")
            continue
        mark = "aim met" if max(recovered) < AIM_FAILOVER_S else "aim NOT met"
        if len(recovered) < len(group):
            mark = "aim NOT met"
        print(
            f"  {label}: kill → first new tick, {len(recovered)} of {len(group)} sessions "
            f"within {RECOVERY_WAIT:.0f} s: p50 {statistics.median(recovered):.2f} s, "
            f"p90 {percentile(recovered, 90):.2f} s, max {max(recovered):.2f} s "
            f"({mark}: < {AIM_FAILOVER_S:g} s); longest silence per session: p50 "
            f"{statistics.median(gaps):.2f} s, max {max(gaps):.2f} s"
        )
    total = sum(len(t.ticks) for t in tickers)
    print(
        f"  {total} ticks received; sessions with a tick lost, doubled or out of order: "
        f"{broken} of {len(tickers)}"
    )
    statuses = collections.Counter(
        s["Status"]
        for s in await asyncio.to_thread(describe_sessions, api, "History")
        if s["SessionId"] in ours
    )
    print(f"  afterwards: {dict(statuses)}")


def describe_sessions(api: ApiClient, state: str) -> list[dict[str, Any]]:
    """Every page of DescribeSessions."""
    sessions: list[dict[str, Any]] = []
    params: dict[str, Any] = {"State": state}
    while True:
        page = api.call("DescribeSessions", params)
        sessions += page.get("Sessions", [])
        if not page.get("NextToken"):
            return sessions
        params["NextToken"] = page["NextToken"]


# ---- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 500],
                        help="concurrent sessions, one run per value (100 500)")  # fmt: skip
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seconds", type=float, default=15.0, help="typing time per run (15)")
    parser.add_argument("--procs", type=int, default=0, help="load processes (1 per 125)")
    parser.add_argument("--throughput-mib", type=int, default=8, help="head -c MiB (8)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (2)")
    parser.add_argument("--failover-sessions", type=int, default=300,
                        help="sessions (a third relayed by the one killed)")  # fmt: skip
    parser.add_argument("--only", choices=("sessions", "throughput", "failover"))
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the replicas', agents' and haproxy's logs to DIR")  # fmt: skip
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    problem = requirements()
    if problem:
        print(f"bench_cluster: {problem}", file=sys.stderr)
        return 2
    nofile = raise_nofile()
    print("Scale-out: 3 replicas on PostgreSQL + NATS behind HAProxy, 3 agents (one per replica)")
    print(machine_line())
    print(f"open files limit {nofile}")
    with cluster() as bench:
        if args.only in (None, "sessions"):
            print(f"Sessions: a key every {KEY_INTERVAL * 1000:.0f} ms per session for "
                  f"{args.seconds:g} s, echo round trip in ms")  # fmt: skip
            for n in args.sessions:
                procs = args.procs or max(1, math.ceil(n / 125))
                for mode in args.modes:
                    result = run_echo(bench, mode, n, args.seconds, procs)
                    print_echo(result)
                    sys.stdout.flush()
                print(f"  (load now {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
        if args.only in (None, "throughput"):
            run_throughput(bench, args.throughput_mib << 20, args.rounds)
            sys.stdout.flush()
        if args.only in (None, "failover"):
            try:
                asyncio.run(run_failover(bench, args.failover_sessions))
            except Exception:
                traceback.print_exc()
                print(tail(bench.replicas.root / "r2.log"))
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in bench.replicas.root.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
            print(f"logs kept in {args.keep_logs}")
    print(f"load at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
