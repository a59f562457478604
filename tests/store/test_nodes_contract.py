"""Node listing and presence, on SQLite and PostgreSQL: keyset pages with filters in SQL
(``NodeRepository.page``) and batched presence writes (``NodeRepository.record_presence``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, insert

from hatchway.store import schema
from hatchway.store.records import Heartbeat, Node
from hatchway.store.store import Store
from tests.store.conftest import with_store
from tests.store.test_store_contract import node

NOW = 1000.0
ONLINE_SINCE = NOW - 30.0


@dataclass(frozen=True)
class Listing:
    """A DescribeInstanceInformation request, as the repository sees it."""

    limit: int
    instance_ids: frozenset[str] | None
    online: bool | None
    tags: tuple[tuple[str, frozenset[str]], ...]


def is_online(n: Node) -> bool:
    return n.connected and n.last_ping_at is not None and n.last_ping_at >= ONLINE_SINCE


def wanted(n: Node, q: Listing) -> bool:
    return (
        (q.instance_ids is None or n.instance_id in q.instance_ids)
        and (q.online is None or is_online(n) == q.online)
        and all(n.tags.get(k) in vs for k, vs in q.tags)
    )


async def page_through(s: Store, q: Listing) -> list[list[Node]]:
    """Every page, the way ``NodeService.describe_instances`` asks for them."""
    pages: list[list[Node]] = []
    after: tuple[float, str] | None = None
    while True:
        rows = await s.nodes.page(
            limit=q.limit + 1,
            after=after,
            instance_ids=q.instance_ids,
            online=q.online,
            online_since=ONLINE_SINCE,
            tags=q.tags,
        )
        pages.append(list(rows[: q.limit]))
        if len(rows) <= q.limit:
            return pages
        last = rows[q.limit - 1]
        after = (last.registration_date, last.instance_id)


ids = st.sampled_from([f"mi-{i:017x}" for i in range(40)])
values = st.sampled_from(["dev", "prod", "a b", "ünï"])
tag_keys = st.sampled_from(["Env", "Team", "x:y/z"])
nodes_strategy = st.lists(
    st.tuples(
        ids,
        st.sampled_from([1.0, 2.0, 2.5, 1e9 + 0.125]),  # ties: the id breaks them
        st.dictionaries(tag_keys, values, max_size=2),
        st.booleans(),
        st.one_of(st.none(), st.sampled_from([NOW - 100, ONLINE_SINCE, NOW])),
    ),
    max_size=25,
    unique_by=lambda t: t[0],
)
listings = st.builds(
    Listing,
    limit=st.integers(1, 7),
    instance_ids=st.one_of(st.none(), st.frozensets(ids, max_size=10)),
    online=st.sampled_from([None, True, False]),
    tags=st.lists(st.tuples(tag_keys, st.frozensets(values, min_size=1)), max_size=2).map(tuple),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=nodes_strategy, q=listings)
def test_paging_lists_each_matching_node_once_in_order(
    url: str, rows: list[tuple[str, float, dict[str, str], bool, float | None]], q: Listing
) -> None:
    made = [
        replace(node("act", i), registration_date=d, tags=tags, connected=c, last_ping_at=ping)
        for i, d, tags, c, ping in rows
    ]

    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.execute(delete(schema.nodes))
            if made:
                await conn.execute(insert(schema.nodes), [vars_of(n) for n in made])
        pages = await page_through(s, q)
        listed = [n.instance_id for p in pages for n in p]
        expected = sorted(
            (n for n in made if wanted(n, q)), key=lambda n: (n.registration_date, n.instance_id)
        )
        assert listed == [n.instance_id for n in expected]
        assert all(len(p) == q.limit for p in pages[:-1])  # only the last page is short
        assert len(pages[-1]) <= q.limit

    with_store(url, body)


def vars_of(n: Node) -> dict[str, object]:
    return {name: getattr(n, name) for name in n.__slots__}


def test_a_filter_on_a_tag_key_no_tag_can_have_matches_nothing(url: str) -> None:
    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.execute(insert(schema.nodes), [vars_of(node("act", "mi-1"))])
        for key in ('a"b', "a\\b", "a\nb", ""):
            assert await s.nodes.page(limit=5, tags=[(key, {"dev"})]) == []
        assert [n.instance_id for n in await s.nodes.page(limit=5, tags=[("Env", {"dev"})])] == [
            "mi-1"
        ]

    with_store(url, body)


def test_presence_batches_write_pings_and_changed_facts(url: str) -> None:
    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.execute(
                insert(schema.nodes), [vars_of(node("act", f"mi-{i}")) for i in range(3)]
            )
        beat = Heartbeat("mi-0", 5.0, "host", "Linux", "Debian", "12", "10.0.0.1", "1.0")
        await s.nodes.record_presence([beat], [("mi-1", 6.0), ("mi-gone", 7.0)])
        n0, n1, n2 = [await s.nodes.get(f"mi-{i}") for i in range(3)]
        assert n0 is not None and n1 is not None and n2 is not None
        assert (n0.last_ping_at, n0.connected, n0.computer_name, n0.agent_version) == (
            5.0, True, "host", "1.0",
        )  # fmt: skip
        assert (n1.last_ping_at, n1.connected, n1.computer_name) == (6.0, True, "")
        assert (n2.last_ping_at, n2.connected) == (None, False)
        await s.nodes.record_presence([], [])  # nothing to do

    with_store(url, body)


@pytest.mark.parametrize("count", [2500])
def test_a_large_presence_batch_is_one_statement(url: str, count: int) -> None:
    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.execute(
                insert(schema.nodes), [vars_of(node("act", f"mi-{i}")) for i in range(count)]
            )
        updates: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if statement.lstrip().upper().startswith("UPDATE"):
                updates.append(statement)

        event.listen(s.engine.sync_engine, "before_cursor_execute", seen)
        await s.nodes.record_presence([], [(f"mi-{i}", 9.0) for i in range(count)])
        event.remove(s.engine.sync_engine, "before_cursor_execute", seen)
        assert len(updates) == 1  # one executemany for the whole batch
        page = await s.nodes.page(limit=count, online=True, online_since=9.0)
        assert len(page) == count

    with_store(url, body)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    made=st.lists(
        st.tuples(st.sampled_from([1.0, 2.0, 3.5]), st.sampled_from(["r1", "r2"])), max_size=12
    ),
    limit=st.integers(1, 5),
    roles=st.one_of(st.none(), st.frozensets(st.sampled_from(["r1", "r2", "r3"]))),
)
def test_activations_page_by_key_with_filters(
    url: str, made: list[tuple[float, str]], limit: int, roles: frozenset[str] | None
) -> None:
    from tests.store.test_store_contract import activation

    acts = [replace(activation(), created_date=d, iam_role=r) for d, r in made]

    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.execute(delete(schema.activations))
            if acts:
                await conn.execute(insert(schema.activations), [vars_of(a) for a in acts])
        listed: list[str] = []
        after: tuple[float, str] | None = None
        while True:
            rows = await s.activations.page(limit=limit + 1, after=after, iam_roles=roles)
            listed += [a.activation_id for a in rows[:limit]]
            if len(rows) <= limit:
                break
            after = (rows[limit - 1].created_date, rows[limit - 1].activation_id)
        expected = sorted(
            (a for a in acts if roles is None or a.iam_role in roles),
            key=lambda a: (a.created_date, a.activation_id),
        )
        assert listed == [a.activation_id for a in expected]

    with_store(url, body)
