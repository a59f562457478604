"""The CLI's WebSocket (websockets' sans-I/O client over our own transport) against a scripted
server on loopback: messages both ways, the size limit, TLS, time-outs, pings, closing."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.frames import Opcode

from hatchway.errors import ConfigError, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from hatchway.server.certificates import ensure_tls_identity, ssl_server_context
from hatchway.transport.sansio_socket import ABNORMAL_CLOSURE, UpgradeRefused, WebSocket, connect
from tests.transport.wsserver import ScriptedServer, ServerEnd, close_of, scripted_server


async def open_pair(server: ScriptedServer, **options: Any) -> tuple[WebSocket, ServerEnd]:
    """Connect while the scripted server accepts the upgrade. The server reads only when a
    test says so, so closing is not waited for long unless the test asks."""
    options.setdefault("close_timeout", 0.1)

    async def accept() -> ServerEnd:
        end = await server.accept()
        await end.upgrade()
        return end

    accepting = asyncio.create_task(accept())
    ws = await connect(server.url, **options)
    return ws, await accepting


async def next_message(ws: WebSocket, timeout: float = 5) -> bytes | None:
    """The next binary message, or None once the connection has ended."""
    async with asyncio.timeout(timeout):
        async for message in ws:
            return message
    return None


@pytest.mark.asyncio
async def test_binary_messages_both_ways_in_order_and_text_is_skipped() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        assert end.request is not None
        assert end.request.path == "/v1/data-channel/s-1"
        assert end.request.headers["User-Agent"].startswith("hatchway/")
        assert "Sec-WebSocket-Extensions" not in end.request.headers  # no compression

        await ws.send_text('{"open": true}')
        assert await ws.send(b"one")
        assert ws.send_now([b"two", b"three"])
        frames = [await end.receive_data() for _ in range(4)]
        assert [(f.opcode, f.data) for f in frames] == [
            (Opcode.TEXT, b'{"open": true}'),
            (Opcode.BINARY, b"one"),
            (Opcode.BINARY, b"two"),
            (Opcode.BINARY, b"three"),
        ]

        end.send_text("ignored")
        end.send_binary(b"a")
        end.send_binary(b"b", fin=False)  # a fragmented message comes out whole
        end.send_continuation(b"c", fin=True)
        assert await next_message(ws) == b"a"
        assert await next_message(ws) == b"bc"
        await ws.close()


@pytest.mark.asyncio
async def test_a_message_of_exactly_1_mib_is_taken_and_one_byte_more_closes_with_1009() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        end.send_binary(b"x" * DEFAULT_MAX_FRAME_SIZE)
        assert await next_message(ws) == b"x" * DEFAULT_MAX_FRAME_SIZE
        end.send_binary(b"x" * (DEFAULT_MAX_FRAME_SIZE + 1))
        assert close_of(await end.receive_data()).code == CloseCode.TOO_BIG
        assert await next_message(ws) is None  # the server's echo of the close ends it
        assert ws.closed and ws.close_code == CloseCode.TOO_BIG


@pytest.mark.asyncio
async def test_the_close_code_and_reason_of_the_server_end_the_iteration() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        end.send_binary(b"last words")
        end.send_close(CloseCode.ENDED, "session ended")
        assert [m async for m in ws] == [b"last words"]  # what came before the close
        assert ws.close_code == CloseCode.ENDED
        assert ws.close_reason == "session ended"
        assert not await ws.send(b"late")
        assert not ws.send_now([b"late"])
        await ws.close()  # after the server's close: returns, changes nothing
        assert ws.close_code == CloseCode.ENDED


@pytest.mark.asyncio
async def test_close_sends_code_and_reason_and_waits_for_the_server() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        closing = asyncio.create_task(ws.close(CloseCode.NORMAL, "bye"))
        close = close_of(await end.receive_data())
        assert (close.code, close.reason) == (CloseCode.NORMAL, "bye")
        await end.wait_closed()  # the server ends TCP after the handshake; close() returns
        await asyncio.wait_for(closing, 5)
        assert ws.closed and ws.close_code == CloseCode.NORMAL
        await ws.close(CloseCode.POLICY)  # once only
        assert ws.close_code == CloseCode.NORMAL


@pytest.mark.asyncio
async def test_close_is_bounded_when_the_server_never_answers() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server, close_timeout=0.05)
        await ws.close()  # the server reads nothing: dropped after close_timeout
        assert await next_message(ws) is None
        with pytest.raises(EOFError):
            while True:
                await end.receive(timeout=5)  # the close frame, then the end of the stream


@pytest.mark.asyncio
async def test_a_connection_lost_without_a_close_frame_is_1006() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        end.abort()
        assert await next_message(ws) is None
        assert ws.close_code == ABNORMAL_CLOSURE


@pytest.mark.asyncio
async def test_pings_answered_keep_the_connection_and_a_missing_pong_drops_it() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server, ping_interval=0.01, ping_timeout=5)
        for _ in range(3):  # the server answers each ping (its protocol does)
            frame = await end.receive()
            assert frame.opcode is Opcode.PING
        assert not ws.closed
        await ws.close()

        ws, end = await open_pair(server, ping_interval=0.01, ping_timeout=0.05)
        # The server reads nothing, so it answers no ping.
        assert await next_message(ws) is None
        assert ws.close_code == ABNORMAL_CLOSURE
        assert "no pong" in ws.close_reason


@pytest.mark.asyncio
async def test_a_server_that_stops_reading_applies_backpressure_then_counts_as_stalled() -> None:
    async with scripted_server() as server:
        ws, _end = await open_pair(server, send_timeout=0.2, ping_interval=None)
        chunk = b"x" * 65536
        while ws.send_now([chunk]):  # until the kernel's and the transport's buffers are full
            pass
        assert not ws.closed  # declined: the transport is paused
        assert not await ws.send(chunk)  # waits send_timeout for the server to read, gives up
        assert ws.closed and ws.close_code == CloseCode.STALLED


@pytest.mark.asyncio
async def test_tls_is_verified_with_the_given_ca(tmp_path: Path) -> None:
    identity = ensure_tls_identity(tmp_path / "tls", hostname="localhost")
    async with scripted_server(tls=ssl_server_context(identity)) as server:
        assert server.url.startswith("wss://")
        trusted = ssl.create_default_context(cafile=str(identity.ca_cert_path))
        ws, end = await open_pair(server, ssl_context=trusted)
        assert await ws.send(b"over tls")
        assert (await end.receive_data()).data == b"over tls"
        await ws.close()

        other = ensure_tls_identity(tmp_path / "other", hostname="localhost")
        untrusted = ssl.create_default_context(cafile=str(other.ca_cert_path))
        with pytest.raises(ConfigError, match=r"TLS verification .* failed"):
            await connect(server.url, untrusted)


@pytest.mark.asyncio
async def test_an_upgrade_without_an_answer_times_out() -> None:
    async with scripted_server() as server:
        with pytest.raises(Unavailable, match=r"within 0\.1 s"):
            await connect(server.url, open_timeout=0.1)  # the server never answers


@pytest.mark.asyncio
async def test_a_refused_upgrade_says_why() -> None:
    async with scripted_server() as server:

        async def refuse() -> None:
            end = await server.accept()
            await end.upgrade(status=403, headers=[("X-Hatchway-Error", "bad signature")])

        refusing = asyncio.create_task(refuse())
        with pytest.raises(UpgradeRefused, match="HTTP 403 bad signature") as refused:
            await connect(server.url)
        await refusing
    # The agent's dialer tells a refused identity from a busy server by these
    # (docs/protocol.md §10.2).
    assert isinstance(refused.value, Unavailable)
    assert refused.value.status == 403
    assert refused.value.headers["x-hatchway-error"] == "bad signature"


@pytest.mark.asyncio
async def test_extra_headers_go_with_the_upgrade() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server, headers={"Authorization": "signed", "X-Nonce": "n-1"})
        assert end.request is not None
        assert end.request.headers["Authorization"] == "signed"
        assert end.request.headers["X-Nonce"] == "n-1"
        await ws.close()


@pytest.mark.asyncio
async def test_deliver_hands_over_queued_then_arriving_messages_in_order() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        end.send_binary(b"queued-1")
        end.send_binary(b"queued-2")
        await asyncio.sleep(0.1)  # received before anybody asks
        got: list[bytes] = []
        arrived = asyncio.Event()

        def handler(message: bytes) -> None:
            got.append(message)
            if message == b"last":
                arrived.set()

        delivering = asyncio.create_task(ws.deliver(handler))
        end.send_binary(b"arriving")
        end.send_binary(b"last")
        async with asyncio.timeout(5):
            await arrived.wait()
        assert got == [b"queued-1", b"queued-2", b"arriving", b"last"]
        assert not delivering.done()
        end.send_close(CloseCode.ENDED, "bye")
        async with asyncio.timeout(5):
            await delivering  # ends with the connection, as iteration does
        assert ws.close_code == CloseCode.ENDED
        await ws.close()


@pytest.mark.asyncio
async def test_a_handler_that_fails_drops_the_connection_and_deliver_raises_it() -> None:
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        got: list[bytes] = []

        def handler(message: bytes) -> None:
            got.append(message)
            raise ValueError("cannot take it")

        delivering = asyncio.create_task(ws.deliver(handler))
        await asyncio.sleep(0)
        end.send_binary(b"one")
        end.send_binary(b"two")
        with pytest.raises(ValueError, match="cannot take it"):
            async with asyncio.timeout(5):
                await delivering
        assert got == [b"one"]  # nothing after the failure
        assert ws.closed


class CountingTransport:
    """Wraps a transport and counts the writes handed to it."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(1)
        self.inner.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self.writes.append(len(chunks))
        self.inner.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.asyncio
