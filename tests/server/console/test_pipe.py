"""The in-memory WebSocket pair between the console's terminal bridge and the gateway."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.errors import ChannelClosed, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.server.console import pipe as pipe_module
from hatchway.server.console.pipe import QUEUE, pipe


def test_messages_arrive_in_order_then_the_close_with_its_code() -> None:
    async def main() -> None:
        client, server = pipe("t")
        await client.send_text("open")
        assert await client.send(b"one")
        assert client.send_now([b"two", b"three"])
        await client.close(CloseCode.ENDED, "bye")
        assert await server.receive_text() == "open"
        assert [m async for m in server] == [b"one", b"two", b"three"]
        assert (server.close_code, server.close_reason) == (CloseCode.ENDED, "bye")
        assert not await client.send(b"late") and not client.send_now([b"late"])
        assert not await server.send(b"to a closed peer")

    asyncio.run(main())


def test_the_first_message_must_be_text_and_come_before_the_close() -> None:
    async def main() -> None:
        client, server = pipe("t")
        await client.send(b"binary")
        with pytest.raises(RemoteProtocolError):
            await server.receive_text()
        client, server = pipe("t")
        client.abort()
        with pytest.raises(ChannelClosed):
            await server.receive_text()
        assert server.close_code == 1006
        with pytest.raises(ChannelClosed):
            await client.send_text("after the close")

    asyncio.run(main())


def test_a_full_peer_holds_sends_back_and_a_stalled_one_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipe_module, "SEND_TIMEOUT", 0.2)

    async def main() -> None:
        client, server = pipe("t")
        for i in range(QUEUE):
            assert await client.send(b"%d" % i)
        assert not client.send_now([b"over"])  # no room: the caller must await send()
        waiting = asyncio.ensure_future(client.send(b"next"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        reader = aiter(server)
        assert await anext(reader) == b"0"  # room again: the send goes through
        assert await waiting is True
        assert not await client.send(b"nobody reads")  # full, unread for SEND_TIMEOUT
        assert client.closed and client.close_code == CloseCode.STALLED

    asyncio.run(main())
