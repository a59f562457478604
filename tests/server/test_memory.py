"""Giving memory back after a burst of connections (``server.memory``)."""

from __future__ import annotations

import asyncio
import platform
import threading

import pytest

from hatchway.server.memory import MemoryReclaimer, malloc_trim


class CountingTrim:
    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.done.set()


def test_a_fall_from_the_peak_trims_once_and_later_falls_wait_for_the_interval() -> None:
    trim = CountingTrim()

    async def body() -> None:
        reclaimer = MemoryReclaimer(trim, drop=3, delay=0.0, interval=3600.0)
        for count in (1, 2, 3, 4, 5, 4, 3):  # a burst, then 2 below its peak: nothing yet
            reclaimer.connections_changed(count)
        assert trim.calls == 0
        reclaimer.connections_changed(2)  # 3 below the peak
        assert await asyncio.to_thread(trim.done.wait, 10)
        assert trim.calls == 1
        for count in (10, 20, 2):  # another burst within the interval: postponed
            reclaimer.connections_changed(count)
        await reclaimer.close()  # cancels the postponed trim
        assert trim.calls == 1

    asyncio.run(body())


def test_without_a_trim_function_nothing_happens() -> None:
    async def body() -> None:
        reclaimer = MemoryReclaimer(None, drop=1, delay=0.0)
        reclaimer.connections_changed(5)
        reclaimer.connections_changed(0)
        await reclaimer.close()

    asyncio.run(body())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_trim_is_found() -> None:
    assert malloc_trim is not None
    malloc_trim()
