"""The in-memory socket behaves like the real ones where the tests rely on it."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.protocol.closecodes import CloseCode
from tests.fakes import socket_pair


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_pair_delivers_in_order_and_closes_both_ends() -> None:
    a, b = socket_pair()
    for i in range(3):
        assert await a.send(b"%d" % i)
    await a.close(CloseCode.ENDED, "done")
    assert [m async for m in b] == [b"0", b"1", b"2"]
    assert b.closed and b.close_code == CloseCode.ENDED and b.close_reason == "done"
    assert not await b.send(b"late")


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_stalled_reader_makes_sends_time_out_on_the_loop_clock() -> None:
    a, b = socket_pair(capacity=2, send_timeout=10)
    b.stall()
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = [await a.send(b"x") for _ in range(3)]
    assert results == [True, True, False]
    assert loop.time() - start == pytest.approx(10)
    assert a.closed and a.close_code == CloseCode.STALLED
    assert b.closed and b.close_code == 1006
