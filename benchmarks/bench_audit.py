"""Audit trail: events per second the server records, and how fast a trail verifies.

python benchmarks/bench_audit.py [--seconds 5] [--writers 64] [--api-clients 16] [--url URL]
                                 [--verify-records 100000]

1. Store: --writers tasks append one event each per call, back to back, for --seconds
   (``store.audit.append``: the chain head's update, the record, its resource names; calls
   that wait for the write turn are group-committed in one transaction): events per second,
   and the same with 10 events per call. SQLite in a temporary directory,
   or the empty PostgreSQL database --url names (``postgresql+asyncpg://…``), where four
   stores on one database stand for four replicas taking turns on the chain's head.
2. API: a server built as ``hatchway server --no-tls`` does, in this process, and
   --api-clients clients calling a read (``GetUser``) and a change (``TagUser``, recorded in
   its own change's transaction) back to back over loopback HTTP, SigV4-signed: calls (= audit
   records) per second. Clients and server share this process's one core.
3. Verification: a trail of --verify-records records, verified by ``VerifyAuditTrail``'s code
   (every hash, every link, the lookup columns): records per second.

Figures only, no assertion on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from common import machine_line

from hatchway.audit.events import SERVICE_IDENTITY, AuditEvent, AuditResource, EventCode
from hatchway.auth.sigv4 import Credentials, sign_request
from hatchway.server.app import build_server
from hatchway.server.audit import AuditEvents
from hatchway.server.authz import Arns
from hatchway.server.bootstrap import ensure_admin
from hatchway.server.settings import ServerSettings
from hatchway.server.trail import AuditTrailService
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

EVENTS = AuditEvents(Arns("local", "123456789012"), time.time)


def event(i: int) -> AuditEvent:
    return AuditEvent(
        event_id=str(uuid.uuid4()),
        event_time=time.time(),
        code=EventCode.API_CALL,
        event_name="StartSession",
        event_source="ssm.amazonaws.com",
        identity=SERVICE_IDENTITY,
        action="ssm:StartSession",
        source_ip="127.0.0.1",
        request_id=str(uuid.uuid4()),
        resources=(AuditResource("AWS::SSM::ManagedInstance", f"mi-{i:017x}"),),
        request_parameters={"Target": f"mi-{i:017x}", "Reason": "benchmark"},
    )


async def timed(
    seconds: float, workers: int, step: Callable[[int], Awaitable[int]]
) -> tuple[float, int]:
    """Run ``step`` back to back in ``workers`` tasks for ``seconds``: (rate, failures)."""
    done = failed = 0
    end = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done, failed
        while time.monotonic() < end:
            try:
                count = await step(n)  # not ``done += await …``: that reads done before awaiting
            except Exception:
                failed += 1
            else:
                done += count

    began = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return done / (time.monotonic() - began), failed


async def bench_store(url: str, seconds: float, writers: int) -> list[str]:
    stores = [Store.open(url)] + [
        Store.open(url, run_migrations=False) for _ in range(3 if "postgresql" in url else 0)
    ]
    try:

        async def one(n: int) -> int:
            await stores[n % len(stores)].audit.append(event(n))
            return 1

        async def ten(n: int) -> int:
            await stores[n % len(stores)].audit.append(*(event(n) for _ in range(10)))
            return 10

        single, failed1 = await timed(seconds, writers, one)
        batched, failed10 = await timed(seconds, writers, ten)
        verdict = await AuditTrailService(stores[0], EVENTS).verdict()
    finally:
        for store in stores:
            await store.close()
    backend = "PostgreSQL, 4 stores" if "postgresql" in url else "SQLite"
    return [
        f"store ({backend}), {writers} writers, 1 event per append: "
        f"{single:,.0f} events/s ({failed1} failed)",
        f"store ({backend}), {writers} writers, 10 events per append: "
        f"{batched:,.0f} events/s ({failed10} failed)",
        f"chain after the run: {verdict.summary()[:60]}…",
    ]


async def bench_api(data_dir: Path, seconds: float, clients: int) -> list[str]:
    server = await build_server(ServerSettings(data_dir=data_dir, port=0, tls=False))
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        admin = await ensure_admin(server.store, server.box, "admin", time.time())
        credentials = Credentials(admin.access_key_id, admin.secret_access_key)
        url = f"http://{host}:{port}/"
        before = (await server.store.audit.head()).sequence

        async with aiohttp.ClientSession() as http:

            async def call(operation: str, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode()
                headers = sign_request(
                    "POST",
                    url,
                    {
                        "Content-Type": "application/x-amz-json-1.1",
                        "X-Amz-Target": f"Hatchway.{operation}",
                    },
                    payload,
                    credentials=credentials,
                    region="local",
                    now=datetime.now(UTC),
                )
                async with http.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{operation}: HTTP {response.status}")

            async def read(_: int) -> int:
                await call("GetUser", {})
                return 1

            async def change(n: int) -> int:
                await call(
                    "TagUser", {"UserName": "admin", "Tags": [{"Key": "k", "Value": str(n)}]}
                )
                return 1

            reads, failed_reads = await timed(seconds, clients, read)
            changes, failed_changes = await timed(seconds, clients, change)
        recorded = (await server.store.audit.head()).sequence - before
        verdict = await AuditTrailService(server.store, EVENTS).verdict()
    finally:
        await runner.cleanup()
        await server.close()
    return [
        f"API, {clients} clients, GetUser (record in a transaction of its own, group-committed): "
        f"{reads:,.0f} calls/s ({failed_reads} failed)",
        f"API, {clients} clients, TagUser (record in the change's transaction): "
        f"{changes:,.0f} calls/s ({failed_changes} failed)",
        f"records written during the API run: {recorded:,}; chain intact: {verdict.intact}",
    ]


async def bench_verify(url: str, records: int) -> list[str]:
    store = Store.open(url)
    try:
        for _ in range(records // 1000):
            await store.audit.append(*(event(i) for i in range(1000)))
        began = time.monotonic()
        verdict = await AuditTrailService(store, EVENTS).verdict()
        took = time.monotonic() - began
    finally:
        await store.close()
    return [
        f"verify {verdict.records:,} records: {took:.2f} s, {verdict.records / took:,.0f} "
        f"records/s (intact: {verdict.intact})"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--api-clients", type=int, default=16)
    parser.add_argument("--verify-records", type=int, default=100_000)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    for line in run(args.seconds, args.writers, args.api_clients, args.verify_records, args.url):
        print(line, flush=True)
    return 0


def run(
    seconds: float, writers: int, clients: int, verify_records: int, url: str | None = None
) -> list[str]:
    """Every figure, one line each (run_all.py prints them in its summary)."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines += asyncio.run(bench_store(url or sqlite_url(root / "store.db"), seconds, writers))
        lines += asyncio.run(bench_api(root / "server", seconds, clients))
        if verify_records > 0:
            lines += asyncio.run(bench_verify(sqlite_url(root / "verify.db"), verify_records))
    return lines


if __name__ == "__main__":
    sys.exit(main())
