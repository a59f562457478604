"""``PortSession`` in process: real TCP servers on loopback, the data channel over in-memory
sockets to a :class:`FakeClient` that speaks smux as the client end (Hatchway's client version,
so LocalPortForwarding runs in mux mode; v1, or v2 with per-stream credit when the client
accepts ``StreamWindow``), on the real clock."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from hatchway.agent.port_session import PortSession
from hatchway.agent.session import END_OF_INPUT
from hatchway.protocol.controlchannel import ConnectionRecord
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import Extensions
from hatchway.protocol.payloads import AgentTaskPayload, decode_flag, encode_flag
from hatchway.protocol.portmode import PortMode
from hatchway.protocol.smux import Mux, StreamData, StreamFinished
from tests.agent.test_shell_session import SESSION, TIMINGS, Completions
from tests.fakes import CLIENT_EXTENSIONS, FakeClient, FakeClock, FakeDialer

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server on loopback that echoes until the client's EOF, then closes."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rig:
    session: PortSession
    client: FakeClient
    completions: Completions
    reports: list[ConnectionRecord]
    mux: Mux = field(default_factory=lambda: Mux(client=True))
    seen: int = 0
    received: dict[int, bytearray] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    #: The smux byte stream must reach the endpoint in order, whichever task flushes.
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def flush(self) -> None:
        async with self.sending:
            data = self.mux.data_to_send()
            for offset in range(0, len(data), 65536):
                await self.client.send(PayloadType.OUTPUT, data[offset : offset + 65536])

    def poll(self) -> None:
        new, self.seen = bytes(self.client.output[self.seen :]), len(self.client.output)
        for event in self.mux.receive(new):
            if isinstance(event, StreamData):
                got = self.received.setdefault(event.stream_id, bytearray())
                got.extend(event.data)
                self.mux.consumed(event.stream_id, len(got))  # v2: credit for what we took
            elif isinstance(event, StreamFinished):
                self.finished.add(event.stream_id)
        if self.mux.pending():
            asyncio.get_running_loop().create_task(self.flush())

    async def until_finished(self, stream_id: int) -> bytes:
        def done() -> bool:
            self.poll()
            return stream_id in self.finished

        await self.client.until(done)
        return bytes(self.received.get(stream_id, b""))


@asynccontextmanager
async def port_session(
    port: int,
    *,
    extensions: Extensions = CLIENT_EXTENSIONS,
    plugin: str | None = None,
    **properties: Any,
) -> AsyncIterator[Rig]:
    """A Port session to ``port``; ``plugin``: the client is AWS's plugin of that version."""
    dialer = FakeDialer()
    content = {
        "schemaVersion": "1.0",
        "sessionType": "Port",
        "properties": {"portNumber": str(port), **properties},
    }
    task = AgentTaskPayload(SESSION, "AWS-StartPortForwardingSession", content, {})
    completions = Completions()
    reports: list[ConnectionRecord] = []

    async def report(session_id: str, records: list[ConnectionRecord]) -> None:
        assert session_id == SESSION
        reports.extend(records)

    loop = asyncio.get_running_loop()
    session = PortSession(task, dialer, completions, FakeClock(), loop.time, TIMINGS, report=report)
    completions.endpoint = session.endpoint
    run = loop.create_task(session.run())
    if plugin is None:
        client = FakeClient(dialer, extensions=extensions)
    else:
        client = FakeClient(dialer, aws_plugin=True, plugin_version=plugin)
    try:
        await client.accept()
        await client.handshake()
        mux = Mux(client=True, window=client.negotiated.stream_window)
        yield Rig(session, client, completions, reports, mux)
    finally:
        run.cancel()
        await asyncio.wait({run})
        await client.close()


async def roundtrip(rig: Rig, size: int) -> bool:
    """One mux stream: random data out, FIN, the echo back until the agent's FIN."""
    data = os.urandom(size)
    stream = rig.mux.open_stream()
    for offset in range(0, size, 100_000):
        rig.mux.send(stream, data[offset : offset + 100_000])
        await rig.flush()
    rig.mux.finish(stream)
    await rig.flush()
    echoed = await rig.until_finished(stream)
    return hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


async def test_mux_carries_concurrent_connections_intact_with_half_close() -> None:
    async with echo_server() as target, port_session(target, type="LocalPortForwarding") as rig:
        assert rig.session.mode is PortMode.MUX
        sizes = [1, 1000, 70_000, 300_000, 1_000_000, 2_500_000, 50_000, 123_457]
        assert all(await asyncio.gather(*(roundtrip(rig, n) for n in sizes)))
        rig.session.cancel("done")
        assert await rig.completions.wait() == ("Cancelled", "done")
        closed = [r for r in rig.reports if r.closed is not None]
        assert sorted(r.bytes_out for r in closed) == sorted(sizes)
        assert all(r.bytes_in == r.bytes_out and not r.error for r in closed)
        assert all(r.destination == f"localhost:{target}" for r in rig.reports)


