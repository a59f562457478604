"""One replica's part in the cluster (``server.cluster.service``), in process: several
``Cluster`` objects on an in-memory NATS (``tests.fakes.MemoryNats``) sharing one real store
(SQLite, or both backends where the database decides), with the gateway and the control
channels faked. Liveness runs on real time with short intervals (``Replicas`` judges on the
monotonic clock): tests wait for verdicts with time-outs, never for a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hatchway.auth.tokens import hash_token
from hatchway.errors import (
    AccessDenied,
    AuthError,
    ChannelClosed,
    Conflict,
    HatchwayError,
    InvalidInstanceId,
    NotFound,
    TargetNotConnected,
    Throttled,
    Unavailable,
)
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.payloads import AgentTaskPayload, OpenDataChannelInput
from hatchway.server.cluster import service
from hatchway.server.cluster.bus import NoResponder
from hatchway.server.cluster.envelope import Freshness
from hatchway.server.cluster.replicas import ReplicaInfo, Replicas
from hatchway.server.cluster.service import Cluster, Hooks, RoutedControl
from hatchway.server.events.catalog import EventCatalog
from hatchway.server.gateway import LiveSession
from hatchway.store.database import sqlite_url
from hatchway.store.records import Activation, Node, Session, SessionStatus
from hatchway.store.store import Store
from hatchway.transport.socket import Socket, TextSocket
from tests.fakes import MemoryBus, MemoryNats, session_record, socket_pair
from tests.store.conftest import pg_database, url  # noqa: F401  (both backends for route())

pytestmark = pytest.mark.asyncio

NODE = "mi-0123456789abcdef0"
INTERVAL = 0.05
SHORT = 1.5  # dead_after of replicas that must judge (loop stalls on a busy machine stay below it)
LONG = 3600.0  # dead_after of replicas that must not (never warm)
WAIT = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(INTERVAL / 2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


# ---- fakes --------------------------------------------------------------------------------


@dataclass
class FakeControl:
    """A replica's control channels: the nodes connected here, and what they were sent."""

    connected: set[str] = field(default_factory=set)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    failure: BaseException | None = None
    events: EventCatalog = field(default_factory=lambda: EventCatalog(time.time))

    def count(self) -> int:
        return len(self.connected)

    def is_connected(self, node_id: str) -> bool:
        return node_id in self.connected

    def _call(self, *call: Any) -> None:
        if self.failure is not None:
            raise self.failure
        self.calls.append(call)

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        self._call("start", node_id, task)

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None:
        self._call("end", node_id, session_id, output)

    async def drop(self, node_id: str, reason: str) -> None:
        self._call("drop", node_id, reason)

    async def close_all(self) -> None:
        self.connected.clear()


@dataclass
class FakeGateway:
    """The relay's gateway: serves a client's end by answering its first message and echoing
    its frames in capitals until it says ``bye`` (then closes it with ENDED)."""

    live_sessions: set[str] = field(default_factory=set)
    restored: list[str] = field(default_factory=list)
    gone_nodes: list[str] = field(default_factory=list)
    served: list[tuple[str, Socket]] = field(default_factory=list)
    closed_all: bool = False
    #: Sessions no end has reached yet (``movable``), and those taken in fresh (``take_in``).
    fresh: set[str] = field(default_factory=set)
    taken_in: list[str] = field(default_factory=list)
    #: When set, taking sessions in waits for it (as recordings being resumed would).
    hold: asyncio.Event | None = None

    async def restore(self, sessions: list[Session]) -> int:
        self.restored.extend(s.session_id for s in sessions)
        if self.hold is not None:
            await self.hold.wait()
        self.live_sessions.update(s.session_id for s in sessions)
        return len(sessions)

    def live_ids(self) -> list[str]:
        return sorted(self.live_sessions)

    def live(self, session_id: str) -> LiveSession | None:
        return LiveSession(session_id, NODE) if session_id in self.live_sessions else None  # type: ignore[call-arg]

    def node_gone(self, node_id: str) -> int:
        self.gone_nodes.append(node_id)
        return 0

    async def close_all(self) -> None:
        self.closed_all = True

    async def release(self, session_id: str) -> None:
        self.live_sessions.discard(session_id)
        self.fresh.discard(session_id)

    def movable(self, session_id: str) -> LiveSession | None:
        return LiveSession(session_id, NODE) if session_id in self.fresh else None  # type: ignore[call-arg]

    def take_in(self, session: Session) -> None:
        self.taken_in.append(session.session_id)
        self.live_sessions.add(session.session_id)

    async def serve_client(self, sock: TextSocket, session_id: str) -> None:
        self.served.append((session_id, sock))
        first = await sock.receive_text()
        await sock.send(b"welcome " + first.encode())
        await self._echo(sock)

    async def serve_agent(self, sock: Socket, live: LiveSession) -> None:
        self.served.append((live.session_id, sock))
        await self._echo(sock)

    @staticmethod
    async def _echo(sock: Socket) -> None:
        async for data in sock:
            if data == b"bye":
                await sock.close(CloseCode.ENDED, "the session ended")
                return
            await sock.send(data.upper())


