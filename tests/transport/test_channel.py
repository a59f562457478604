"""``ChannelDriver``: one writer per socket, the synchronous keystroke path, its timers on the
event loop's clock (fast-forwarded by looptime), and a bounded close."""

from __future__ import annotations

import asyncio
import time

import pytest

from hatchway.protocol.frames import MessageType, PayloadType, decode_frame
from hatchway.protocol.reliability import MIN_RTO, Endpoint, Role
from hatchway.transport.channel import ACK_DELAY, STOP_TIMEOUT, ChannelDriver
from tests.fakes import MemorySocket, socket_pair


def client_endpoint() -> Endpoint:
    return Endpoint(Role.CLIENT, wall_clock=time.time)


async def received(sock: MemorySocket, count: int) -> list[bytes]:
    messages: list[bytes] = []
    async with asyncio.timeout(30):
        async for message in sock:
            messages.append(message)
            if len(messages) == count:
                break
    return messages


def payloads(frames: list[bytes]) -> list[bytes]:
    return [decode_frame(f).payload for f in frames]


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_flush_now_writes_without_a_task_switch_when_the_socket_can() -> None:
    endpoint = client_endpoint()
    driver = ChannelDriver(endpoint)
    ours, _theirs = socket_pair()
    driver.attach(ours)
    endpoint.send(PayloadType.OUTPUT, b"k", now=driver.now())
    assert driver.flush_now()
    assert payloads(ours.sent) == [b"k"]  # already on the wire, nothing awaited
    await driver.close()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_frames_a_busy_socket_declines_go_out_first_through_the_writer() -> None:
    endpoint = client_endpoint()
    driver = ChannelDriver(endpoint)
    ours, theirs = socket_pair(capacity=1)
    theirs.stall()  # the peer does not read: one message fits, then the socket declines
    driver.attach(ours)
    for data in (b"1", b"2", b"3"):
        endpoint.send(PayloadType.OUTPUT, data, now=driver.now())
        driver.flush_soon()
    assert payloads(ours.sent) == [b"1"]  # "2" is held back, "3" may not overtake it
    theirs.resume_reading()
    assert payloads(await received(theirs, 3)) == [b"1", b"2", b"3"]
    await driver.close()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_unacknowledged_frame_is_resent_after_the_rto_on_the_loop_clock() -> None:
    endpoint = client_endpoint()
    driver = ChannelDriver(endpoint)  # no clock given: the loop's, which looptime moves
    ours, theirs = socket_pair()
    driver.attach(ours)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    endpoint.send(PayloadType.OUTPUT, b"lost?", now=driver.now())
    await driver.flush()
    first, again = (decode_frame(f) for f in await received(theirs, 2))
    assert loop.time() - sent_at == pytest.approx(MIN_RTO)
    assert (first.sequence_number, first.payload) == (again.sequence_number, again.payload)
    assert first.message_id != again.message_id  # each send has a MessageId of its own
    await driver.close()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_acknowledgements_wait_briefly_for_data_to_ride_along() -> None:
    agent = Endpoint(Role.AGENT, wall_clock=time.time)
    agent.send(PayloadType.OUTPUT, b"echo", now=0.0)
    endpoint = client_endpoint()
    driver = ChannelDriver(endpoint)
    ours, theirs = socket_pair()
    driver.attach(ours)
    loop = asyncio.get_running_loop()
    for frame in agent.data_to_send():
        endpoint.receive(frame, now=driver.now())
    start = loop.time()
    driver.acks_later()
    assert ours.sent == []  # not yet: data may come along
    (ack,) = await received(theirs, 1)
    assert decode_frame(ack).message_type == MessageType.ACKNOWLEDGE
    assert loop.time() - start == pytest.approx(ACK_DELAY)
    await driver.close()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_close_gives_up_a_send_the_peer_never_takes() -> None:
    endpoint = client_endpoint()
    driver = ChannelDriver(endpoint)
    ours, theirs = socket_pair(capacity=1, send_timeout=1000)
    theirs.stall()
    driver.attach(ours)
    for data in (b"1", b"2"):
        endpoint.send(PayloadType.OUTPUT, data, now=driver.now())
        driver.flush_soon()
    await asyncio.sleep(0)  # the writer is now blocked sending "2"
    loop = asyncio.get_running_loop()
    start = loop.time()
    await driver.close()
    assert loop.time() - start <= STOP_TIMEOUT
    await driver.close()  # idempotent
    assert payloads(ours.sent) == [b"1"]