async def test_a_refused_destination_fails_that_stream_only() -> None:
    async with echo_server() as target, port_session(target, type="LocalPortForwarding") as rig:
        rig.session.port = free_port()  # nothing listens there (as if the port were wrong)
        refused = rig.mux.open_stream()
        await rig.flush()
        assert await rig.until_finished(refused) == b""
        flags = [decode_flag(p) for p in rig.client.payloads(PayloadType.FLAG)]
        assert flags == [FlagValue.CONNECT_TO_PORT_ERROR]
        rig.session.port = target
        assert await roundtrip(rig, 200_000)  # the session goes on
        rig.session.cancel("done")
        await rig.completions.wait()
        assert "refused" in rig.reports[0].error


async def test_stdio_relays_both_ways_and_the_destination_s_eof_ends_the_session() -> None:
    async with echo_server() as target, port_session(target) as rig:
        assert rig.session.mode is PortMode.STDIO
        data = os.urandom(3_000_000)
        for offset in range(0, len(data), 65536):
            await rig.client.send(PayloadType.OUTPUT, data[offset : offset + 65536])
        await rig.client.send(PayloadType.FLAG, encode_flag(END_OF_INPUT))  # type: ignore[arg-type]
        assert await rig.completions.wait() == ("Success", "")
        assert hashlib.sha256(rig.client.output).digest() == hashlib.sha256(data).digest()
        [record] = rig.reports
        assert record.bytes_in == record.bytes_out == len(data)


async def test_a_denied_destination_is_refused_by_name() -> None:
    async with port_session(80, host="169.254.169.254") as rig:
        status, output = await rig.completions.wait()
        assert status == "Failed"
        assert output == "169.254.169.254:80 is not allowed (a link-local service)"


async def test_an_unreachable_destination_fails_the_stdio_session_naming_it() -> None:
    port = free_port()
    async with port_session(port, host="127.0.0.1") as rig:
        status, output = await rig.completions.wait()
        assert (status, output) == (
            "Failed",
            f"cannot connect to 127.0.0.1:{port}: connection refused",
        )


# ---- smux v2: per-stream credit with Hatchway's client ---------------------------------------

WINDOW = 256 * 1024
V2 = Extensions(max_payload_size=65536, exit_code=True, stream_window=WINDOW)


