"""The data-channel gateway in process: in-memory sockets, in-memory session records, and the
event loop's clock fast-forwarded by looptime (so a 120 s grace takes no time at all)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hatchway.auth.tokens import hash_token, new_token
from hatchway.errors import AccessDenied, NotFound, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.frames import (
    Frame,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
    make_frame,
)
from hatchway.protocol.payloads import (
    AgentTaskPayload,
    ChannelClosedPayload,
    NoticePayload,
    OpenDataChannelInput,
)
from hatchway.server.preferences import SessionLimits
from hatchway.server.principal import Principal
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.store.records import Session, SessionStatus
from tests.fakes import FakeClock, MemorySocket, MemoryStore, session_record, socket_pair

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

NODE = "mi-0123456789abcdef0"
GRACE = 120.0
ALICE = Principal("u1", "alice", "123456789012", "HWAKALICE")


@dataclass
class FakeControl:
    """The control channels as the session service sees them."""

    connected: set[str] = field(default_factory=lambda: {NODE})
    ended: list[tuple[str, str, str]] = field(default_factory=list)

    def is_connected(self, node_id: str) -> bool:
        return node_id in self.connected

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        pass

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None:
        self.ended.append((node_id, session_id, output))


@dataclass
class Link:
    """One end's connection: ``peer`` is the client's or agent's side, ``server`` the
    gateway's (its ``sent`` lists everything the gateway sent to that end)."""

    peer: MemorySocket
    server: MemorySocket
    task: asyncio.Task[None]

    async def frame(self, timeout: float = 30) -> Frame | None:
        """The next frame the end receives, or None once its connection is closed."""
        async with asyncio.timeout(timeout):
            async for data in self.peer:
                return decode_frame(data, verify_digest=False)
        return None

    async def frame_of(self, kind: str, timeout: float = 30) -> Frame:
        """Skip frames until one of type ``kind`` arrives."""
        while True:
            frame = await self.frame(timeout)
            assert frame is not None, f"closed ({self.peer.close_code}) before a {kind}"
            if frame.message_type == kind:
                return frame

    def kinds(self) -> list[str]:
        return [decode_frame(d).message_type for d in self.server.sent]


class Harness:
    """A session service (and its gateway) over in-memory records and sockets."""

    def __init__(self, store: MemoryStore | None = None, **settings: float) -> None:
        self.store = store or MemoryStore()
        self.clock = FakeClock()
        self.control = FakeControl()
        self.settings = ServerSettings(
            data_dir=Path("/nonexistent"), **{"disconnect_grace": GRACE, **settings}
        )
        self.service = SessionService(
            self.store,  # type: ignore[arg-type]
            self.settings,
            self.clock,
            self.control,  # type: ignore[arg-type]
        )
        self.gateway = self.service.gateway
        self.links: list[Link] = []

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Shut down as the server does and let every connection's handler finish."""
        await self.gateway.close_all()
        async with asyncio.timeout(60):
            await asyncio.gather(*(link.task for link in self.links), return_exceptions=True)

    async def new_session(self, session_id: str = "alice-0123456789abcdef0") -> tuple[str, str]:
        """A session as StartSession leaves it: a Connecting row, a token, the gateway told."""
        token = new_token()
        row = session_record(session_id, NODE)
        await self.store.sessions.create(row, hash_token(token), self.clock())
        self.gateway.expect(session_id, NODE)
        return session_id, token

    async def resume(self, session_id: str) -> str:
        token = new_token()
        await self.store.sessions.replace_tokens(session_id, hash_token(token), self.clock())
        return token

    async def client(self, session_id: str, token: str) -> Link:
        peer, server = socket_pair("client", f"client:{session_id}")
        task = asyncio.create_task(self.gateway.serve_client(server, session_id))
        opened = OpenDataChannelInput(
            token_value=token, request_id=str(uuid.uuid4()), client_id="c1", client_version="1"
        )
        await peer.send_text(opened.to_json().decode())
        self.links.append(Link(peer, server, task))
        return self.links[-1]

    async def agent(self, session_id: str, node: str = NODE) -> Link:
        live = await self.gateway.admit_agent(session_id, node)
        peer, server = socket_pair("agent", f"agent:{session_id}")
        task = asyncio.create_task(self.gateway.serve_agent(server, live))
        self.links.append(Link(peer, server, task))
        return self.links[-1]

    async def joined(self, session_id: str = "alice-0123456789abcdef0") -> tuple[Link, Link]:
        """A session with both ends connected and past ``start_publication``."""
        sid, token = await self.new_session(session_id)
        agent = await self.agent(sid)
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        client = await self.client(sid, token)
        await client.frame_of(MessageType.START_PUBLICATION)
        await agent.frame_of(MessageType.START_PUBLICATION)
        await until(lambda: self.status(sid) == SessionStatus.CONNECTED)
        return client, agent

    def status(self, session_id: str = "alice-0123456789abcdef0") -> SessionStatus:
        return self.store.sessions.rows[session_id].status

    def details(self, session_id: str = "alice-0123456789abcdef0") -> str:
        return self.store.sessions.rows[session_id].details