async def test_frames_sent_together_leave_in_one_write() -> None:
    """Frames handed over together (bulk output, data with acknowledgements riding along):
    one TLS write, one system call."""
    async with scripted_server() as server:
        ws, end = await open_pair(server)
        counting = CountingTransport(ws._transport)  # type: ignore[arg-type]
        ws._transport = counting  # type: ignore[assignment]
        assert ws.send_now([b"echo", b"ack"])
        assert await ws.send(b"alone")
        assert counting.writes == [2, 1]
        frames = [await end.receive_data() for _ in range(3)]
        assert [f.data for f in frames] == [b"echo", b"ack", b"alone"]
        await ws.close()


@pytest.mark.asyncio
async def test_nobody_listening_is_unavailable_and_a_bad_url_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(Unavailable, match="cannot reach"):
            await connect(f"ws://127.0.0.1:{port}/")
    with pytest.raises(ConfigError):
        await connect("https://example.invalid/")


def test_the_client_path_does_not_import_aiohttp() -> None:
    """Start-up time: the CLI's session code pulls in neither the server's stack nor
    websockets' asyncio layer."""
    code = (
        "import sys, hatchway.cli, hatchway.client.session, hatchway.transport.sansio_socket;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('aiohttp', 'websockets.asyncio', 'botocore', 'cryptography'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_tls_round_trip_on_uvloop(tmp_path: Path) -> None:
    """The CLI runs on uvloop, whose transports differ from asyncio's (e.g. its TLS one)."""
    uvloop = pytest.importorskip("uvloop")
    identity = ensure_tls_identity(tmp_path / "tls", hostname="localhost")

    async def round_trip() -> bytes | None:
        async with scripted_server(tls=ssl_server_context(identity)) as server:
            trusted = ssl.create_default_context(cafile=str(identity.ca_cert_path))
            ws, end = await open_pair(server, ssl_context=trusted)
            assert ws.send_now([b"ping"])
            end.send_binary((await end.receive_data()).data + b"-pong")
            reply = await next_message(ws)
            await ws.close()
            return reply

    assert uvloop.run(round_trip()) == b"ping-pong"
