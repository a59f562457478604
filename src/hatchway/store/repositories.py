"""Repositories: the only code that writes SQL. One small class per aggregate.

Each method runs in its own transaction unless it says otherwise, always through
:meth:`_Repository._transaction` (writes) or :meth:`_Repository._snapshot` (reads): the one
place that queues callers, serializes SQLite's writes and maps database errors
(``store.database.Database``). Racy updates (registration counts, token first use, session
status) are single conditional ``UPDATE`` statements, so they stay correct with several server
replicas on one PostgreSQL database. Identity and policy repositories live in
``store.identity``; their changes go through :meth:`_Repository._change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.audit.events import AuditEvent
from hatchway.errors import (
    Conflict,
    InvalidActivationId,
    InvalidInstanceId,
    StoreError,
    TooManyTags,
)
from hatchway.store import schema as t
from hatchway.store.audit import stage
from hatchway.store.database import Database
from hatchway.store.events import Event, Outbox
from hatchway.store.records import (
    ACTIVE_STATUSES,
    HISTORY_STATUSES,
    Activation,
    Heartbeat,
    Node,
    Session,
    SessionConnection,
    SessionStatus,
    SessionToken,
)

MAX_NODE_TAGS = 50
MAX_CONNECTIONS_PER_SESSION = 10_000
"""Connection records kept per session; later ones are counted in the log, not stored."""
"""SSM's limit of tags per resource."""