async def until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Let the gateway run until ``predicate`` holds (loop time; it costs no real time)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def closed(link: Link, timeout: float = 30) -> int | None:
    """Read until the end's connection closes; its close code."""
    async with asyncio.timeout(timeout):
        async for _ in link.peer:
            pass
    return link.peer.close_code


def output_frame(seq: int, payload: bytes) -> bytes:
    return encode_frame(
        make_frame(
            MessageType.OUTPUT_STREAM_DATA,
            payload,
            now=1_700_000_000,
            sequence_number=seq,
            payload_type=PayloadType.OUTPUT,
        )
    )


def input_frame(seq: int, payload: bytes) -> bytes:
    return encode_frame(
        make_frame(
            MessageType.INPUT_STREAM_DATA,
            payload,
            now=1_700_000_000,
            sequence_number=seq,
            payload_type=PayloadType.OUTPUT,
        )
    )


# ---- joining and relaying -------------------------------------------------------------------


async def test_an_end_alone_is_paused_and_both_start_once_joined() -> None:
    async with Harness() as h:
        sid, token = await h.new_session()
        agent = await h.agent(sid)
        assert (await agent.frame()).message_type == MessageType.PAUSE_PUBLICATION  # type: ignore[union-attr]
        client = await h.client(sid, token)
        assert (await client.frame()).message_type == MessageType.START_PUBLICATION  # type: ignore[union-attr]
        assert (await agent.frame()).message_type == MessageType.START_PUBLICATION  # type: ignore[union-attr]
        await until(lambda: h.status() == SessionStatus.CONNECTED)
        assert h.store.sessions.tokens[hash_token(token)].first_used_at == h.clock()


async def test_frames_are_relayed_unchanged_both_ways() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        keystroke, echo = input_frame(0, b"ls\r"), output_frame(0, b"ls\r\nfile\r\n")
        assert await client.peer.send(keystroke)
        assert await agent.peer.send(echo)
        assert encode_frame(await agent.frame_of(MessageType.INPUT_STREAM_DATA)) == keystroke  # type: ignore[arg-type]
        assert encode_frame(await client.frame_of(MessageType.OUTPUT_STREAM_DATA)) == echo


async def test_bytes_are_counted_from_the_real_payload_not_the_header_claim() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        # PayloadLength claims 4 GiB - 1; the payload (what receivers take) is 5 bytes.
        lying = bytearray(input_frame(0, b"hello"))
        lying[116:120] = (2**32 - 1).to_bytes(4, "big")
        assert await client.peer.send(bytes(lying))
        await agent.frame_of(MessageType.INPUT_STREAM_DATA)
        # Trailing bytes are payload too (docs/protocol.md §4.2).
        padded = output_frame(0, b"x") + b"y" * 99
        assert await agent.peer.send(padded)
        await client.frame_of(MessageType.OUTPUT_STREAM_DATA)
        await h.service.terminate(ALICE, {"SessionId": "alice-0123456789abcdef0"})
        row = h.store.sessions.rows["alice-0123456789abcdef0"]
        await until(lambda: h.store.sessions.rows[row.session_id].bytes_in > 0)
        done = h.store.sessions.rows[row.session_id]
        assert (done.bytes_in, done.bytes_out) == (5, 100)


