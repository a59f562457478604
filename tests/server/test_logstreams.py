"""Live log streams in process: the tap the gateway feeds, the writer's turns over a real SQLite
store (sequencing, lines, flushes, drops when the store falls behind, resuming after a restart),
and the choice of a session's log group."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hatchway.errors import StoreError
from hatchway.protocol.frames import MessageType, PayloadType, encode_frame, make_frame, peek_header
from hatchway.server.logstreams import LogStreamService, StreamTap, choose_log_group
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

SID = "alice-0123456789abcdef0"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def feed(tap: StreamTap, seq: int, payload: bytes, ptype: int = PayloadType.OUTPUT) -> None:
    data = encode_frame(
        make_frame(
            MessageType.OUTPUT_STREAM_DATA, payload, now=T0, sequence_number=seq, payload_type=ptype
        )
    )
    tap.feed(peek_header(data), data)


async def messages(store: Store, group: str = "g", stream: str = SID) -> list[tuple[int, str]]:
    g = await store.logs.get_group(group)
    assert g is not None
    s = await store.logs.get_stream(g.group_id, stream)
    assert s is not None
    page = await store.logs.events(stream_id=s.stream_id, limit=1000, max_bytes=10**6)
    return [(e.timestamp_ms, e.message) for e in page.events]


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(sqlite_url(tmp_path / "h.db"))
    yield s
    asyncio.run(s.close())


def test_output_is_stored_in_order_once_as_lines_and_the_stream_ends(store: Store) -> None:
    async def main() -> None:
        clock = Clock()
        service = LogStreamService(store, "g", clock, flush_after=0.5)
        assert await service.begin(SID, "Port", "g") is None  # port sessions are not streamed
        assert await service.begin(SID, "Standard_Stream", None) is None  # no group chosen
        tap = await service.begin(SID, "Standard_Stream", "g")
        assert tap is not None
        feed(tap, 0, b"{}", PayloadType.HANDSHAKE_REQUEST)  # counted in the sequence only
        feed(tap, 2, b"two\r\n")  # ahead of 1: waits for it
        feed(tap, 1, b"\x1b[31mone\x1b[0m\r\npartial")
        feed(tap, 1, b"\x1b[31mone\x1b[0m\r\npartial")  # a re-send after a reconnect
        feed(tap, 3, b"err\n", PayloadType.STDERR)
        assert await service.turn() == 3
        assert await messages(store) == [
            (T0 * 1000, "\x1b[31mone\x1b[0m\r\n"),
            (T0 * 1000, "partialtwo\r\n"),  # stamped when its first byte came
            (T0 * 1000, "err\n"),
        ]
        clock.now += 1
        feed(tap, 4, b"$ ")
        await service.turn()
        assert (await messages(store))[-1] == (T0 * 1000, "err\n")
        clock.now += 0.6  # the prompt has waited long enough for a newline
        await service.turn()
        assert (await messages(store))[-1] == ((T0 + 1) * 1000, "$ ")
        feed(tap, 5, b"bye")
        await service.finish(SID)
        await service.finish(SID)  # idempotent
        feed(tap, 6, b"after the end")  # ignored
        await service.turn()
        assert (await messages(store))[-1][1] == "bye"
        (stream,) = await store.logs.list_streams(1, limit=5)
        assert stream.ended_at is not None and stream.next_sequence == 6
        assert await store.logs.open_streams() == []

    asyncio.run(main())


def test_past_the_budget_output_is_dropped_and_counted_never_waited_for(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        service = LogStreamService(store, "g", Clock(), max_buffered=11)
        tap = await service.begin(SID, "Standard_Stream", "g")
        assert tap is not None
        feed(tap, 0, b"12345678\n")
        feed(tap, 1, b"too much for the budget\n")  # dropped at once: nothing blocks
        feed(tap, 2, b"x\n")
        assert tap.dropped == len(b"too much for the budget\n")
        await service.turn()
        assert [m for _, m in await messages(store)] == ["12345678\n", "x\n"]
        (stream,) = await store.logs.list_streams(1, limit=5)
        assert stream.dropped_bytes == 24 and service.dropped_total == 24
        # The budget is free again once the writer took the output.
        feed(tap, 3, b"again fits\n"[:10])
        assert tap.dropped == 0

    asyncio.run(main())
    assert "24 bytes of session output were dropped" in caplog.text


def test_a_failing_store_drops_the_batch_with_a_log_line_and_writing_goes_on(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        service = LogStreamService(store, "g", Clock())
        tap = await service.begin(SID, "Standard_Stream", "g")
        assert tap is not None
        real = store.logs.append

        async def failing(*_: object, **__: object) -> int:
            raise StoreError("database write failed: OperationalError")

        monkeypatch.setattr(store.logs, "append", failing)
        feed(tap, 0, b"lost\n")
        assert await service.turn() == 0
        monkeypatch.setattr(store.logs, "append", real)
        feed(tap, 1, b"kept\n")
        assert await service.turn() == 1
        assert [m for _, m in await messages(store)] == ["kept\n"]

    asyncio.run(main())
    assert "1 events (5 bytes) could not be stored" in caplog.text


def test_a_stream_goes_on_after_a_restart_from_its_sequence_number(store: Store) -> None:
    async def main() -> None:
        clock = Clock()
        first = LogStreamService(store, "g", clock)
        tap = await first.begin(SID, "Standard_Stream", "g")
        assert tap is not None
        feed(tap, 0, b"before\r\nhalf")
        await first.stop()  # a restart: the partial line is written, the stream stays open
        assert [m for _, m in await messages(store)] == ["before\r\n", "half"]
        second = LogStreamService(store, "g", clock)
        attached: dict[str, StreamTap] = {}

        def attach(sid: str, tap: StreamTap) -> bool:
            attached[sid] = tap
            return True

        await second.restore({SID}, attach)
        again = attached[SID]
        feed(again, 0, b"before\r\nhalf")  # the agent re-sends what was not acknowledged
        feed(again, 1, b" after\n")
        await second.turn()
        assert [m for _, m in await messages(store)] == ["before\r\n", "half", " after\n"]
        # A stream whose session did not come back is ended.
        third = LogStreamService(store, "g", clock)
        await third.restore(set(), attach)
        assert await store.logs.open_streams() == []

    asyncio.run(main())


def test_a_deleted_groups_live_streams_stop(store: Store) -> None:
    async def main() -> None:
        service = LogStreamService(store, "g", Clock())
        tap = await service.begin(SID, "Standard_Stream", "g")
        assert tap is not None
        feed(tap, 0, b"a\n")
        service.forget_group("g")
        assert tap.ended and service.tap(SID) is None
        assert await store.logs.delete_group("g")
        assert await service.turn() == 0

    asyncio.run(main())


def test_the_log_group_is_the_documents_when_streaming_is_enabled_else_the_servers() -> None:
    enabled = {"cloudWatchStreamingEnabled": True, "cloudWatchLogGroupName": "doc-group"}
    assert choose_log_group("server", enabled) == "doc-group"
    assert choose_log_group(None, enabled) == "doc-group"
    assert choose_log_group("server", {**enabled, "cloudWatchStreamingEnabled": False}) == "server"
    assert choose_log_group("server", {**enabled, "cloudWatchLogGroupName": ""}) == "server"
    assert choose_log_group(None, {}) is None


# ---- the relay feeds the tap ----------------------------------------------------------------


def test_the_relay_feeds_only_the_agents_output_to_the_tap(store: Store) -> None:
    from tests.server.test_gateway import Harness, input_frame, output_frame

    async def main() -> None:
        service = LogStreamService(store, "g", Clock())
        async with Harness() as h:
            client, agent = await h.joined(SID)
            tap = await service.begin(SID, "Standard_Stream", "g")
            assert tap is not None and h.gateway.attach_log_stream(SID, tap)
            assert not h.gateway.attach_log_stream("bob-0123456789abcdef0", tap)  # not live
            assert await client.peer.send(input_frame(0, b"secret typed\r"))  # never streamed
            for frame in (output_frame(0, b"out\r\n"), output_frame(0, b"out\r\n")):
                assert await agent.peer.send(frame)
            for _ in range(2):
                await client.frame_of(MessageType.OUTPUT_STREAM_DATA)  # relayed, not held up
            await agent.frame_of(MessageType.INPUT_STREAM_DATA)
            await service.turn()
        assert [m for _, m in await messages(store)] == ["out\r\n"]

    asyncio.run(main())
