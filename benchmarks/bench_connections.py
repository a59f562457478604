"""Connection bursts against the server: its memory, its caps, and whether it still serves.

Starts a Hatchway server alone and, for each kind of burst, opens ``--connections`` idle
connections spread over several loopback source addresses (127.0.0.2, 127.0.0.3, …), holds
them, closes them, and reads the server's resident memory (``VmRSS``) before, while they are
open and after they are gone. Kinds of burst:

* ``bare``: TCP connections that never start TLS (the server gives up on them after its TLS
  handshake time-out);
* ``tls``: TLS connections that never send a request (closed after the request-head time-out).

While each burst is held, a fresh client from 127.0.0.1 fetches ``/healthz``: the port must
not be locked out. Then one source opens more connections than its cap allows: the excess is
closed at once, and another source is still served.

Prints RSS in MiB, and the time each ``/healthz`` took. Never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from common import exit_cleanly_on_sigterm, machine_line
from hatchway_env import ServerEnv, hatchway_server

BATCH = 250  # connections opened concurrently (TLS handshakes cost the server CPU)
SETTLE = 3.0  # seconds after a burst before memory is read again


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Burst:
    kind: str
    opened: int
    refused: int
    rss_before: float
    rss_during: float
    rss_after: float
    rss_later: float
    health_ms: float


class Target:
    def __init__(self, srv: ServerEnv) -> None:
        url = urllib.parse.urlsplit(srv.endpoint)
        assert url.hostname is not None and url.port is not None
        self.host, self.port = url.hostname, url.port
        self.ctx = ssl.create_default_context(cafile=str(srv.ca_file))
        self.pid = srv.pid

    async def open(self, source: str, tls: bool) -> asyncio.StreamWriter | None:
        """One idle connection from ``source``; None if the server closed it at once."""
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                local_addr=(source, 0),
                ssl=self.ctx if tls else None,
                server_hostname=self.host if tls else None,
                ssl_handshake_timeout=30 if tls else None,
            )
        except (TimeoutError, OSError, ssl.SSLError):
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            # A refused connection is closed at once: end of stream within a moment.
            if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                writer.close()
                return None
        return writer

    async def burst(self, count: int, sources: int, tls: bool) -> list[asyncio.StreamWriter]:
        writers: list[asyncio.StreamWriter] = []
        addresses = [f"127.0.0.{2 + i % sources}" for i in range(count)]
        for start in range(0, count, BATCH):
            got = await asyncio.gather(
                *(self.open(a, tls) for a in addresses[start : start + BATCH])
            )
            writers.extend(w for w in got if w is not None)
        return writers

    async def health_ms(self) -> float:
        """Milliseconds for a new client from 127.0.0.1 to get ``/healthz`` (inf if refused)."""
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.ctx, server_hostname=self.host
                ),
                10,
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (TimeoutError, OSError):
            return float("inf")
        return (time.perf_counter() - t0) * 1000 if b" 200 " in answer else float("inf")


async def close_all(writers: Sequence[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def measure(target: Target, kind: str, count: int, sources: int) -> Burst:
    before = rss_mib(target.pid)
    writers = await target.burst(count, sources, tls=kind == "tls")
    during = rss_mib(target.pid)
    health = await target.health_ms()
    await close_all(writers)
    await asyncio.sleep(SETTLE)
    after = rss_mib(target.pid)
    await asyncio.sleep(10)  # past every time-out and the guard's memory release
    later = rss_mib(target.pid)
    return Burst(kind, len(writers), count - len(writers), before, during, after, later, health)


async def over_cap(target: Target, cap: int) -> tuple[int, int, float]:
    """From one source, ``cap + 200`` connections: how many the server kept and refused, and
    how long /healthz from another source took meanwhile."""
    writers = await target.burst(cap + 200, 1, tls=False)
    health = await target.health_ms()
    kept = len(writers)
    await close_all(writers)
    return kept, cap + 200 - kept, health


def report(bursts: list[Burst], cap: int, kept: int, refused: int, health: float) -> str:
    lines = [
        "connection bursts (server RSS in MiB: before / while open / 3 s after close / 13 s)",
    ]
    for b in bursts:
        lines.append(
            f"  {b.kind:5} {b.opened:6} open, {b.refused:4} refused   "
            f"{b.rss_before:7.1f} {b.rss_during:8.1f} {b.rss_after:8.1f} {b.rss_later:8.1f}   "
            f"({b.rss_during - b.rss_before:+.1f} while open, "
            f"{b.rss_later - b.rss_before:+.1f} after); /healthz meanwhile {b.health_ms:.0f} ms"
        )
    lines.append(
        f"  one source over its cap of {cap}: {kept} kept, {refused} closed at once; "
        f"/healthz from another source meanwhile {health:.0f} ms"
    )
    return "\n".join(lines)


async def run(srv: ServerEnv, count: int, sources: int, cap: int, rounds: int) -> str:
    target = Target(srv)
    for _ in range(20):  # warm up: imports, first TLS handshakes, caches
        await target.health_ms()
    bursts = []
    for _ in range(rounds):
        for kind in ("bare", "tls"):
            bursts.append(await measure(target, kind, count, sources))
    kept, refused, health = await over_cap(target, cap)
    return report(bursts, cap, kept, refused, health)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000, help="per burst (5000)")
    parser.add_argument("--sources", type=int, default=5, help="source addresses (5)")
    parser.add_argument("--per-source-cap", type=int, default=2000, help="server's (2000)")
    parser.add_argument("--rounds", type=int, default=2, help="bursts of each kind (2)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    print(machine_line(), flush=True)
    with hatchway_server("--max-connections-per-source", str(args.per_source_cap)) as srv:
        print(asyncio.run(run(srv, args.connections, args.sources, args.per_source_cap,
                              args.rounds)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