async def test_a_malformed_frame_closes_its_end_with_1007() -> None:
    async with Harness() as h:
        client, _agent = await h.joined()
        assert await client.peer.send(b"too short")
        assert await closed(client) == CloseCode.BAD_DATA


# ---- an end goes away -----------------------------------------------------------------------


async def test_a_client_that_does_not_come_back_ends_the_session_after_the_grace() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        loop = asyncio.get_running_loop()
        await client.peer.close()
        gone = loop.time()
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        await until(lambda: h.status() == SessionStatus.DISCONNECTED)
        bye = await agent.frame_of(MessageType.CHANNEL_CLOSED, timeout=GRACE + 10)
        assert loop.time() - gone == pytest.approx(GRACE, abs=0.1)
        assert ChannelClosedPayload.from_json(bye.payload).output == "the client did not reconnect"
        assert await closed(agent) == CloseCode.ENDED
        assert h.status() == SessionStatus.TERMINATED
        assert h.details() == "the client did not reconnect"
        assert h.control.ended == [
            (NODE, "alice-0123456789abcdef0", "the client did not reconnect")
        ]


async def test_a_client_back_within_the_grace_keeps_the_session() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        await client.peer.close()
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        await asyncio.sleep(GRACE - 20)
        token = await h.resume("alice-0123456789abcdef0")
        again = await h.client("alice-0123456789abcdef0", token)
        await again.frame_of(MessageType.START_PUBLICATION)
        await agent.frame_of(MessageType.START_PUBLICATION)
        await until(lambda: h.status() == SessionStatus.CONNECTED)
        await asyncio.sleep(GRACE * 2)
        assert h.status() == SessionStatus.CONNECTED
        assert not again.peer.closed and not agent.peer.closed


async def test_an_agent_that_redials_gets_start_publication_on_both_ends() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        await agent.peer.close()
        await client.frame_of(MessageType.PAUSE_PUBLICATION)
        again = await h.agent("alice-0123456789abcdef0")
        await again.frame_of(MessageType.START_PUBLICATION)
        await client.frame_of(MessageType.START_PUBLICATION)
        await asyncio.sleep(GRACE * 2)
        assert h.status() == SessionStatus.CONNECTED


async def test_a_newer_connection_replaces_the_older_without_a_pause_or_expiry() -> None:
    """AWS's plugin re-dials with the same token: the newer connection takes over, the older
    one is closed with 4000, and the session neither pauses nor expires."""
    async with Harness(disconnect_grace=1) as h:
        sid, token = await h.new_session()
        agent = await h.agent(sid)
        first = await h.client(sid, token)
        await first.frame_of(MessageType.START_PUBLICATION)
        second = await h.client(sid, token)
        assert await closed(first) == CloseCode.REPLACED
        await second.frame_of(MessageType.START_PUBLICATION)
        await asyncio.sleep(10)  # ten times the grace
        assert not second.peer.closed
        assert h.status() == SessionStatus.CONNECTED
        assert agent.kinds().count(MessageType.PAUSE_PUBLICATION) == 1  # only before the first
        await second.peer.close()
        await until(lambda: h.status() == SessionStatus.TERMINATED)
        assert h.details() == "the client did not reconnect"


async def test_an_agent_that_never_attaches_fails_the_session() -> None:
    async with Harness(agent_attach_timeout=30) as h:
        sid, token = await h.new_session()
        client = await h.client(sid, token)
        await client.frame_of(MessageType.PAUSE_PUBLICATION)
        bye = await client.frame_of(MessageType.CHANNEL_CLOSED, timeout=40)
        assert ChannelClosedPayload.from_json(bye.payload).output == "the agent did not connect"
        assert h.status() == SessionStatus.FAILED


async def test_a_client_that_never_connects_ends_the_session() -> None:
    async with Harness(token_first_use=60) as h:
        sid, _token = await h.new_session()
        agent = await h.agent(sid)
        bye = await agent.frame_of(MessageType.CHANNEL_CLOSED, timeout=70)
        assert ChannelClosedPayload.from_json(bye.payload).output == "the client did not connect"
        assert h.status() == SessionStatus.TERMINATED


# ---- tokens ---------------------------------------------------------------------------------