@dataclass
class Replica:
    cluster: Cluster
    bus: MemoryBus
    control: FakeControl
    gateway: FakeGateway
    ended_here: list[tuple[str, str]] = field(default_factory=list)
    access_changes: int = 0
    admitted: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.cluster.replica_id

    def hears(self, *others: str) -> bool:
        return {p.replica_id for p in self.cluster.replicas.peers()} >= set(others)


class Group:
    """The replicas of one test, on one in-memory NATS and one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.nats = MemoryNats()
        self.all: list[Replica] = []
        self.buses: list[MemoryBus] = []

    def bus(self, key: bytes = b"k" * 32) -> MemoryBus:
        """A bare bus on the same NATS (with the cluster's key unless told otherwise)."""
        bus = MemoryBus(self.nats, key)
        self.buses.append(bus)
        return bus

    async def start(
        self, replica_id: str, *, dead_after: float = SHORT, clock: Callable[[], float] = time.time
    ) -> Replica:
        bus = MemoryBus(self.nats)
        control = FakeControl()
        gateway = FakeGateway()
        me = ReplicaInfo(replica_id, f"{replica_id}.example:8443", "1.0", time.time())
        cluster = Cluster(self.store, bus, control, me, clock)  # type: ignore[arg-type]
        cluster.replicas = Replicas(
            bus, me, cluster._stats, cluster._replica_gone,
            clock=clock, interval=INTERVAL, dead_after=dead_after,
        )  # fmt: skip
        replica = Replica(cluster, bus, control, gateway)

        async def admit_agent(session_id: str, node_id: str, source: str) -> LiveSession:
            replica.admitted.append((session_id, node_id, source))
            if node_id != NODE:
                raise NotFound(f"Session {session_id} is not active on {node_id}.")
            return LiveSession(session_id, node_id)  # type: ignore[call-arg]

        async def end_here(session_id: str, output: str) -> None:
            replica.ended_here.append((session_id, output))

        def access_changed() -> None:
            replica.access_changes += 1

        cluster.attach(gateway, Hooks(admit_agent, end_here, access_changed))  # type: ignore[arg-type]
        await cluster.start()
        self.all.append(replica)
        return replica

    async def close(self) -> None:
        for replica in self.all:
            if replica.bus.connected or replica.cluster._loops:
                await replica.cluster.stop()
            assert not replica.bus.failures, replica.bus.failures
        for bus in self.buses:
            await bus.close()


@contextlib.asynccontextmanager
async def cluster_of(store: Store) -> AsyncIterator[Group]:
    group = Group(store)
    try:
        yield group
    finally:
        await group.close()


@pytest.fixture(autouse=True)
def no_background_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep and the ownership check only when a test asks for them (it sets a short
    interval itself); otherwise they would race the tests' own calls."""
    monkeypatch.setattr(service, "SWEEP_INTERVAL", 3600.0)
    monkeypatch.setattr(service, "OWNERSHIP_INTERVAL", 3600.0)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.open(sqlite_url(tmp_path / "hatchway.db"))
    try:
        yield s
    finally:
        await s.close()


async def new_session(store: Store, relay: str, *, target: str = NODE) -> str:
    sid = f"admin-{uuid.uuid4().hex[:17]}"
    await store.sessions.create(session_record(sid, target), f"t-{sid}", 1.0)
    if relay:
        assert await store.sessions.claim_relay(sid, relay, "")
    return sid


async def relay_of(store: Store, session_id: str) -> str:
    got = await store.sessions.get(session_id)
    assert got is not None
    return got.relay


async def new_node(store: Store, replica: str = "", node_id: str = NODE) -> str:
    if await store.activations.get("act-1") is None:
        await store.activations.create(
            Activation("act-1", "h", "", "n", "", 100, 0, 2e9, 1.0, {})  # type: ignore[arg-type]
        )
    node = Node(
        instance_id=node_id, activation_id="act-1", public_key="k", public_key_type="Rsa",
        fingerprint="f", name="n", computer_name="", platform_type="", platform_name="",
        platform_version="", ip_address="", agent_version="", registration_date=1.0,
        last_ping_at=None, connected=False, tags={},
    )  # fmt: skip
    assert await store.activations.register_node("act-1", node, 1.0)
    if replica:
        assert await store.nodes.mark_connected(node_id, True, 2.0, replica=replica)
    return node_id


async def heard(*group: Replica) -> None:
    """Wait until every replica of ``group`` is warm and hears all the others."""
    ids = [r.id for r in group]
    for r in group:
        others = [i for i in ids if i != r.id]
        await until(lambda r=r, o=others: r.cluster.replicas.warm and r.hears(*o),  # type: ignore[misc]
                    f"{r.id} is warm and hears {others}")  # fmt: skip


async def edge_and_relay(group: Group) -> tuple[Replica, Replica]:
    """Two replicas that hear each other (a hand-over needs the new relay alive)."""
    edge = await group.start("edge")
    relay = await group.start("relay")
    await heard(edge, relay)
    return edge, relay


# ---- requests between replicas: errors cross as the same class ---------------------------


@pytest.mark.parametrize(
    "error",
    [
        AccessDenied("no, says the policy"),
        AuthError("who are you"),
        Conflict("in the way"),
        NotFound("Session s is not active on mi-1."),
        TargetNotConnected("mi-1 is not connected."),
        Throttled("slow down"),
        Unavailable("restarting"),
    ],
)
async def test_a_refusal_crosses_as_the_same_class(store: Store, error: HatchwayError) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        b.control.failure = error
        with pytest.raises(type(error)) as raised:
            await a.cluster._call("b", {"op": "control", "node": NODE, "action": "drop"})
        assert type(raised.value) is type(error) and raised.value.message == error.message


@pytest.mark.parametrize(
    ("error", "message"),
    [
        # Not in the table, nor any class it derives from: crosses as Unavailable.
        (ChannelClosed("closed"), "closed"),
        (ValueError("secret internals"), "internal error in the relaying server"),
    ],
)
async def test_other_failures_cross_as_unavailable(
    store: Store, error: BaseException, message: str
) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        b.control.failure = error
        with pytest.raises(Unavailable) as raised:
            await a.cluster._call("b", {"op": "control", "node": NODE, "action": "drop"})
        assert raised.value.message == message


async def test_a_subclass_crosses_as_the_nearest_class_both_sides_know(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        b.control.failure = InvalidInstanceId("no such node")
        with pytest.raises(NotFound) as raised:
            await a.cluster._call("b", {"op": "control", "node": NODE, "action": "drop"})
        assert raised.value.message == "no such node"


async def test_bad_requests_are_refused_as_unavailable(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        await group.start("b", dead_after=LONG)
        for message, why in [
            ({"op": "dance"}, "unknown request 'dance'"),
            ({"op": "control", "node": NODE, "action": "dance"}, "unknown control action"),
            ({"op": "open", "end": "mouth", "session": "s", "pipe": "p"}, "unknown end"),
        ]:
            with pytest.raises(Unavailable, match=why):
                await a.cluster._call("b", message)


async def test_a_request_to_nobody_is_no_responder(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        with pytest.raises(NoResponder):
            await a.cluster._call("gone", {"op": "control", "node": NODE, "action": "drop"})


async def test_requests_are_sealed_fresh_and_answered_once(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        assert await a.cluster._call("b", {"op": "control", "node": NODE, "action": "drop",
                                           "reason": "r"}) == {"ok": True}  # fmt: skip
        assert b.control.calls == [("drop", NODE, "r")]
        # The request, replayed by somebody who recorded it: refused, not done again.
        rpc = b.bus.subject("r", "b", "rpc")
        [(_, sealed)] = [(s, d) for s, d in group.nats.published if s == rpc]
        inbox = "_INBOX.replay"
        answers = group.nats.add(inbox)
        group.nats.inject(rpc, sealed, reply=inbox)
        async with asyncio.timeout(WAIT):
            _, answer, _ = await answers.get()
        opened = json.loads(b.bus._sealer.open(inbox + "#reply", answer))
        assert opened == {"error": "cluster message replayed", "kind": "Unavailable"}
        assert b.control.calls == [("drop", NODE, "r")]


async def test_a_request_from_a_replica_whose_clock_is_off_is_refused(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG, clock=lambda: time.time() - 3600)
        b = await group.start("b", dead_after=LONG)
        with pytest.raises(Unavailable, match="old"):
            await a.cluster._call("b", {"op": "control", "node": NODE, "action": "drop"})
        assert b.control.calls == []


async def test_an_answer_that_is_not_sealed_or_not_json_is_unavailable(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        liar, forger = group.bus(), group.bus(key=b"f" * 32)
        answers = iter([b"not json", b"[1]"])

        async def lie(subject: str, _body: bytes, reply: str | None) -> None:
            assert reply is not None
            await liar.reply(subject, reply, next(answers))

        async def forge(subject: str, _body: bytes, reply: str | None) -> None:
            assert reply is not None
            await forger.reply(subject, reply, b'{"ok": true}')

        await liar.subscribe(liar.subject("r", "liar", "rpc"), lie)
        for _ in range(2):
            with pytest.raises(Unavailable, match="bad answer"):
                await a.cluster._call("liar", {"op": "control"})
        forger_sub = group.bus()  # a subscriber with the key hands it to the forger
        await forger_sub.subscribe(forger_sub.subject("r", "forged", "rpc"), forge)
        with pytest.raises(Unavailable, match="bad answer"):
            await a.cluster._call("forged", {"op": "control"})


# ---- control messages: here or at the replica holding the node ----------------------------


def task(session_id: str = "admin-1") -> AgentTaskPayload:
    return AgentTaskPayload(session_id, "SSM-SessionManagerRunShell", {"sessionType": "x"}, {})


async def test_a_node_connected_here_is_sent_to_here(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        await new_node(store, replica="b")  # the database lags: the channel is here now
        a.control.connected.add(NODE)
        routed = RoutedControl(a.control, a.cluster)  # type: ignore[arg-type]
        assert routed.is_connected(NODE) and await routed.reachable(NODE)
        await routed.start_session(NODE, task())
        await routed.end_session(NODE, "admin-1", "bye")
        assert a.control.calls == [("start", NODE, task()), ("end", NODE, "admin-1", "bye")]
        assert b.control.calls == []
        assert not [s for s, _ in group.nats.published if s.endswith(".rpc")]


async def test_a_node_held_by_another_replica_is_sent_there(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        await new_node(store, replica="b")
        b.control.connected.add(NODE)
        routed = RoutedControl(a.control, a.cluster)  # type: ignore[arg-type]
        assert not routed.is_connected(NODE) and await routed.reachable(NODE)
        await routed.start_session(NODE, task())
        await routed.end_session(NODE, "admin-1", "done")
        await routed.drop(NODE, "deregistered")
        [start, end, drop] = b.control.calls
        assert start[:2] == ("start", NODE) and start[2] == task()
        assert end == ("end", NODE, "admin-1", "done")
        assert drop == ("drop", NODE, "deregistered")
        assert a.control.calls == [("drop", NODE, "deregistered")]  # here too, in case


async def test_a_node_connected_nowhere_is_not_connected(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        await new_node(store)  # registered, never connected
        await new_node(store, replica="a", node_id="mi-11111111111111111")  # a stale record
        routed = RoutedControl(a.control, a.cluster)  # type: ignore[arg-type]
        for node_id in (NODE, "mi-11111111111111111", "mi-none"):
            assert not await routed.reachable(node_id)
            with pytest.raises(TargetNotConnected):
                await routed.start_session(node_id, task())
            await routed.end_session(node_id, "admin-1")  # nothing to end: no error
            await routed.drop(node_id, "r")
        assert [c[0] for c in a.control.calls] == ["drop"] * 3


async def test_a_node_held_by_a_replica_that_vanished_is_not_connected(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=SHORT)
        b = await group.start("b", dead_after=LONG)
        await new_node(store, replica="b")
        await heard(a)
        await b.cluster.stop()  # SIGKILL: its subscriptions are gone at once, its beats stop
        routed = RoutedControl(a.control, a.cluster)  # type: ignore[arg-type]
        with pytest.raises(TargetNotConnected):  # no responder ...
            await routed.start_session(NODE, task())
        # ... makes it suspect: gone (a is warm), and its nodes are released
        await until(lambda: "b" not in {p.replica_id for p in a.cluster.replicas.peers()}
                    and NODE in a.gateway.gone_nodes, "a takes over from b")  # fmt: skip
        assert not await routed.reachable(NODE)
        node = await store.nodes.get(NODE)
        assert node is not None and not node.connected and node.replica == ""


# ---- routing data channels ----------------------------------------------------------------


async def test_route_follows_the_database_and_claims_what_nobody_relays(url: str) -> None:  # noqa: F811
    store = Store.open(url)
    try:
        async with cluster_of(store) as group:
            a = await group.start("a")
            b = await group.start("b")
            await heard(a, b)
            here, there, nobody, gone = [
                await new_session(store, relay) for relay in ("a", "b", "", "x")
            ]
            ended = await new_session(store, "b")
            assert await store.sessions.set_status(ended, SessionStatus.TERMINATED, now=3.0)
            assert await a.cluster.route(here) == ""
            assert await a.cluster.route(there) == "b"
            assert await a.cluster.route("admin-unknown") == ""  # the gateway refuses it
            assert await a.cluster.route(ended) == ""
            assert a.gateway.restored == []
            assert await a.cluster.route(nobody) == ""
            assert await a.cluster.route(gone) == ""
            assert a.gateway.restored == [nobody, gone]
            assert [await relay_of(store, s) for s in (here, there, nobody, gone, ended)] == [
                "a", "b", "a", "a", "b",
            ]  # fmt: skip
            assert await b.cluster.route(gone) == "a"
    finally:
        await store.close()


async def test_route_trusts_an_unheard_relay_until_warm(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        sid = await new_session(store, "x")
        assert await a.cluster.route(sid) == "x"  # x may simply not have been heard yet
        assert await relay_of(store, sid) == "x"


async def test_replicas_racing_for_a_gone_relays_sessions_agree(url: str) -> None:  # noqa: F811
    store = Store.open(url)
    try:
        async with cluster_of(store) as group:
            a = await group.start("a")
            b = await group.start("b")
            c = await group.start("c")
            await heard(a, b, c)
            ids = [await new_session(store, "x") for _ in range(6)]
            for sid in ids:
                answers = await asyncio.gather(*(r.cluster.route(sid) for r in (a, b, c)))
                winner = await relay_of(store, sid)
                assert winner in ("a", "b", "c")
                assert answers == [("" if r.id == winner else winner) for r in (a, b, c)]
            restored = a.gateway.restored + b.gateway.restored + c.gateway.restored
            assert sorted(restored) == sorted(ids)  # each adopted once
    finally:
        await store.close()


async def test_a_client_end_is_piped_to_the_relay(store: Store) -> None:
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        relay = await group.start("relay", dead_after=LONG)
        sid = await new_session(store, "relay")
        client, server = socket_pair("client", "edge")
        serving = asyncio.get_running_loop().create_task(edge.cluster.serve_client(server, sid))
        await client.send_text('{"TokenValue": "t"}')
        async with asyncio.timeout(WAIT):
            got = [await anext(aiter(client)) for _ in range(1)]
            assert got == [b'welcome {"TokenValue": "t"}']
            for word in (b"one", b"two", b"three"):
                await client.send(word)
            echoed = [await anext(aiter(client)) for _ in range(3)]
        assert echoed == [b"ONE", b"TWO", b"THREE"]
        [(served_id, remote)] = relay.gateway.served
        assert served_id == sid and remote.label == f"client:{sid}@edge"
        assert edge.cluster.replicas.all()[0].pipes == 1  # what it announces
        await client.send(b"bye")
        async with asyncio.timeout(WAIT):
            await serving
        assert (client.close_code, client.close_reason) == (CloseCode.ENDED, "the session ended")
        await until(lambda: not relay.cluster._remote_ends and not edge.cluster._edges,
                    "both sides forget the pipe")  # fmt: skip


async def test_a_client_end_whose_session_moves_to_its_replica_is_served_there(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first message was read to be piped to the relay, which no longer relays it: the
    session moved to this very replica meanwhile. Served here, that message given again."""
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        relay = await group.start("relay", dead_after=LONG)
        sid = await new_session(store, "relay")
        call = edge.cluster._call

        async def moving_call(replica: str, message: dict[str, Any]) -> dict[str, Any]:
            if message.get("op") == "open":  # the hand-over won the race
                assert await store.sessions.claim_relay(sid, "edge", "relay")
            return await call(replica, message)

        monkeypatch.setattr(edge.cluster, "_call", moving_call)
        client, server = socket_pair("client", "edge")
        serving = asyncio.get_running_loop().create_task(edge.cluster.serve_client(server, sid))
        await client.send_text('{"TokenValue": "t"}')
        async with asyncio.timeout(WAIT):
            assert await anext(aiter(client)) == b'welcome {"TokenValue": "t"}'
            await client.send(b"bye")
            await serving
        assert [s for s, _ in edge.gateway.served] == [sid] and not relay.gateway.served


async def test_a_client_end_whose_relay_drains_is_sent_elsewhere(store: Store) -> None:
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        relay = await group.start("relay", dead_after=LONG)
        relay.cluster.draining = True
        sid = await new_session(store, "relay")
        client, server = socket_pair("client", "edge")
        await client.send_text('{"TokenValue": "t"}')
        async with asyncio.timeout(WAIT):
            await edge.cluster.serve_client(server, sid)
        assert client.close_code == CloseCode.GOING_AWAY
        assert "restarting" in client.close_reason and "reconnect" in client.close_reason
        assert relay.gateway.served == [] and not edge.cluster._edges


async def test_a_client_end_without_its_first_text_is_refused(store: Store) -> None:
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        await group.start("relay", dead_after=LONG)
        sid = await new_session(store, "relay")
        client, server = socket_pair("client", "edge")
        await client.send(b"binary first")
        async with asyncio.timeout(WAIT):
            await edge.cluster.serve_client(server, sid)
        assert client.close_code == CloseCode.POLICY


async def test_an_agent_end_is_admitted_by_the_relay_and_piped(store: Store) -> None:
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        relay = await group.start("relay", dead_after=LONG)
        sid = await new_session(store, "relay")
        with pytest.raises(NotFound):  # the relay's refusal, as the same class
            await edge.cluster.open_agent(sid, "mi-22222222222222222", "10.0.0.9")
        assert not edge.cluster._edges
        pipe = await edge.cluster.open_agent(sid, NODE, "10.0.0.9")
        assert pipe is not None
        assert relay.admitted[-1] == (sid, NODE, "10.0.0.9")
        agent, server = socket_pair("agent", "edge")
        running = asyncio.get_running_loop().create_task(edge.cluster.run_agent(pipe, server))
        await agent.send(b"output")
        async with asyncio.timeout(WAIT):
            assert await anext(aiter(agent)) == b"OUTPUT"
        await agent.close(CloseCode.GOING_AWAY, "agent restarting")
        async with asyncio.timeout(WAIT):
            await running
        [(_, remote)] = relay.gateway.served
        await until(lambda: remote.closed, "the relay's end closes")
        assert remote.close_code == CloseCode.GOING_AWAY
        # here: no pipe
        local = await new_session(store, "edge")
        assert await edge.cluster.open_agent(local, NODE, "") is None


async def test_a_new_session_moves_to_the_replica_its_node_end_reaches(store: Store) -> None:
    """No end has reached the relay yet: the node's end, come to another replica, takes the
    session there (no pipe for it). Once an end has come, the session stays and is piped."""
    async with cluster_of(store) as group:
        edge, relay = await edge_and_relay(group)
        sid = await new_session(store, "relay")
        relay.gateway.live_sessions.add(sid)
        relay.gateway.fresh.add(sid)
        with pytest.raises(NotFound):  # another node: no hand-over, the relay refuses it
            await edge.cluster.open_agent(sid, "mi-22222222222222222", "")
        assert await relay_of(store, sid) == "relay"
        assert await edge.cluster.open_agent(sid, NODE, "") is None  # admitted here
        assert await relay_of(store, sid) == "edge"
        assert edge.gateway.taken_in == [sid]
        assert sid not in relay.gateway.live_sessions
        assert await relay.cluster.route(sid) == "edge"
        # An end came first (not fresh): the session stays with its relay, the end is piped.
        kept = await new_session(store, "relay")
        relay.gateway.live_sessions.add(kept)
        pipe = await edge.cluster.open_agent(kept, NODE, "")
        assert pipe is not None
        assert await relay_of(store, kept) == "relay"
        edge.cluster.forget_agent(pipe)
        # A session past CONNECTING is never asked for.
        started = await new_session(store, "relay")
        relay.gateway.fresh.add(started)
        assert await store.sessions.set_status(started, SessionStatus.CONNECTED, now=2.0)
        pipe = await edge.cluster.open_agent(started, NODE, "")
        assert pipe is not None
        assert await relay_of(store, started) == "relay"
        edge.cluster.forget_agent(pipe)


async def test_a_client_with_its_fresh_token_moves_a_new_session_to_its_replica(
    store: Store,
) -> None:
    """The client's end came first: with its session's token, never used yet, it takes the
    new session to its replica (served there, its first message given again); with any other
    token, the session stays and the end is piped (the relay refuses a bad token)."""
    async with cluster_of(store) as group:
        edge, relay = await edge_and_relay(group)
        sids = []
        for _ in range(2):
            sid = f"admin-{uuid.uuid4().hex[:17]}"
            await store.sessions.create(session_record(sid, NODE), hash_token(f"tok-{sid}"), 1.0)
            assert await store.sessions.claim_relay(sid, "relay", "")
            relay.gateway.live_sessions.add(sid)
            relay.gateway.fresh.add(sid)
            sids.append(sid)
        moved, kept = sids
        for sid, token in ((moved, f"tok-{moved}"), (kept, f"tok-{moved}")):
            client, server = socket_pair("client", "edge")
            serving = asyncio.get_running_loop().create_task(edge.cluster.serve_client(server, sid))
            opened = OpenDataChannelInput(token, str(uuid.uuid4()), "c1", "1").to_json().decode()
            await client.send_text(opened)
            async with asyncio.timeout(WAIT):
                assert await anext(aiter(client)) == f"welcome {opened}".encode()
                await client.send(b"bye")
                await serving
        assert await relay_of(store, moved) == "edge" and edge.gateway.taken_in == [moved]
        assert [s for s, _ in edge.gateway.served] == [moved]
        assert await relay_of(store, kept) == "relay"
        assert [s for s, _ in relay.gateway.served] == [kept]


async def test_a_draining_relay_hands_nothing_over(store: Store) -> None:
    async with cluster_of(store) as group:
        edge, relay = await edge_and_relay(group)
        sid = await new_session(store, "relay")
        relay.gateway.fresh.add(sid)
        relay.cluster.draining = True
        answer = await edge.cluster._call("relay", {"op": "hand", "session": sid})
        assert answer == {"handed": False}
        assert await relay_of(store, sid) == "relay"


async def test_a_failed_agent_upgrade_tells_the_relay(store: Store) -> None:
    async with cluster_of(store) as group:
        edge = await group.start("edge", dead_after=LONG)
        relay = await group.start("relay", dead_after=LONG)
        sid = await new_session(store, "relay")
        pipe = await edge.cluster.open_agent(sid, NODE, "")
        assert pipe is not None
        edge.cluster.forget_agent(pipe)
        await until(lambda: bool(relay.gateway.served), "the relay serves the end")
        [(_, remote)] = relay.gateway.served
        await until(lambda: remote.closed, "the relay's end closes")
        server = socket_pair("agent", "edge")[1]
        await edge.cluster.run_agent(pipe, server)  # forgotten: closed at once
        assert server.close_code == CloseCode.GOING_AWAY


# ---- a replica leaves or dies -------------------------------------------------------------


async def test_a_draining_replica_hands_its_sessions_and_nodes_over(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        await until(lambda: a.hears("b"), "a hears b")
        ids = [await new_session(store, "b") for _ in range(3)]
        await new_node(store, replica="b")
        b.control.connected.add(NODE)
        await b.cluster.drain()
        assert b.gateway.closed_all and not b.control.connected
        await until(lambda: sorted(a.gateway.restored) == sorted(ids), "a adopts b's sessions")
        assert [await relay_of(store, s) for s in ids] == ["a"] * 3
        await until(lambda: a.gateway.gone_nodes == [NODE], "a tells the gateway")
        node = await store.nodes.get(NODE)
        assert node is not None and not node.connected
        assert "b" not in {p.replica_id for p in a.cluster.replicas.peers()}


async def test_an_end_waits_while_its_session_is_being_taken_in(store: Store) -> None:
    """Between the database's compare-and-set and the recorder being attached, an end that
    reaches the new relay waits: joined earlier, it would relay frames no recording sees."""
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        sid = await new_session(store, "x")
        a.gateway.hold = asyncio.Event()
        loop = asyncio.get_running_loop()
        taking = loop.create_task(a.cluster.take_over("x"))
        await until(lambda: a.gateway.restored == [sid], "the take-over is under way")
        assert await relay_of(store, sid) == "a"
        routing = loop.create_task(a.cluster.route(sid))
        await asyncio.sleep(0.05)
        assert not routing.done()
        a.gateway.hold.set()
        async with asyncio.timeout(5):
            assert await routing == ""
            await taking
        assert a.gateway.live_ids() == [sid]


async def test_the_sweep_takes_over_sessions_of_relays_nobody_hears(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "SWEEP_INTERVAL", INTERVAL)
    async with cluster_of(store) as group:
        a = await group.start("a")
        ids = [await new_session(store, "x") for _ in range(2)]
        kept = await new_session(store, "a")
        await until(lambda: sorted(a.gateway.restored) == sorted(ids), "a sweeps x's sessions")
        assert [await relay_of(store, s) for s in (*ids, kept)] == ["a"] * 3


async def test_sessions_taken_over_elsewhere_are_let_go(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "OWNERSHIP_INTERVAL", INTERVAL)
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        mine, lost = await new_session(store, "a"), await new_session(store, "a")
        a.gateway.live_sessions.update({mine, lost})
        assert await store.sessions.claim_relay(lost, "b", "a")  # a was cut off meanwhile
        await until(lambda: a.gateway.live_ids() == [mine], "a lets the lost session go")


# ---- broadcasts and health ----------------------------------------------------------------


async def test_broadcasts_reach_the_other_replicas(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        b = await group.start("b", dead_after=LONG)
        c = await group.start("c", dead_after=LONG)
        b.gateway.live_sessions.add("admin-s")
        c.control.connected.add(NODE)
        await a.cluster.broadcast("session_end", session="admin-s", output="killed")
        await a.cluster.broadcast("node_gone", node=NODE)
        a.cluster.access_changed()
        await until(lambda: b.access_changes == 1 and c.access_changes == 1, "access re-checked")
        assert a.access_changes == 1  # here at once, not from its own broadcast
        assert b.ended_here == [("admin-s", "killed")] and c.ended_here == []
        assert b.gateway.gone_nodes == [NODE]
        assert c.gateway.gone_nodes == []  # the node's channel is here: not gone


async def test_forged_and_stale_broadcasts_are_ignored(store: Store) -> None:
    async with cluster_of(store) as group:
        b = await group.start("b", dead_after=LONG)
        forger, insider = group.bus(key=b"f" * 32), group.bus()
        subject = b.bus.subject("all")
        stamp = Freshness.stamp
        await forger.publish(subject, stamp({"op": "access_changed", "from": "z"}, time.time()))
        await insider.publish(
            subject, stamp({"op": "access_changed", "from": "z"}, time.time() - 3600)
        )
        await insider.publish(subject, b"garbage")
        await insider.publish(subject, stamp({"op": "unknown", "from": "z"}, time.time()))
        await insider.publish(subject, stamp({"op": "access_changed", "from": "b"}, time.time()))
        await insider.publish(subject, stamp({"op": "access_changed", "from": "z"}, time.time()))
        await until(lambda: b.access_changes == 1, "the genuine broadcast is heard")
        assert len(b.bus.dropped) == 1


async def test_health_says_why(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        assert await a.cluster.problems() == []
        a.bus.disconnect()
        assert await a.cluster.problems() == ["NATS is unreachable"]
        a.bus.reconnect()
        a.cluster.draining = True
        assert await a.cluster.problems() == ["draining: this replica is shutting down"]
        [me] = a.cluster.replicas.all()
        assert me.draining and not me.healthy


async def test_an_end_sent_to_a_replica_that_no_longer_relays_is_moved(store: Store) -> None:
    async with cluster_of(store) as group:
        a = await group.start("a", dead_after=LONG)
        await group.start("b", dead_after=LONG)
        await group.start("c", dead_after=LONG)
        sid = await new_session(store, "c")  # a thought b relayed it: b says where it is now
        with pytest.raises(service.Moved, match="relayed by c"):
            await a.cluster._call("b", {"op": "open", "end": "agent", "pipe": "p1",
                                        "session": sid, "node": NODE})  # fmt: skip
