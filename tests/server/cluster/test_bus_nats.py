"""The replicas' bus on a real NATS server (127.0.0.1:4222, or HATCHWAY_TEST_NATS_URL): what
somebody else on the same server can do without the master key is dropped. Each test has a
cluster prefix of its own.

HATCHWAY_TEST_SCALEOUT says what to do without a NATS server: unset (or ``auto``) skips these
tests with the reason, ``require`` (CI) fails them, ``0`` skips them without trying.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import nats
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from hatchway.errors import ConfigError, Unavailable
from hatchway.server.cluster.bus import Bus, BusOptions, NoResponder
from hatchway.server.cluster.envelope import Sealer

pytestmark = pytest.mark.asyncio

NATS_URL = os.environ.get("HATCHWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
KEY = b"k" * 32
WRONG_KEY = b"w" * 32
WAIT = 10.0


@pytest.fixture(scope="module")
def nats_url() -> str:
    mode = os.environ.get("HATCHWAY_TEST_SCALEOUT") or "auto"
    if mode not in ("auto", "require", "0"):
        pytest.fail(f"HATCHWAY_TEST_SCALEOUT={mode!r}: expected auto, require or 0")
    if mode == "0":
        pytest.skip("scale-out tests disabled by HATCHWAY_TEST_SCALEOUT=0")
    where = urlsplit(NATS_URL)
    try:
        with socket.create_connection((where.hostname or "", where.port or 4222), timeout=3):
            pass
    except OSError as exc:
        reason = f"no NATS server at {NATS_URL} ({exc})"
        if mode == "require":
            pytest.fail(f"{reason} (HATCHWAY_TEST_SCALEOUT=require)", pytrace=False)
        pytest.skip(f"{reason}; set HATCHWAY_TEST_SCALEOUT=require to make this a failure")
    return NATS_URL


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A replica's bus under a cluster prefix of this test's own."""
    options = BusOptions(
        servers=(nats_url,), prefix=f"hwtest{secrets.token_hex(6)}", first_connect_for=5.0
    )
    b = Bus(options, Sealer(KEY))
    await b.open()
    try:
        yield b
    finally:
        await b.close()


@pytest_asyncio.fixture
async def forger(nats_url: str) -> AsyncIterator[nats.NATS]:
    """Somebody else on the same NATS server, without the master key."""
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


async def test_only_messages_sealed_with_the_key_for_the_subject_arrive(
    bus: Bus, forger: nats.NATS, caplog: pytest.LogCaptureFixture
) -> None:
    subject = bus.subject("all")
    arrived: list[bytes] = []
    last = asyncio.Event()

    async def handler(got_subject: str, body: bytes, _reply: str | None) -> None:
        assert got_subject == subject
        arrived.append(body)
        if body == b"last":
            last.set()

    await bus.subscribe(subject, handler)
    caplog.set_level(logging.WARNING, "hatchway.server.cluster.bus")
    insider = Sealer(KEY)
    # From one connection, in order: forgeries, then a genuine message that marks the end.
    await forger.publish(subject, Sealer(WRONG_KEY).seal(subject, b"forged"))
    await forger.publish(subject, b'{"op": "access_changed"}')  # not sealed at all
    await forger.publish(subject, insider.seal(bus.subject("elsewhere"), b"moved"))
    await forger.publish(subject, insider.seal(subject, b"altered")[:-1] + b"!")
    await forger.publish(subject, insider.seal(subject, b"last"))
    await forger.flush()
    async with asyncio.timeout(WAIT):
        await last.wait()
    assert arrived == [b"last"]
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 4