async def _refused(h: Harness, sid: str, send: Callable[[MemorySocket], Awaitable[None]]) -> Link:
    peer, server = socket_pair("client", "server")
    task = asyncio.create_task(h.gateway.serve_client(server, sid))
    await send(peer)
    link = Link(peer, server, task)
    assert await closed(link) == CloseCode.POLICY
    await task
    return link


async def test_tokens_are_checked() -> None:
    async with Harness(token_first_use=60) as h:
        sid, token = await h.new_session()
        other_sid, other_token = await h.new_session("alice-00000000000000000")

        def opening(value: str) -> Callable[[MemorySocket], Awaitable[None]]:
            text = OpenDataChannelInput(token_value=value, request_id="r", client_id="c").to_json()
            return lambda peer: peer.send_text(text.decode())

        await _refused(h, sid, opening("not-a-token"))
        await _refused(h, sid, opening(other_token))  # another session's token

        resumed = await h.resume(sid)  # ResumeSession revokes the older token
        await _refused(h, sid, opening(token))
        h.clock.advance(61)  # never used within its first-use window
        await _refused(h, sid, opening(resumed))
        assert h.status(other_sid) == SessionStatus.CONNECTING


async def test_the_open_message_must_come_first_as_text_within_10_s() -> None:
    async with Harness() as h:
        sid, _token = await h.new_session()

        async def binary(peer: MemorySocket) -> None:
            await peer.send(input_frame(0, b"x"))

        async def nothing(peer: MemorySocket) -> None:
            pass

        await _refused(h, sid, binary)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await _refused(h, sid, nothing)
        assert loop.time() - start == pytest.approx(10)


async def test_a_client_of_an_ended_session_is_refused() -> None:
    async with Harness() as h:
        sid, token = await h.new_session()
        await h.service.terminate(ALICE, {"SessionId": sid})
        text = OpenDataChannelInput(token_value=token, request_id="r", client_id="c").to_json()

        async def send(peer: MemorySocket) -> None:
            await peer.send_text(text.decode())

        await _refused(h, sid, send)  # its tokens were revoked with it


async def test_an_agent_is_admitted_only_to_an_active_session_on_its_node() -> None:
    async with Harness() as h:
        sid, _token = await h.new_session()
        with pytest.raises(NotFound):
            await h.gateway.admit_agent(sid, "mi-00000000000000000")
        with pytest.raises(NotFound):
            await h.gateway.admit_agent("alice-ffffffffffffffff0", NODE)
        await h.service.terminate(ALICE, {"SessionId": sid})
        with pytest.raises(NotFound):
            await h.gateway.admit_agent(sid, NODE)


# ---- nobody waits for a stalled peer -------------------------------------------------------


async def test_terminate_does_not_wait_for_a_client_that_stopped_reading() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        other_client, other_agent = await h.joined("alice-11111111111111111")
        client.peer.stall()  # TCP stays open, nothing is read
        for seq in range(100):  # more than the socket holds: the relay blocks on the client
            assert await agent.peer.send(output_frame(seq, b"%d" % seq))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await h.service.terminate(ALICE, {"SessionId": "alice-0123456789abcdef0"})
        assert loop.time() == start  # returned at once, on the loop's own clock
        assert h.status() == SessionStatus.TERMINATED
        assert h.control.ended == [
            (NODE, "alice-0123456789abcdef0", "Session terminated by alice.")
        ]
        # The agent end hears of it before the stalled client's send time-out (10 s) runs out.
        bye = await agent.frame_of(MessageType.CHANNEL_CLOSED, timeout=5)
        assert ChannelClosedPayload.from_json(bye.payload).output == "Session terminated by alice."
        assert await closed(agent, timeout=5) == CloseCode.ENDED
        assert not client.server.closed
        # Another session on the same server goes on meanwhile.
        assert await other_agent.peer.send(output_frame(0, b"still here"))
        frame = await other_client.frame_of(MessageType.OUTPUT_STREAM_DATA, timeout=5)
        assert frame.payload == b"still here"
        # The stalled client is dropped once its send time-out has passed.
        await until(lambda: client.server.closed, timeout=30)
        assert client.server.close_code == CloseCode.STALLED


