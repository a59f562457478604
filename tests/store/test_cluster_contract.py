"""Scale-out's storage contract, on SQLite and PostgreSQL: which replica relays each session
(compare-and-set claims, take-over) and which holds each node's control channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from hatchway.store.events import Event, EventType, Subscription
from hatchway.store.records import SessionStatus
from hatchway.store.store import Store
from tests.store.conftest import with_store
from tests.store.test_store_contract import activation, node, session


async def _relay(s: Store, session_id: str) -> str:
    got = await s.sessions.get(session_id)
    assert got is not None
    return got.relay


async def _sessions(s: Store, *relays: str) -> list[str]:
    """One active session per relay in ``relays`` (claimed from nobody)."""
    ids = []
    for relay in relays:
        sid = f"admin-{uuid.uuid4().hex[:17]}"
        await s.sessions.create(session(sid, "mi-1"), f"t-{sid}", 1.0)
        if relay:
            assert await s.sessions.claim_relay(sid, relay, "")
        ids.append(sid)
    return ids


async def _end(s: Store, session_id: str) -> None:
    assert await s.sessions.set_status(session_id, SessionStatus.TERMINATED, now=5.0)


def test_a_new_session_has_no_relay_and_is_claimed_by_compare_and_set(url: str) -> None:
    async def body(s: Store) -> None:
        [sid] = await _sessions(s, "")
        assert await _relay(s, sid) == ""
        assert await s.sessions.claim_relay(sid, "a", "")
        assert await _relay(s, sid) == "a"
        assert not await s.sessions.claim_relay(sid, "b", "")  # it is a's now
        assert await _relay(s, sid) == "a"
        assert await s.sessions.claim_relay(sid, "b", "a")
        assert await _relay(s, sid) == "b"
        assert not await s.sessions.claim_relay("admin-none", "b", "")
        await _end(s, sid)
        assert not await s.sessions.claim_relay(sid, "c", "b")  # over: nobody relays it
        assert await _relay(s, sid) == "b"

    with_store(url, body)


def test_of_claims_that_race_with_the_same_expected_relay_exactly_one_wins(url: str) -> None:
    async def body(s: Store) -> None:
        ids = await _sessions(s, *["gone"] * 5)
        for sid in ids:
            claimants = [f"r{i}" for i in range(6)]
            won = await asyncio.gather(*(s.sessions.claim_relay(sid, r, "gone") for r in claimants))
            assert sum(won) == 1
            assert await _relay(s, sid) == claimants[won.index(True)]

    with_store(url, body)


def test_take_over_moves_the_active_sessions_of_a_gone_relay(url: str) -> None:
    async def body(s: Store) -> None:
        mine = await _sessions(s, "gone", "gone", "gone")
        others = await _sessions(s, "other", "")
        await _end(s, mine[2])
        taken = await s.sessions.take_over("gone", "heir")
        assert sorted(t.session_id for t in taken) == sorted(mine[:2])
        assert {t.relay for t in taken} == {"heir"}
        assert all(t.status.is_active and t.target == "mi-1" for t in taken)
        assert [await _relay(s, sid) for sid in mine] == ["heir", "heir", "gone"]
        assert [await _relay(s, sid) for sid in others] == ["other", ""]
        assert await s.sessions.take_over("gone", "heir") == []
        assert await s.sessions.take_over("nobody", "heir") == []

    with_store(url, body)


def test_take_overs_that_race_share_the_sessions_out(url: str) -> None:
    async def body(s: Store) -> None:
        ids = await _sessions(s, *["gone"] * 12)
        heirs = ["h0", "h1", "h2"]
        taken = await asyncio.gather(*(s.sessions.take_over("gone", h) for h in heirs))
        got = [t.session_id for batch in taken for t in batch]
        assert sorted(got) == sorted(ids)  # each taken once, by one heir
        for heir, batch in zip(heirs, taken, strict=True):
            for t in batch:
                assert await _relay(s, t.session_id) == heir

    with_store(url, body)


def test_relays_are_those_of_active_sessions(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.sessions.relays() == set()
        ids = await _sessions(s, "a", "a", "b", "c", "")
        await _end(s, ids[3])
        assert await s.sessions.relays() == {"a", "b", ""}

    with_store(url, body)


def test_relayed_elsewhere_names_the_sessions_a_replica_lost(url: str) -> None:
    async def body(s: Store) -> None:
        ids = await _sessions(s, "a", "a", "a", "a")
        assert await s.sessions.relayed_elsewhere([], "a") == []
        assert await s.sessions.relayed_elsewhere(ids, "a") == []
        assert await s.sessions.claim_relay(ids[1], "b", "a")
        await _end(s, ids[3])
        asked = [ids[3], "admin-unknown", ids[0], ids[1], ids[2]]
        assert await s.sessions.relayed_elsewhere(asked, "a") == [
            ids[3],
            "admin-unknown",
            ids[1],
        ]
        assert await s.sessions.relayed_elsewhere(ids, "b") == [ids[0], ids[2], ids[3]]

    with_store(url, body)


def test_a_late_disconnection_does_not_undo_a_reconnection_elsewhere(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation()
        await s.activations.create(a)
        n = node(a.activation_id)
        assert await s.activations.register_node(a.activation_id, n, 1.0)
        nid = n.instance_id
        assert await s.nodes.mark_connected(nid, True, 2.0, replica="ra")
        got = await s.nodes.get(nid)
        assert got is not None and got.connected and got.replica == "ra"
        assert got.last_ping_at == 2.0
        # the agent re-dialled through the balancer and reached rb ...
        assert await s.nodes.mark_connected(nid, True, 3.0, replica="rb")
        # ... before ra noticed its channel was gone
        assert not await s.nodes.mark_connected(nid, False, 4.0, replica="ra")
        got = await s.nodes.get(nid)
        assert got is not None and got.connected and got.replica == "rb"
        assert await s.nodes.mark_connected(nid, False, 5.0, replica="rb")
        got = await s.nodes.get(nid)
        assert got is not None and not got.connected and got.replica == ""
        assert got.last_ping_at == 3.0
        assert not await s.nodes.mark_connected("mi-none", True, 6.0, replica="rb")

    with_store(url, body)


def test_release_replica_disconnects_its_nodes_with_their_events(url: str) -> None:
    async def body(s: Store) -> None:
        await s.events.create_subscription(
            Subscription(
                subscription_id="sub", url="https://hooks.example/sub",
                event_types=(EventType.NODE_OFFLINE,), secret_encrypted="v1:x",
                created_at=1.0, created_by="arn:aws:iam::123456789012:user/admin",
            )
        )  # fmt: skip
        a = activation(limit=4)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(4)]
        for n in nodes:
            assert await s.activations.register_node(a.activation_id, n, 1.0)
        ids = [n.instance_id for n in nodes]
        for nid, replica in zip(ids, ["ra", "ra", "rb", "ra"], strict=True):
            assert await s.nodes.mark_connected(nid, True, 2.0, replica=replica)
        assert await s.nodes.mark_connected(ids[3], False, 3.0, replica="ra")  # left already

        asked: list[str] = []

        def events_of(node_id: str) -> Sequence[Event]:
            asked.append(node_id)
            return (Event(str(uuid.uuid4()), EventType.NODE_OFFLINE, 4.0, {"node": node_id}),)

        released = await s.nodes.release_replica("ra", events_of)
        assert sorted(released) == sorted(ids[:2]) and sorted(asked) == sorted(ids[:2])
        for nid in ids[:2]:
            got = await s.nodes.get(nid)
            assert got is not None and not got.connected and got.replica == ""
        got = await s.nodes.get(ids[2])
        assert got is not None and got.connected and got.replica == "rb"
        deliveries = await s.events.deliveries(subscription_id="sub")
        assert len(deliveries) == 2 and {d.event_type for d in deliveries} == {"node.offline"}
        assert await s.nodes.release_replica("ra", events_of) == []

    with_store(url, body)


def test_releases_that_race_release_each_node_once(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=6)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(6)]
        for n in nodes:
            assert await s.activations.register_node(a.activation_id, n, 1.0)
            assert await s.nodes.mark_connected(n.instance_id, True, 2.0, replica="ra")
        released = await asyncio.gather(
            *(s.nodes.release_replica("ra", lambda _node: ()) for _ in range(3))
        )
        got = [nid for batch in released for nid in batch]
        assert sorted(got) == sorted(n.instance_id for n in nodes)

    with_store(url, body)


def test_disconnect_all_leaves_other_replicas_nodes_alone(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=2)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(2)]
        for n, replica in zip(nodes, ["ra", "rb"], strict=True):
            assert await s.activations.register_node(a.activation_id, n, 1.0)
            assert await s.nodes.mark_connected(n.instance_id, True, 2.0, replica=replica)
        await s.nodes.disconnect_all("ra")
        first, second = [await s.nodes.get(n.instance_id) for n in nodes]
        assert first is not None and not first.connected
        assert second is not None and second.connected and second.replica == "rb"

    with_store(url, body)


def test_mark_disconnected_changes_only_connected_sessions(url: str) -> None:
    async def body(s: Store) -> None:
        connected, connecting, ended = await _sessions(s, "a", "a", "a")
        assert await s.sessions.set_status(connected, SessionStatus.CONNECTED, now=2.0)
        await _end(s, ended)
        ids = [connected, connecting, ended, "admin-unknown"]
        assert await s.sessions.mark_disconnected(ids) == 1
        statuses = [(await s.sessions.get(sid)).status for sid in ids[:3]]  # type: ignore[union-attr]
        assert statuses == [
            SessionStatus.DISCONNECTED,
            SessionStatus.CONNECTING,
            SessionStatus.TERMINATED,
        ]
        assert await s.sessions.mark_disconnected([]) == 0

    with_store(url, body)
