"""Storage under heartbeat load: write throughput and read latency (SQLite unless --url).

python benchmarks/bench_store.py [--nodes 2000] [--writers 1000] [--seconds 10]
                                 [--read-seconds 10] [--loop-lag-ms 0] [--url URL]
                                 [--only heartbeat,batch,single,reads]

On a fresh database (a file in a temporary directory, or the empty PostgreSQL database --url
names) with --nodes registered nodes, it measures:

1. sustained heartbeat writes: --writers tasks, one per node, each recording heartbeats for
   its node back to back for --seconds: writes per second, failed writes, write latency;
2. the same rows written as one ``NodeRepository.heartbeats`` batch per round, where the store
   has it: rows per second;
3. like 1, with a write that is one transaction per call (``nodes.mark_connected``): the rate
   of the single-writer queue itself;
4. read latency while the agents' real load is written: 1,000 heartbeats every 10 s (one every
   10 ms), each a task of its own as control channels are, with one point read
   (``nodes.get``) after another and a node listing (``nodes.list``) every second.

--loop-lag-ms adds a task that blocks the event loop that long on every turn, as a busy server
does (TLS, WebSocket frames, key derivation): the condition under which several pooled SQLite
connections racing for the write lock ran out of ``busy_timeout``.

It uses whichever ``hatchway`` Python imports, so a before/after comparison is one run per
checkout: ``PYTHONPATH=/path/to/other/checkout/src python benchmarks/bench_store.py``.
Figures only, no assertion on time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Summary, machine_line
from sqlalchemy import insert, text

from hatchway.store import schema
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

HEARTBEATS_PER_10S = 1000
READ_GAP = 0.002  # between two point reads
LIST_EVERY = 1.0  # a node listing (2,000 rows) this often during the read measurement


@dataclass
class Outcomes:
    """Latencies of what succeeded and a count of what failed, by error."""

    latencies: list[float] = field(default_factory=list)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    async def timed(self, call: Awaitable[Any]) -> None:
        start = time.perf_counter()
        try:
            await call
        except Exception as exc:  # a benchmark counts failures, it does not stop on them
            self.failures[f"{exc.__class__.__name__}: {exc}"[:90]] += 1
        else:
            self.latencies.append(time.perf_counter() - start)

    def failed(self) -> str:
        if not self.failures:
            return "0 failed"
        total = sum(self.failures.values())
        return f"{total} FAILED (" + "; ".join(f"{n}× {m}" for m, n in self.failures.items()) + ")"


def ms(summary: Summary) -> str:
    return (
        f"p50 {summary.median * 1e3:.1f} ms, p99 {summary.p99 * 1e3:.1f} ms, "
        f"max {summary.maximum * 1e3:.1f} ms"
    )


def node_row(instance_id: str) -> dict[str, Any]:
    return {
        "instance_id": instance_id, "activation_id": "bench", "public_key": "k",
        "public_key_type": "Rsa", "fingerprint": "f", "name": "bench", "computer_name": "",
        "platform_type": "Linux", "platform_name": "", "platform_version": "", "ip_address": "",
        "agent_version": "", "registration_date": 1.0, "last_ping_at": None, "connected": False,
        "tags": {},
    }  # fmt: skip


@contextlib.asynccontextmanager
async def busy_loop(lag: float) -> AsyncIterator[None]:
    """Block the event loop for ``lag`` seconds on every turn while the block runs."""
    if lag <= 0:
        yield
        return
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            time.sleep(lag)
            await asyncio.sleep(0)

    task = asyncio.create_task(hog())
    try:
        yield
    finally:
        stop.set()
        await task


async def sustained_writes(
    store: Store, ids: Sequence[str], seconds: float, what: str = "heartbeat"
) -> str:
    out = Outcomes()
    end = time.monotonic() + seconds

    def write(instance_id: str) -> Awaitable[None]:
        if what == "heartbeat":
            return store.nodes.heartbeat(instance_id, time.time(), computer_name="b")
        return store.nodes.mark_connected(instance_id, True, time.time())

    async def agent(instance_id: str) -> None:
        while time.monotonic() < end:
            await out.timed(write(instance_id))

    began = time.monotonic()
    await asyncio.gather(*(agent(i) for i in ids))
    took = time.monotonic() - began
    rate = len(out.latencies) / took
    lat = ms(Summary.of(out.latencies)) if out.latencies else "no write succeeded"
    name = "heartbeat()" if what == "heartbeat" else "mark_connected() (one transaction each)"
    return (
        f"{name}, {len(ids)} concurrent writers for {took:.1f} s: {rate:,.0f} writes/s, "
        f"{out.failed()}; write latency {lat}"
    )


async def batched_writes(store: Store, ids: Sequence[str], seconds: float) -> str:
    try:
        from hatchway.store.records import Heartbeat
    except ImportError:
        return "heartbeats(batch): not in this version of the store"
    out = Outcomes()
    rows = 0
    end = time.monotonic() + seconds
    began = time.monotonic()
    while time.monotonic() < end:
        now = time.time()
        batch = [Heartbeat(i, now, "b", "Linux", "", "", "", "") for i in ids]
        await out.timed(store.nodes.heartbeats(batch))
        rows += len(batch)
    took = time.monotonic() - began
    return (
        f"heartbeats(batch of {len(ids)}) for {took:.1f} s: {rows / took:,.0f} rows/s "
        f"({len(out.latencies) / took:,.1f} batches/s), {out.failed()}"
    )


async def reads_under_heartbeats(store: Store, ids: Sequence[str], seconds: float) -> str:
    writes, point, listing = Outcomes(), Outcomes(), Outcomes()
    end = time.monotonic() + seconds
    pending: set[asyncio.Task[None]] = set()

    async def agents() -> None:
        gap = 10.0 / HEARTBEATS_PER_10S
        next_at = time.monotonic()
        n = 0
        while time.monotonic() < end:
            instance_id = ids[n % len(ids)]
            call = store.nodes.heartbeat(instance_id, time.time(), computer_name="b")
            task = asyncio.create_task(writes.timed(call))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def reader() -> None:
        while time.monotonic() < end:
            await point.timed(store.nodes.get(random.choice(ids)))
            await asyncio.sleep(READ_GAP)

    async def lister() -> None:
        while time.monotonic() < end:
            await listing.timed(store.nodes.list())
            await asyncio.sleep(LIST_EVERY)

    await asyncio.gather(agents(), reader(), lister())
    await asyncio.gather(*pending)
    lines = [f"reads while {HEARTBEATS_PER_10S} heartbeats/10 s are written, {seconds:.0f} s:"]
    for name, o in (("nodes.get", point), ("nodes.list", listing), ("heartbeat", writes)):
        lat = ms(Summary.of(o.latencies)) if o.latencies else "none succeeded"
        lines.append(f"  {name:<10} {len(o.latencies):>6} done, {o.failed()}; {lat}")
    return "\n".join(lines)


async def bench(url: str, args: argparse.Namespace) -> None:
    store = Store.open(url)
    try:
        ids = [f"mi-{i:017x}" for i in range(args.nodes)]
        async with store.engine.begin() as conn:
            if store.engine.dialect.name == "postgresql":
                await conn.execute(text("TRUNCATE nodes CASCADE"))
            await conn.execute(insert(schema.nodes), [node_row(i) for i in ids])
        writers = ids[: args.writers]
        lag = args.loop_lag_ms / 1000
        print(f"{store.engine.dialect.name}, {args.nodes} nodes, loop lag {args.loop_lag_ms} ms")
        async with busy_loop(lag):
            if "heartbeat" in args.only:
                print(await sustained_writes(store, writers, args.seconds), flush=True)
            if "batch" in args.only:
                print(await batched_writes(store, writers, args.seconds), flush=True)
            if "single" in args.only:
                report = await sustained_writes(store, writers, args.seconds, "single")
                print(report, flush=True)
            if "reads" in args.only:
                report = await reads_under_heartbeats(store, ids, args.read_seconds)
                print(report, flush=True)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000, help="registered nodes (2000)")
    parser.add_argument("--writers", type=int, default=1000, help="concurrent writers (1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per write test (10)")
    parser.add_argument("--read-seconds", type=float, default=10.0, help="read test (10)")
    parser.add_argument("--loop-lag-ms", type=float, default=0.0, help="busy loop (0)")
    parser.add_argument("--url", help="an empty database to use instead of a SQLite file")
    parser.add_argument(
        "--only",
        default="heartbeat,batch,single,reads",
        help="measurements to run, comma-separated (heartbeat,batch,single,reads)",
    )
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    import hatchway

    print(f"hatchway from {Path(hatchway.__file__).parent}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or sqlite_url(Path(tmp) / "bench.db")
        asyncio.run(bench(url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