async def test_a_relay_blocked_on_a_stalled_receiver_does_not_block_the_other_way() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        client.peer.stall()
        for seq in range(100):
            assert await agent.peer.send(output_frame(seq, b"."))
        assert await client.peer.send(input_frame(0, b"typed"))
        frame = await agent.frame_of(MessageType.INPUT_STREAM_DATA, timeout=5)
        assert frame.payload == b"typed"


# ---- the node goes away ---------------------------------------------------------------------


async def test_the_client_hears_at_once_when_the_node_goes_away() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        await agent.peer.close()  # kill -9: both channels drop
        await h.service.node_gone(NODE)
        notice = await client.frame_of(MessageType.HATCHWAY_NOTICE, timeout=1)
        payload = NoticePayload.from_json(notice.payload)
        assert (payload.kind, payload.grace) == ("NodeAway", 120)
        assert payload.message == "the node went away; waiting up to 120 s for it to come back"
        bye = await client.frame_of(MessageType.CHANNEL_CLOSED, timeout=GRACE + 10)
        reason = "the node did not come back within 120 s"
        assert ChannelClosedPayload.from_json(bye.payload).output == reason
        assert h.details() == reason


async def test_a_node_that_comes_back_goes_on_with_the_session() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        await h.service.node_gone(NODE)  # the control channel closed first
        await client.frame_of(MessageType.HATCHWAY_NOTICE, timeout=1)
        await agent.peer.close()
        again = await h.agent("alice-0123456789abcdef0")
        await again.frame_of(MessageType.START_PUBLICATION)
        back = await client.frame_of(MessageType.HATCHWAY_NOTICE)
        assert NoticePayload.from_json(back.payload).kind == "NodeBack"
        await asyncio.sleep(GRACE * 2)
        assert h.status() == SessionStatus.CONNECTED


async def test_a_client_that_joins_while_the_node_is_away_hears_of_it() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        await client.peer.close()
        await agent.peer.close()
        await h.service.node_gone(NODE)
        token = await h.resume("alice-0123456789abcdef0")
        again = await h.client("alice-0123456789abcdef0", token)
        await again.frame_of(MessageType.PAUSE_PUBLICATION)
        notice = await again.frame_of(MessageType.HATCHWAY_NOTICE)
        assert NoticePayload.from_json(notice.payload).kind == "NodeAway"


# ---- the server restarts --------------------------------------------------------------------


async def test_sessions_survive_a_restart_when_both_ends_come_back() -> None:
    before = Harness()
    client, agent = await before.joined()
    await before.gateway.close_all()
    assert await closed(client) == CloseCode.GOING_AWAY
    assert await closed(agent) == CloseCode.GOING_AWAY
    assert before.status() == SessionStatus.CONNECTED  # still active in the database
    with pytest.raises(Unavailable):  # while shutting down: try again later
        await before.gateway.admit_agent("alice-0123456789abcdef0", NODE)

    async with Harness(store=before.store) as after:  # a new process over the same database
        assert await after.service.restore() == 1
        assert after.status() == SessionStatus.DISCONNECTED  # nobody is connected yet
        agent2 = await after.agent("alice-0123456789abcdef0")
        await agent2.frame_of(MessageType.PAUSE_PUBLICATION)
        token = await after.resume("alice-0123456789abcdef0")
        client2 = await after.client("alice-0123456789abcdef0", token)
        await client2.frame_of(MessageType.START_PUBLICATION)
        await agent2.frame_of(MessageType.START_PUBLICATION)
        await until(lambda: after.status() == SessionStatus.CONNECTED)
        assert await client2.peer.send(input_frame(5, b"more"))
        assert (await agent2.frame_of(MessageType.INPUT_STREAM_DATA)).payload == b"more"
        await asyncio.sleep(GRACE * 2)
        assert after.status() == SessionStatus.CONNECTED


async def test_an_end_of_an_active_session_is_taken_in_on_demand() -> None:
    async with Harness() as h:
        row = session_record("alice-22222222222222222", NODE, status=SessionStatus.CONNECTED)
        await h.store.sessions.create(row, hash_token("unused"), h.clock())
        assert h.gateway.live(row.session_id) is None  # e.g. not restored (yet)
        with pytest.raises(NotFound):
            await h.gateway.admit_agent(row.session_id, "mi-00000000000000000")
        assert h.gateway.live(row.session_id) is None
        agent = await h.agent(row.session_id)
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        assert h.gateway.live(row.session_id) is not None


