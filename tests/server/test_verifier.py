"""Secret checks on a bounded pool, off the event loop (``server.verifier``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hatchway.auth.tokens import UNMATCHABLE_HASH, hash_secret, verify_secret
from hatchway.errors import Throttled
from hatchway.server.verifier import SecretVerifier


class BlockingCheck:
    """A check that waits until the test releases it, recording which thread ran it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.threads: list[int] = []

    def __call__(self, secret: str, hashed: str) -> bool:
        self.threads.append(threading.get_ident())
        self.started.release()
        if not self.release.wait(10):
            raise TimeoutError("the test never released the check")
        return secret == hashed


def test_checks_run_off_the_event_loop_which_keeps_serving() -> None:
    check = BlockingCheck()
    verifier = SecretVerifier(workers=1, max_waiting=0, check=check)

    async def body() -> None:
        loop_thread = threading.get_ident()
        with verifier.admission():
            pending = asyncio.ensure_future(verifier.verify("a", "a"))
            await asyncio.to_thread(check.started.acquire, True, 10)
            # The check is blocked in its thread; the loop still runs other work.
            assert await asyncio.wait_for(asyncio.sleep(0, "loop alive"), 1) == "loop alive"
            check.release.set()
            assert await asyncio.wait_for(pending, 10)
        assert check.threads and check.threads[0] != loop_thread

    try:
        asyncio.run(body())
    finally:
        verifier.close()


def test_a_full_pool_answers_throttled_at_once() -> None:
    check = BlockingCheck()
    verifier = SecretVerifier(workers=1, max_waiting=1, check=check)

    async def one(secret: str) -> bool:
        with verifier.admission():
            return await verifier.verify(secret, secret)

    async def body() -> None:
        running = asyncio.ensure_future(one("a"))
        waiting = asyncio.ensure_future(one("b"))
        await asyncio.to_thread(check.started.acquire, True, 10)
        assert verifier.admitted == 2  # one checking, one waiting for the thread
        with pytest.raises(Throttled), verifier.admission():
            pass
        check.release.set()
        assert await asyncio.wait_for(asyncio.gather(running, waiting), 10) == [True, True]
        assert verifier.admitted == 0
        with verifier.admission():  # places are given back
            pass

    try:
        asyncio.run(body())
    finally:
        check.release.set()
        verifier.close()


def test_the_unmatchable_hash_costs_what_a_real_one_costs() -> None:
    real = hash_secret("code").split("$")
    dummy = UNMATCHABLE_HASH.split("$")
    assert dummy[:4] == real[:4]  # scheme and the same n, r, p
    assert len(dummy[4]) == len(real[4]) and len(dummy[5]) == len(real[5])
    assert not verify_secret("code", UNMATCHABLE_HASH)
    assert not verify_secret("", UNMATCHABLE_HASH)