@asynccontextmanager
async def moody_server() -> AsyncIterator[int]:
    """Connections whose first byte is ``S`` are never read again; the others echo everything,
    that byte included."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(1)
        if first == b"S":
            held.append(writer)
            return
        writer.write(first)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_v2_is_negotiated_with_hatchway_s_client_only() -> None:
    async with echo_server() as target:
        async with port_session(target, extensions=V2, type="LocalPortForwarding") as rig:
            assert rig.mux.version == 2
            assert await roundtrip(rig, 3 * WINDOW + 123)  # several windows' worth, credited
        async with port_session(target, type="LocalPortForwarding") as rig:
            assert rig.mux.version == 1  # a client without StreamWindow: smux v1
            assert await roundtrip(rig, 1000)


async def test_v2_a_destination_that_does_not_read_slows_only_its_own_stream() -> None:
    async with (
        moody_server() as target,
        port_session(target, extensions=V2, type="LocalPortForwarding") as rig,
    ):
        stalled = rig.mux.open_stream()
        rig.mux.send(stalled, b"S" + bytes(40 * WINDOW))
        await rig.flush()
        # The agent grants credit only for what the destination's socket took: the kernel's
        # buffers, then nothing. The client's backlog keeps the rest.
        for _ in range(50):
            await asyncio.sleep(0.02)
            rig.poll()
            await rig.flush()
        assert rig.mux.backlog(stalled) > 10 * WINDOW
        conn = rig.session.connections[0]
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() <= WINDOW  # the bound per stream
        # Another stream of the same session goes on, both ways.
        data = b"E" + os.urandom(2 * WINDOW)
        other = rig.mux.open_stream()
        rig.mux.send(other, data)
        rig.mux.finish(other)
        await rig.flush()
        echoed = await rig.until_finished(other)
        assert echoed == data


async def test_v2_client_data_for_a_closed_destination_is_credited_not_stuck() -> None:
    async with (
        echo_server() as target,
        port_session(target, extensions=V2, type="LocalPortForwarding") as rig,
    ):
        stream = rig.mux.open_stream()
        rig.mux.send(stream, b"x")
        rig.mux.finish(stream)
        await rig.flush()
        await rig.until_finished(stream)  # the echo server closed after our FIN
        # A stream whose destination went away while more than a window was still to come.
        late = rig.mux.open_stream()
        await rig.flush()
        async with asyncio.timeout(30):
            while len(rig.session.connections) < 2 or not rig.session.connections[1].transport:
                await asyncio.sleep(0.01)  # the agent dials: nothing reaches the client
        transport = rig.session.connections[1].transport
        assert transport is not None
        transport.abort()  # the destination reset
        await rig.until_finished(late)
        rig.mux.send(late, bytes(4 * WINDOW))
        await rig.flush()
        await rig.client.until(lambda: (rig.poll(), rig.mux.backlog(late) == 0)[1])


async def test_closed_connections_are_reported_while_the_session_runs() -> None:
    async with echo_server() as target, port_session(target, type="LocalPortForwarding") as rig:
        assert await roundtrip(rig, 1000)
        async with asyncio.timeout(30):
            while not rig.reports:  # batched, at most REPORT_INTERVAL later
                await asyncio.sleep(0.05)
        assert not rig.completions.reported.is_set()  # the session goes on
        [record] = rig.reports
        assert record.bytes_out == 1000 and record.closed is not None
        assert await roundtrip(rig, 10)
    assert len(rig.reports) == 2  # the second when the session ended; none twice


# ---- AWS's session-manager-plugin as the client (docs/protocol.md §8.4, §8.5) -----------------


async def test_aws_plugin_gets_smux_v1_and_aws_acks() -> None:
    async with (
        echo_server() as target,
        port_session(target, plugin="1.2.677.0", type="LocalPortForwarding") as rig,
    ):
        assert rig.session.mode is PortMode.MUX
        assert rig.mux.version == 1 and not rig.session.hatchway_peer
        assert rig.session.endpoint.cumulative_acks  # the plugin's duplicate-dropping (§6.6)
        assert all(await asyncio.gather(*(roundtrip(rig, n) for n in (1, 70_000, 2_000_000))))
        # Everything the agent sent parses as smux v1 (no UPD, no version 2 frame).
        Mux(client=True).receive(bytes(rig.client.output))


async def test_an_old_plugin_gets_basic_mode_one_connection_at_a_time() -> None:
    async with (
        echo_server() as target,
        port_session(target, plugin="1.1.61.0", type="LocalPortForwarding") as rig,
    ):
        assert rig.session.mode is PortMode.BASIC
        await rig.client.send(PayloadType.OUTPUT, b"first")
        await rig.client.until(lambda: bytes(rig.client.output) == b"first")
        await rig.client.send(PayloadType.FLAG, encode_flag(FlagValue.DISCONNECT_TO_PORT))
        await rig.client.send(PayloadType.OUTPUT, b"second")  # dials again
        await rig.client.until(lambda: bytes(rig.client.output) == b"firstsecond")
        assert len(rig.session.connections) == 2


async def test_old_plugin_keepalive_nops_are_sent_by_the_agent() -> None:
    async with (
        echo_server() as target,
        port_session(target, plugin="1.2.331.0", type="LocalPortForwarding") as rig,
    ):
        assert rig.session.mode is PortMode.MUX  # keepalive on for ClientVersion <= 1.2.331.0
        await rig.client.until(
            lambda: bytes(rig.client.output)[:8] == bytes.fromhex("0103000000000000")
        )


async def test_v2_credit_for_data_sent_before_the_dial_finished_is_granted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client may spend its whole window while the agent still dials; the update for
    that data must leave when the dial is done, though nothing else arrives to prompt it."""
    from hatchway.agent import port_session as module

    real_resolve = module.resolve

    async def slow_resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        await asyncio.sleep(0.3)
        return await real_resolve(host, port)

    monkeypatch.setattr(module, "resolve", slow_resolve)

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while data := await reader.read(65536):  # reads everything, answers only at the end
            digest.update(data)
        writer.write(digest.digest())
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    try:
        async with port_session(target, extensions=V2, type="LocalPortForwarding") as rig:
            data = os.urandom(4 * WINDOW)
            stream = rig.mux.open_stream()
            rig.mux.send(stream, data)  # one window leaves now, the rest waits for credit
            await rig.flush()
            assert rig.mux.backlog(stream) == 3 * WINDOW
            await rig.client.until(lambda: (rig.poll(), rig.mux.backlog(stream) == 0)[1])
            rig.mux.finish(stream)
            await rig.flush()
            assert await rig.until_finished(stream) == hashlib.sha256(data).digest()
    finally:
        server.close()
        await server.wait_closed()