async def test_only_a_session_no_end_has_reached_may_move() -> None:
    async with Harness() as h:
        sid, _token = await h.new_session()
        assert h.gateway.movable(sid) is not None
        agent = await h.agent(sid)
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        assert h.gateway.movable(sid) is None
        other, token = await h.new_session("alice-22222222222222222")
        await h.client(other, token)
        await until(lambda: h.gateway.movable(other) is None)
        assert h.gateway.movable("alice-33333333333333333") is None


async def test_ends_of_a_session_let_go_to_another_replica_are_sent_there() -> None:
    """Released (it moved to another replica): an end that still comes here is told to
    reconnect (1001), never that the session ended, and the session is not taken in again."""
    async with Harness() as h:
        sid, token = await h.new_session()
        live = h.gateway.live(sid)
        await h.gateway.release(sid)
        assert h.gateway.live(sid) is None
        with pytest.raises(Unavailable, match="moved"):
            await h.gateway.admit_agent(sid, NODE)
        client = await h.client(sid, token)
        assert await closed(client) == CloseCode.GOING_AWAY
        assert h.gateway.live(sid) is None
        assert live is not None and live.moving
        _peer, server = socket_pair("agent", "late")  # admitted just before the release
        await h.gateway.serve_agent(server, live)
        assert server.close_code == CloseCode.GOING_AWAY


async def test_a_session_taken_in_fresh_waits_for_its_agent_as_a_new_one() -> None:
    async with Harness(agent_attach_timeout=30.0) as h:
        row = session_record("alice-22222222222222222", NODE)
        await h.store.sessions.create(row, hash_token("unused"), h.clock())
        live = h.gateway.take_in(row)
        assert not live.restored and h.gateway.movable(row.session_id) is live
        await until(lambda: h.status(row.session_id) == SessionStatus.FAILED, timeout=60)


@pytest.mark.parametrize(
    ("agent_back", "reason"),
    [
        (False, "the client and the agent did not reconnect after the server restarted"),
        (True, "the client did not reconnect after the server restarted"),
    ],
)
async def test_a_restored_session_whose_ends_do_not_come_back_ends_saying_why(
    agent_back: bool, reason: str
) -> None:
    async with Harness() as h:
        row = session_record("alice-33333333333333333", NODE, status=SessionStatus.CONNECTED)
        await h.store.sessions.create(row, hash_token("unused"), h.clock())
        await h.service.restore()
        if agent_back:
            agent = await h.agent(row.session_id)
        await asyncio.sleep(GRACE - 0.1)
        assert h.status(row.session_id) == SessionStatus.DISCONNECTED
        await until(lambda: h.status(row.session_id) == SessionStatus.TERMINATED, timeout=1)
        assert h.details(row.session_id) == reason
        if agent_back:
            bye = await agent.frame_of(MessageType.CHANNEL_CLOSED)
            assert ChannelClosedPayload.from_json(bye.payload).output == reason


async def test_a_failing_database_drops_no_connection() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        h.store.sessions.fail_writes = True
        await client.peer.close()
        await agent.frame_of(MessageType.PAUSE_PUBLICATION)
        h.store.sessions.fail_writes = False
        token = await h.resume("alice-0123456789abcdef0")
        again = await h.client("alice-0123456789abcdef0", token)
        await again.frame_of(MessageType.START_PUBLICATION)
        assert not agent.peer.closed


async def test_a_node_back_without_the_session_ends_it_at_once() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        _other_client, other_agent = await h.joined("alice-11111111111111111")
        await agent.peer.close()
        await other_agent.peer.close()
        await h.service.node_gone(NODE)
        await client.frame_of(MessageType.HATCHWAY_NOTICE)
        # The agent restarted: its first heartbeat lists only the other session.
        await h.service.sessions_reported(NODE, frozenset({"alice-11111111111111111"}))
        bye = await client.frame_of(MessageType.CHANNEL_CLOSED, timeout=1)
        reason = "the node's agent no longer runs the session (it restarted)"
        assert ChannelClosedPayload.from_json(bye.payload).output == reason
        assert h.status() == SessionStatus.TERMINATED
        assert h.status("alice-11111111111111111") == SessionStatus.CONNECTED