class _Repository:
    def __init__(self, database: Database, outbox: Outbox | None = None) -> None:
        self._db = database
        # Where events go, in the transaction of the change they report (store.events).
        self._outbox = outbox or Outbox()

    def _transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction: committed at the end of the block, rolled back on an error.

        Raises ``Conflict`` (a constraint refused the change) or ``StoreError``.
        """
        return self._db.write()

    def _snapshot(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read-only transaction; raises ``StoreError``."""
        return self._db.read()

    @asynccontextmanager
    async def _change(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that first bumps the IAM generation (``iam_generation``).

        For every change to identities, policies and node tags, which live sessions are
        re-checked against. The bump comes first on purpose: it takes the generation row's lock
        (PostgreSQL) or the write lock (SQLite), so these changes take turns across every
        replica, and what such a transaction reads after it is the latest committed state
        (READ COMMITTED reads per statement). Checks followed by writes — "fewer than 2 keys,
        then insert one", "no members, then delete" — are therefore race-free. Such changes are
        rare; the contention is cheap.
        """
        async with self._transaction() as conn:
            g = t.iam_generation.c
            await conn.execute(
                update(t.iam_generation).where(g.row_id == 1).values(generation=g.generation + 1)
            )
            yield conn
            stage(conn)  # the API call that made this change is recorded with it

    async def _fetch(self, stmt: Any) -> Sequence[Any]:
        async with self._snapshot() as conn:
            return (await conn.execute(stmt)).all()

    async def _write(self, *stmts: Any) -> int:
        """Run statements in one transaction; returns the last statement's rowcount."""
        async with self._transaction() as conn:
            count = 0
            for stmt in stmts:
                count = (await conn.execute(stmt)).rowcount
            return count


class SettingsRepository(_Repository):
    """Small key/value facts about this installation (account id, ...)."""

    async def get(self, key: str) -> str | None:
        rows = await self._fetch(
            select(t.server_settings.c.value).where(t.server_settings.c.key == key)
        )
        return rows[0][0] if rows else None

    async def set_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; returns the stored value either way."""
        with contextlib.suppress(Conflict):
            await self._write(insert(t.server_settings).values(key=key, value=value))
        stored = await self.get(key)
        assert stored is not None
        return stored

    async def replace(self, key: str, expected: str, value: str) -> bool:
        """Set the key to ``value`` if it still holds ``expected`` (one conditional
        ``UPDATE``: correct with several replicas); returns whether it did."""
        s = t.server_settings.c
        stmt = update(t.server_settings).where(s.key == key, s.value == expected)
        return await self._write(stmt.values(value=value)) == 1


class ActivationRepository(_Repository):
    async def create(self, activation: Activation) -> None:
        async with self._transaction() as conn:
            await conn.execute(insert(t.activations).values(**_asdict(activation)))
            stage(conn)  # the API call that made it is recorded with it

    async def get(self, activation_id: str) -> Activation | None:
        rows = await self._fetch(
            select(t.activations).where(t.activations.c.activation_id == activation_id)
        )
        return Activation(**rows[0]._mapping) if rows else None

    async def list(self) -> list[Activation]:
        rows = await self._fetch(select(t.activations).order_by(t.activations.c.created_date))
        return [Activation(**r._mapping) for r in rows]

    async def page(
        self,
        *,
        limit: int,
        after: tuple[float, str] | None = None,
        activation_ids: Collection[str] | None = None,
        default_instance_names: Collection[str] | None = None,
        iam_roles: Collection[str] | None = None,
    ) -> Sequence[Activation]:
        """One page of activations in ``(created_date, activation_id)`` order (keyset paging,
        from an index; every filter in SQL), after the key ``after``."""
        c = t.activations.c
        stmt = select(t.activations).order_by(c.created_date, c.activation_id).limit(limit)
        if after is not None:
            stmt = stmt.where(
                or_(
                    c.created_date > after[0],
                    and_(c.created_date == after[0], c.activation_id > after[1]),
                )
            )
        for column, values in (
            (c.activation_id, activation_ids),
            (c.default_instance_name, default_instance_names),
            (c.iam_role, iam_roles),
        ):
            if values is not None:
                stmt = stmt.where(column.in_(list(values)))
        return [Activation(**r._mapping) for r in await self._fetch(stmt)]

    async def delete(self, activation_id: str) -> None:
        async with self._transaction() as conn:
            stmt = delete(t.activations).where(t.activations.c.activation_id == activation_id)
            if (await conn.execute(stmt)).rowcount == 0:
                raise InvalidActivationId(f"Activation ID {activation_id} does not exist.")
            stage(conn)  # the API call that made it is recorded with it

    async def record_failure(
        self, activation_id: str, *, lock_after: int, now: float
    ) -> float | None:
        """Count one wrong code for the activation and lock it at ``lock_after`` failures.

        One conditional ``UPDATE``, so concurrent failures (on any replica) are all counted and
        the lock is set exactly once, by whichever failure reaches the limit. Returns when the
        activation was locked (``now`` for the failure that locked it), or ``None`` while it
        is not locked (and when it does not exist).
        """
        a = t.activations.c
        stmt = (
            update(t.activations)
            .where(a.activation_id == activation_id)
            .values(
                failed_attempts=a.failed_attempts + 1,
                locked_at=case(
                    (and_(a.locked_at.is_(None), a.failed_attempts + 1 >= lock_after), now),
                    else_=a.locked_at,
                ),
            )
            .returning(a.locked_at)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else row[0]

    async def register_node(
        self,
        activation_id: str,
        node: Node,
        now: float,
        *,
        audit: Sequence[AuditEvent] = (),
        events: Sequence[Event] = (),
    ) -> bool:
        """Consume one registration of the activation and insert the node, atomically, with
        the ``audit`` records of the registration and ``events`` (written only if the node is).

        Returns False when the activation is used up, expired or locked (nothing is written).
        """
        a = t.activations.c
        claim = (
            update(t.activations)
            .where(
                and_(
                    a.activation_id == activation_id,
                    a.registrations_count < a.registration_limit,
                    a.expiration_date > now,
                    a.locked_at.is_(None),
                )
            )
            .values(registrations_count=a.registrations_count + 1)
        )
        async with self._transaction() as conn:
            if (await conn.execute(claim)).rowcount != 1:
                return False
            await conn.execute(insert(t.nodes).values(**_asdict(node)))
            stage(conn, *audit)
            written = await self._outbox.write(conn, events)
        self._outbox.committed(written)
        return True


class NodeRepository(_Repository):
    """Registered nodes: their facts, heartbeats and control-channel state."""

    def __init__(self, database: Database, outbox: Outbox | None = None) -> None:
        super().__init__(database, outbox)
        self._pending: _PendingHeartbeats | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def get(self, instance_id: str) -> Node | None:
        rows = await self._fetch(select(t.nodes).where(t.nodes.c.instance_id == instance_id))
        return Node(**rows[0]._mapping) if rows else None

    async def list(self, instance_ids: Iterable[str] | None = None) -> list[Node]:
        stmt = select(t.nodes).order_by(t.nodes.c.registration_date)
        if instance_ids is not None:
            stmt = stmt.where(t.nodes.c.instance_id.in_(list(instance_ids)))
        return [Node(**r._mapping) for r in await self._fetch(stmt)]

    async def page(
        self,
        *,
        limit: int,
        after: tuple[float, str] | None = None,
        instance_ids: Collection[str] | None = None,
        online_since: float | None = None,
        online: bool | None = None,
        tags: Sequence[tuple[str, Collection[str]]] = (),
    ) -> Sequence[Node]:
        """One page of nodes in ``(registration_date, instance_id)`` order (keyset paging).

        Every filter is SQL, and the order is an index's (migration 0015), so a page costs the
        same at any depth.

        Args:
            limit: at most this many nodes (ask one more to learn whether a page follows).
            after: the sort key of the last node of the previous page.
            instance_ids: only these nodes.
            online, online_since: only the nodes that are (``True``) or are not (``False``)
                connected with a ping at or after ``online_since``.
            tags: only the nodes whose tag ``key`` has one of the values, for each pair.
        """
        c = t.nodes.c
        stmt = select(t.nodes).order_by(c.registration_date, c.instance_id).limit(limit)
        if after is not None:
            stmt = stmt.where(
                or_(
                    c.registration_date > after[0],
                    and_(c.registration_date == after[0], c.instance_id > after[1]),
                )
            )
        if instance_ids is not None:
            stmt = stmt.where(c.instance_id.in_(list(instance_ids)))
        if online is not None:
            assert online_since is not None
            is_online = and_(
                c.connected.is_(True), c.last_ping_at.is_not(None), c.last_ping_at >= online_since
            )
            stmt = stmt.where(is_online if online else not_(is_online))
        for key, values in tags:
            if not _TAG_KEY.fullmatch(key) or not values:
                return []  # no stored tag has such a key (the model's pattern)
            stmt = stmt.where(c.tags[key].as_string().in_(list(values)))
        return [Node(**r._mapping) for r in await self._fetch(stmt)]

    async def mark_connected(
        self,
        instance_id: str,
        connected: bool,
        now: float,
        *,
        events: Sequence[Event] = (),
        replica: str = "",
    ) -> bool:
        """Record whether the node's control channel is up (held by ``replica``), with
        ``events`` in the same transaction; returns whether the row changed.

        A disconnection only applies while ``replica`` still holds the channel: a replica that
        notices late that its channel died must not undo the node's reconnection to another.
        """
        c = t.nodes.c
        stmt = update(t.nodes).where(c.instance_id == instance_id)
        values: dict[str, Any] = {"connected": connected, "replica": replica if connected else ""}
        if connected:
            values["last_ping_at"] = now
        else:
            stmt = stmt.where(c.replica == replica)
        written = 0
        async with self._transaction() as conn:
            changed = (await conn.execute(stmt.values(**values))).rowcount == 1
            if changed:
                written = await self._outbox.write(conn, events)
        self._outbox.committed(written)
        return changed

    async def disconnect_all(self, replica: str = "") -> None:
        """On server start: no control channel survives a restart of a single server."""
        await self._write(
            update(t.nodes).where(t.nodes.c.replica == replica).values(connected=False)
        )

    async def holders(self) -> set[str]:
        """The replicas that hold at least one connected node's control channel."""
        c = t.nodes.c
        rows = await self._fetch(select(c.replica).where(c.connected.is_(True)).distinct())
        return {row[0] for row in rows if row[0]}

    async def release_replica(
        self, replica: str, events_of: Callable[[str], Sequence[Event]]
    ) -> Sequence[str]:
        """A replica is gone: its nodes are no longer connected (unless they already came back
        through another). Returns those nodes, with ``events_of(node)`` written for each, in
        one transaction (one replica among those that noticed does it)."""
        c = t.nodes.c
        written = 0
        async with self._transaction() as conn:
            rows = await conn.execute(
                update(t.nodes)
                .where(c.replica == replica, c.connected.is_(True))
                .values(connected=False, replica="")
                .returning(c.instance_id)
            )
            gone = [row[0] for row in rows]
            for node_id in gone:
                written += await self._outbox.write(conn, events_of(node_id))
        self._outbox.committed(written)
        return gone

    async def heartbeat(self, instance_id: str, now: float, **facts: str) -> None:
        """Record one heartbeat: the node is connected, seen at ``now``, with these facts.

        Returns once the heartbeat is committed. Heartbeats recorded while another batch waits
        for its write turn join that batch (group commit), so a thousand nodes beating at once
        cost one or two transactions, not a thousand turns at SQLite's single write lock, and
        heartbeats never take more than two places in the write queue. A caller that is
        cancelled leaves the batch to be written for the others. A node deregistered meanwhile
        is left alone (no error).

        Args:
            facts: node columns the agent reports (``computer_name``, ``platform_type``,
                ``platform_name``, ``platform_version``, ``ip_address``, ``agent_version``).

        Raises:
            StoreError: the batch's transaction failed (every caller in it gets one).
        """
        unknown = set(facts).difference(_HEARTBEAT_FACTS)
        if unknown:
            raise TypeError(f"not a heartbeat fact: {', '.join(sorted(unknown))}")
        pending = self._pending
        if pending is None:
            pending = self._pending = _PendingHeartbeats(asyncio.get_running_loop().create_future())
            flush = asyncio.create_task(self._flush(pending))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        _keep_latest(pending.beats, instance_id, now, facts)
        try:
            await asyncio.shield(pending.done)
        except StoreError as exc:  # one exception object per caller, not one shared by all
            raise StoreError(exc.message) from exc

    async def _flush(self, pending: _PendingHeartbeats) -> None:
        try:
            async with self._transaction() as conn:
                # Our turn: heartbeats from now on wait for the next batch.
                if self._pending is pending:
                    self._pending = None
                await _record_heartbeats(conn, pending.beats)
        except Exception as exc:
            pending.done.set_exception(exc)
        except BaseException:
            pending.done.cancel()
            raise
        else:
            pending.done.set_result(None)
        finally:
            if self._pending is pending:
                self._pending = None

    async def heartbeats(self, batch: Iterable[Heartbeat]) -> None:
        """Record many nodes' heartbeats in one transaction, for callers that batch themselves.

        When a node appears more than once its latest heartbeat wins; nodes deregistered
        meanwhile are skipped.

        Raises:
            StoreError: the transaction failed (nothing was written).
        """
        beats: _Beats = {}
        for beat in batch:
            facts = {name: getattr(beat, name) for name in _HEARTBEAT_FACTS}
            _keep_latest(beats, beat.instance_id, beat.at, facts)
        if beats:
            async with self._transaction() as conn:
                await _record_heartbeats(conn, beats)

    async def record_presence(
        self,
        changed: Sequence[Heartbeat],
        pings: Sequence[tuple[str, float]],
        *,
        replica: str = "",
    ) -> None:
        """Write a batch of presence (``server.presence``) in one transaction: the whole
        heartbeat of the ``changed`` nodes, only the ping time of the ``pings``; each node is
        marked connected, its channel held by ``replica`` (scale-out). At most two
        ``executemany`` statements, whatever the batch's size.

        Raises:
            StoreError: the transaction failed (nothing was written).
        """
        beats: _Beats = {}
        for beat in changed:
            facts = {name: getattr(beat, name) for name in _HEARTBEAT_FACTS}
            _keep_latest(beats, beat.instance_id, beat.at, facts)
        for instance_id, at in pings:
            _keep_latest(beats, instance_id, at, {})
        if beats:
            async with self._transaction() as conn:
                await _record_heartbeats(conn, beats, replica)

    async def settle(self) -> None:
        """Wait for heartbeat batches already under way (before the database is closed)."""
        await asyncio.gather(*self._flushes, return_exceptions=True)

    async def delete(self, instance_id: str, *, audit: Sequence[AuditEvent] = ()) -> None:
        """Delete the node, with the ``audit`` records of its deregistration."""
        async with self._transaction() as conn:
            stmt = delete(t.nodes).where(t.nodes.c.instance_id == instance_id)
            if (await conn.execute(stmt)).rowcount == 0:
                raise InvalidInstanceId(f"Instance {instance_id} does not exist.")
            stage(conn, *audit)

    async def update_tags(
        self,
        instance_id: str,
        add: Mapping[str, str],
        remove: Collection[str],
        *,
        limit: int = MAX_NODE_TAGS,
    ) -> dict[str, str]:
        """Remove the keys ``remove``, then set ``add``; returns the node's tags after.

        Bumps the IAM generation (policies may test node tags), in the same transaction.

        Raises:
            InvalidInstanceId: no such node.
            TooManyTags: the node would have more than ``limit`` tags (nothing changes).
        """
        async with self._change() as conn:
            row = (
                await conn.execute(
                    select(t.nodes.c.tags).where(t.nodes.c.instance_id == instance_id)
                )
            ).first()
            if row is None:
                raise InvalidInstanceId(f"Instance {instance_id} does not exist.")
            tags = {k: v for k, v in dict(row[0] or {}).items() if k not in remove}
            tags.update(add)
            if len(tags) > limit:
                raise TooManyTags(f"A resource can have at most {limit} tags.")
            await conn.execute(
                update(t.nodes).where(t.nodes.c.instance_id == instance_id).values(tags=tags)
            )
        return tags

    async def claim_generation(self, instance_id: str, generation: int) -> bool:
        """Record that agent ``generation`` connects, unless a higher one already did.

        One conditional ``UPDATE``, so two replicas cannot both let the older agent in.
        """
        c = t.nodes.c
        count = await self._write(
            update(t.nodes)
            .where(and_(c.instance_id == instance_id, c.agent_generation <= generation))
            .values(agent_generation=generation)
        )
        return count == 1


class NonceRepository(_Repository):
    """Agent nonces already used, kept until they expire (replay protection)."""

    async def use(self, digest: str, node_id: str, expires_at: float) -> bool:
        """Remember a nonce; False if it was used before (a replay)."""
        try:
            await self._write(
                insert(t.used_nonces).values(digest=digest, node_id=node_id, expires_at=expires_at)
            )
        except Conflict:
            return False
        return True

    async def purge(self, now: float) -> int:
        """Forget nonces that expired before ``now``; returns how many."""
        return await self._write(delete(t.used_nonces).where(t.used_nonces.c.expires_at < now))


class SessionRepository(_Repository):
    async def create(
        self,
        session: Session,
        token_hash: str,
        now: float,
        *,
        audit: Sequence[AuditEvent] = (),
        events: Sequence[Event] = (),
    ) -> None:
        """Insert the session and its first client token in one transaction, with the
        ``audit`` records of its start and ``events``."""
        values = _asdict(session)
        values["status"] = session.status.value
        async with self._transaction() as conn:
            await conn.execute(insert(t.sessions).values(**values))
            await conn.execute(
                insert(t.session_tokens).values(
                    token_hash=token_hash, session_id=session.session_id, created_at=now
                )
            )
            stage(conn, *audit)
            written = await self._outbox.write(conn, events)
        self._outbox.committed(written)

    async def get(self, session_id: str) -> Session | None:
        rows = await self._fetch(select(t.sessions).where(t.sessions.c.session_id == session_id))
        return _session(rows[0]) if rows else None

    async def describe(
        self,
        *,
        active: bool,
        target: str | None = None,
        owner: str | None = None,
        session_id: str | None = None,
        status: str | None = None,
        invoked_after: float | None = None,
        invoked_before: float | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[Session]:
        c = t.sessions.c
        stmt = select(t.sessions).where(
            c.status.in_(ACTIVE_STATUSES if active else HISTORY_STATUSES)
        )
        for col, value in (
            (c.target, target),
            (c.owner, owner),
            (c.session_id, session_id),
            (c.status, status),
        ):
            if value is not None:
                stmt = stmt.where(col == value)
        if invoked_after is not None:
            stmt = stmt.where(c.start_date >= invoked_after)
        if invoked_before is not None:
            stmt = stmt.where(c.start_date <= invoked_before)
        stmt = stmt.order_by(c.start_date.desc(), c.session_id).limit(limit).offset(offset)
        return [_session(r) for r in await self._fetch(stmt)]

    async def set_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        now: float,
        only_if: Sequence[SessionStatus] | None = None,
        exit_code: int | None = None,
        details: str | None = None,
        events: Sequence[Event] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Move the session to ``status`` (with an end date when it ends).

        ``only_if`` makes the change conditional on the current status; returns whether a row
        changed. Ending a session also revokes its tokens, in the same transaction; the
        ``audit`` records and ``events`` are written with the change, only if there is one.
        """
        c = t.sessions.c
        stmt = update(t.sessions).where(c.session_id == session_id)
        allowed = [s.value for s in (only_if or ())]
        if only_if is not None:
            stmt = stmt.where(c.status.in_(allowed))
        values: dict[str, Any] = {"status": status.value}
        if not status.is_active:
            values["end_date"] = now
        if exit_code is not None:
            values["exit_code"] = exit_code
        if details is not None:
            values["details"] = details
        written = 0
        async with self._transaction() as conn:
            changed = (await conn.execute(stmt.values(**values))).rowcount == 1
            if changed and not status.is_active:
                await self._revoke(conn, session_id)
            if changed:
                stage(conn, *audit)
                written = await self._outbox.write(conn, events)
        self._outbox.committed(written)
        return changed

    async def mark_disconnected(self, session_ids: Sequence[str]) -> int:
        """``Connected`` → ``Disconnected`` for these sessions, in a few statements (a restart
        or a take-over: their ends must come back); how many changed."""
        c = t.sessions.c
        changed = 0
        for start in range(0, len(session_ids), 500):
            changed += await self._write(
                update(t.sessions)
                .where(
                    c.session_id.in_(list(session_ids[start : start + 500])),
                    c.status == SessionStatus.CONNECTED.value,
                )
                .values(status=SessionStatus.DISCONNECTED.value)
            )
        return changed

    async def add_bytes(self, session_id: str, bytes_in: int, bytes_out: int) -> None:
        c = t.sessions.c
        await self._write(
            update(t.sessions)
            .where(c.session_id == session_id)
            .values(bytes_in=c.bytes_in + bytes_in, bytes_out=c.bytes_out + bytes_out)
        )

    async def active_on(self, target: str) -> list[Session]:
        return await self.describe(active=True, target=target, limit=10_000)

    # --- scale-out: which replica relays a session -----------------------------------------

    async def claim_relay(self, session_id: str, replica: str, expected: str) -> bool:
        """Make ``replica`` the relay of an active session whose relay is still ``expected``
        (compare-and-set: of replicas that race, one wins)."""
        c = t.sessions.c
        return (
            await self._write(
                update(t.sessions)
                .where(c.session_id == session_id, c.relay == expected, c.status.in_(_ACTIVE))
                .values(relay=replica)
            )
            == 1
        )

    async def take_over(self, gone: str, replica: str) -> list[Session]:
        """Make ``replica`` the relay of every active session ``gone`` relayed; returns them."""
        c = t.sessions.c
        async with self._transaction() as conn:
            rows = await conn.execute(
                update(t.sessions)
                .where(c.relay == gone, c.status.in_(_ACTIVE))
                .values(relay=replica)
                .returning(*t.sessions.c)
            )
            return [_session(row) for row in rows]

    async def relays(self) -> set[str]:
        """The replicas that relay at least one active session."""
        c = t.sessions.c
        rows = await self._fetch(select(c.relay).where(c.status.in_(_ACTIVE)).distinct())
        return {row[0] for row in rows}

    async def relayed_elsewhere(self, session_ids: Collection[str], replica: str) -> list[str]:
        """Of ``session_ids``, those whose relay is no longer ``replica`` (or that ended)."""
        if not session_ids:
            return []
        c = t.sessions.c
        rows = await self._fetch(
            select(c.session_id).where(
                c.session_id.in_(list(session_ids)), c.relay == replica, c.status.in_(_ACTIVE)
            )
        )
        kept = {row[0] for row in rows}
        return [sid for sid in session_ids if sid not in kept]

    # --- connections of port sessions -------------------------------------------------------

    async def add_connections(self, session_id: str, records: Sequence[SessionConnection]) -> int:
        """Store connection records of a session, up to :data:`MAX_CONNECTIONS_PER_SESSION`
        in all; returns how many were stored (0 when the session has no room left)."""
        c = t.session_connections.c
        async with self._transaction() as conn:
            have = (
                await conn.execute(
                    select(func.count())
                    .select_from(t.session_connections)
                    .where(c.session_id == session_id)
                )
            ).scalar_one()
            room = max(0, MAX_CONNECTIONS_PER_SESSION - have)
            rows = [{"session_id": session_id, **_asdict(r)} for r in list(records)[:room]]
            if rows:
                await conn.execute(insert(t.session_connections), rows)
            return len(rows)

    async def connections(self, session_id: str) -> list[SessionConnection]:
        c = t.session_connections.c
        rows = await self._fetch(
            select(c.destination, c.opened_at, c.closed_at, c.bytes_in, c.bytes_out, c.error)
            .where(c.session_id == session_id)
            .order_by(c.opened_at, c.id)
        )
        return [SessionConnection(*r) for r in rows]

    # --- client tokens -------------------------------------------------------------------

    async def token(self, token_hash: str) -> SessionToken | None:
        rows = await self._fetch(
            select(t.session_tokens).where(t.session_tokens.c.token_hash == token_hash)
        )
        return SessionToken(**rows[0]._mapping) if rows else None

    async def mark_token_used(self, token_hash: str, now: float) -> None:
        c = t.session_tokens.c
        await self._write(
            update(t.session_tokens)
            .where(and_(c.token_hash == token_hash, c.first_used_at.is_(None)))
            .values(first_used_at=now)
        )

    async def replace_tokens(self, session_id: str, token_hash: str, now: float) -> None:
        """Revoke every token of the session and add a new one (ResumeSession)."""
        async with self._transaction() as conn:
            await self._revoke(conn, session_id)
            await conn.execute(
                insert(t.session_tokens).values(
                    token_hash=token_hash, session_id=session_id, created_at=now
                )
            )

    @staticmethod
    async def _revoke(conn: AsyncConnection, session_id: str) -> None:
        await conn.execute(
            update(t.session_tokens)
            .where(t.session_tokens.c.session_id == session_id)
            .values(revoked=True)
        )


#: Tag keys a filter can match: a JSON path can quote them (no ``"``, ``\\`` or control
#: characters; the model's ``TagKey`` pattern allows none of these in a stored tag either).
_TAG_KEY = re.compile(r'[^"\\\x00-\x1f\x7f]{1,128}')

_HEARTBEAT_FACTS = tuple(n for n in Heartbeat.__slots__ if n not in ("instance_id", "at"))


_Beats = dict[str, tuple[float, dict[str, str]]]  # instance id → (when, facts)


def _keep_latest(beats: _Beats, instance_id: str, at: float, facts: dict[str, str]) -> None:
    seen = beats.get(instance_id)
    if seen is None or at >= seen[0]:
        beats[instance_id] = (at, facts)


@dataclass(slots=True)
class _PendingHeartbeats:
    """Heartbeats waiting for one transaction, and the future their callers await."""

    done: asyncio.Future[None]
    beats: _Beats = field(default_factory=dict)


async def _record_heartbeats(
    conn: AsyncConnection, beats: _Beats, replica: str | None = None
) -> None:
    """One ``executemany`` per set of reported facts (in practice: one).

    Rows go in ``instance_id`` order, so that concurrent batches (several replicas on
    PostgreSQL) lock rows in the same order and cannot deadlock.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for instance_id, (at, facts) in sorted(beats.items()):
        row = {"b_instance_id": instance_id, "b_at": at}
        row.update({f"b_{name}": value for name, value in facts.items()})
        groups.setdefault(tuple(sorted(facts)), []).append(row)
    for names, rows in groups.items():
        stmt = (
            update(t.nodes)
            .where(t.nodes.c.instance_id == bindparam("b_instance_id"))
            .values(
                connected=True,
                last_ping_at=bindparam("b_at"),
                **({} if replica is None else {"replica": replica}),
                **{name: bindparam(f"b_{name}") for name in names},
            )
        )
        await conn.execute(stmt, rows)


_ACTIVE = [s.value for s in SessionStatus if s.is_active]


def _session(row: Any) -> Session:
    m = dict(row._mapping)
    m["status"] = SessionStatus(m["status"])
    return Session(**m)


def _asdict(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}