async def test_a_genuine_publish_arrives(bus: Bus) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(_subject: str, body: bytes, _reply: str | None) -> None:
        got.put_nowait(body)

    await bus.subscribe(bus.subject("r", "me", "p", "*"), handler)
    for i in range(5):
        await bus.publish(bus.subject("r", "me", "p", "pipe1"), b"%d" % i)
    async with asyncio.timeout(WAIT):
        assert [await got.get() for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


async def test_concurrent_requests_are_not_queued_behind_a_slow_one(bus: Bus) -> None:
    """The replica's request subject: one request that waits (a database round trip) must
    not hold up the next; without ``concurrent`` the second would wait for the first."""
    subject = bus.subject("r", "relay", "rpc")
    release = asyncio.Event()

    async def answer(request_subject: str, body: bytes, reply: str | None) -> None:
        assert reply is not None
        if body == b"slow":
            await release.wait()
        await bus.reply(request_subject, reply, b"answer to " + body)

    await bus.subscribe(subject, answer, concurrent=True)
    slow = asyncio.ensure_future(bus.request(subject, b"slow", timeout=WAIT))
    await asyncio.sleep(0)
    assert await bus.request(subject, b"quick", timeout=WAIT) == b"answer to quick"
    assert not slow.done()
    release.set()
    assert await slow == b"answer to slow"


async def test_requests_get_sealed_answers_and_no_responder_when_nobody_listens(
    bus: Bus, forger: nats.NATS
) -> None:
    subject = bus.subject("r", "relay", "rpc")

    async def answer(request_subject: str, body: bytes, reply: str | None) -> None:
        assert reply is not None
        await bus.reply(request_subject, reply, b"answer to " + body)

    with pytest.raises(NoResponder):
        await bus.request(subject, b"anybody?", timeout=2.0)
    await bus.subscribe(subject, answer)
    assert await bus.request(subject, b"question") == b"answer to question"

    # A forger that answers another relay's requests first: its answer is refused.
    forged_subject = bus.subject("r", "forged", "rpc")

    async def forge(msg: Msg) -> None:
        await msg.respond(Sealer(WRONG_KEY).seal(msg.reply + "#reply", b'{"ok": true}'))

    await forger.subscribe(forged_subject, cb=forge)
    await forger.flush()
    with pytest.raises(Unavailable, match="bad answer"):
        await bus.request(forged_subject, b"open the pipe", timeout=2.0)


async def test_an_answer_recorded_from_one_request_is_refused_for_another(
    bus: Bus, forger: nats.NATS, nats_url: str
) -> None:
    """Anybody on the server can subscribe to the replicas' subjects and inboxes: an answer
    recorded there and sent back to a later request (first, before the genuine one) would be
    taken for that request's answer if answers were not bound to their own request."""
    subject = bus.subject("r", "relay", "rpc")
    relay = Bus(BusOptions(servers=(nats_url,), prefix=bus.options.prefix), Sealer(KEY))
    await relay.open()

    async def answer(request_subject: str, _body: bytes, reply: str | None) -> None:
        assert reply is not None
        await relay.reply(request_subject, reply, b'{"ok": true}')

    recorded: asyncio.Queue[bytes] = asyncio.Queue()

    async def record(msg: Msg) -> None:
        recorded.put_nowait(msg.data)

    await relay.subscribe(subject, answer)
    await forger.subscribe("_INBOX.>", cb=record)
    await forger.flush()
    assert await bus.request(subject, b"open the pipe") == b'{"ok": true}'
    async with asyncio.timeout(WAIT):
        genuine_answer = await recorded.get()
    await relay.close()  # the relay is gone; the forger answers in its place

    async def replay(msg: Msg) -> None:
        await msg.respond(genuine_answer)

    await forger.subscribe(subject, cb=replay)
    await forger.flush()
    with pytest.raises(Unavailable, match="bad answer"):
        await bus.request(subject, b"open another pipe", timeout=2.0)


async def test_a_bus_that_never_reaches_nats_says_so() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = BusOptions(
        servers=(f"nats://127.0.0.1:{port}",), connect_timeout=0.5, first_connect_for=1.0
    )
    b = Bus(options, Sealer(KEY))
    with pytest.raises(Unavailable, match="not connected"):
        await b.publish(b.subject("all"), b"too early")
    async with asyncio.timeout(WAIT):  # nats-py alone would try for ever
        with pytest.raises(ConfigError, match="cannot connect to NATS"):
            await b.open()
    assert not b.connected