async def test_a_heartbeat_does_not_end_a_session_that_just_started() -> None:
    async with Harness() as h:
        sid, _token = await h.new_session()
        await h.service.sessions_reported(NODE, frozenset())  # not listed yet
        await h.agent(sid)
        assert h.status(sid) == SessionStatus.CONNECTING


# ---- admission of the client's channel ------------------------------------------------------


async def test_a_client_whose_owner_may_no_longer_run_the_session_is_refused() -> None:
    async with Harness() as h:
        asked: list[str] = []

        async def admit(session: Session) -> None:
            asked.append(session.session_id)
            raise AccessDenied("alice may no longer run this session")

        h.gateway.admit_client = admit
        sid, token = await h.new_session()
        client = await h.client(sid, token)
        assert await closed(client) == CloseCode.POLICY
        assert client.peer.close_reason == "alice may no longer run this session"
        assert asked == [sid]
        assert h.gateway.live(sid) is not None  # the session itself is left to enforcement


# ---- idle timeout and maximum duration (server.preferences) ---------------------------------


async def _limited(h: Harness, idle: float | None, longest: float | None) -> tuple[Link, Link]:
    client, agent = await h.joined()
    live = h.gateway.live("alice-0123456789abcdef0")
    assert live is not None
    limits = SessionLimits(idle=idle, max_duration=longest, warn_before=60.0)
    h.gateway.limit(live, limits)
    return client, agent


async def _notices(link: Link) -> list[NoticePayload]:
    return [
        NoticePayload.from_json(decode_frame(d).payload)
        for d in link.server.sent
        if decode_frame(d).message_type == MessageType.HATCHWAY_NOTICE
    ]


async def test_bytes_moving_either_way_keep_a_session_from_idling() -> None:
    async with Harness() as h:
        client, agent = await _limited(h, idle=600.0, longest=None)
        loop = asyncio.get_running_loop()
        start = loop.time()
        seq = 0
        while loop.time() - start < 1800:  # half an hour of a byte every 5 minutes
            sender = agent if seq % 2 else client
            frame = output_frame(seq, b"x") if sender is agent else input_frame(seq, b"x")
            await sender.peer.send(frame)
            seq += 1
            await asyncio.sleep(300)
        assert h.status() == SessionStatus.CONNECTED
        assert await _notices(client) == []
        # Then silence: warned a minute before, ended at ten minutes.
        await until(lambda: h.status() == SessionStatus.TERMINATED, timeout=700)
        assert "idle for 10 minutes (idleSessionTimeout)" in h.details()
        assert [n.kind for n in await _notices(client)] == ["IdleWarning"]
        assert await closed(client) == CloseCode.ENDED


async def test_the_maximum_duration_ends_a_busy_session_after_a_warning() -> None:
    async with Harness() as h:
        client, agent = await _limited(h, idle=600.0, longest=900.0)
        seq = 0
        while h.status() == SessionStatus.CONNECTED:
            await agent.peer.send(output_frame(seq, b"busy"))
            seq += 1
            await asyncio.sleep(30)
        assert h.status() == SessionStatus.TERMINATED
        assert "maximum duration of 15 minutes (maxSessionDuration)" in h.details()
        assert [n.kind for n in await _notices(client)] == ["MaxDurationWarning"]
        assert "ends in 1 minute" in (await _notices(client))[0].message


async def test_a_warned_session_that_gets_busy_again_is_warned_again_later() -> None:
    async with Harness() as h:
        client, _agent = await _limited(h, idle=600.0, longest=None)
        await asyncio.sleep(560)  # warned at 540 s
        assert [n.kind for n in await _notices(client)] == ["IdleWarning"]
        await client.peer.send(input_frame(0, b"k"))
        await asyncio.sleep(300)
        assert h.status() == SessionStatus.CONNECTED
        await until(lambda: h.status() == SessionStatus.TERMINATED, timeout=700)
        assert [n.kind for n in await _notices(client)] == ["IdleWarning", "IdleWarning"]
