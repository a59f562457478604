"""Live enforcement in-process: what makes it re-check, what it ends, what it survives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from hatchway.errors import StoreError
from hatchway.policy import Decision
from hatchway.server.enforcement import LiveEnforcement

ALLOW = Decision(True, "allowed", "p", "S", 0)
DENY = Decision(False, "implicitDeny", None, None, None)


@dataclass
class World:
    generation: int = 0
    allowed: dict[str, bool] = field(default_factory=dict)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    checks: int = 0
    failing: bool = False

    async def read_generation(self) -> int:
        if self.failing:
            raise StoreError("database is locked")
        return self.generation

    async def get(self, session_id: str) -> Any:
        if session_id not in self.allowed:
            return None
        return SimpleNamespace(
            session_id=session_id,
            status=SimpleNamespace(is_active=True),
            owner="arn:aws:iam::123456789012:user/dev-user",
            target="mi-0123456789abcdef0",
            document_name="SSM-SessionManagerRunShell",
        )

    async def decide(self, session: Any, *, secure: bool) -> Decision:
        self.checks += 1
        return ALLOW if self.allowed[session.session_id] else DENY

    async def revoke(self, session_id: str, reason: str) -> None:
        self.revoked.append((session_id, reason))
        del self.allowed[session_id]


def enforcement(world: World, *, full_check_every: float = 3600.0) -> LiveEnforcement:
    store = SimpleNamespace(
        identity=SimpleNamespace(generation=world.read_generation),
        sessions=SimpleNamespace(get=world.get),
    )
    authz = SimpleNamespace(session_decision=world.decide)
    sessions = SimpleNamespace(live_session_ids=lambda: list(world.allowed), revoke=world.revoke)
    return LiveEnforcement(
        store,  # type: ignore[arg-type]
        authz,  # type: ignore[arg-type]
        sessions,  # type: ignore[arg-type]
        asyncio.get_running_loop().time,
        secure=True,
        interval=0.01,
        full_check_every=full_check_every,
    )


async def until(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_a_poke_ends_the_denied_sessions_and_keeps_the_others() -> None:
    world = World(allowed={"dev-user-1": True, "dev-user-2": True})
    live = enforcement(world)
    live.start()
    try:
        await until(lambda: world.checks == 2)  # at start: the restored sessions
        await asyncio.sleep(0.05)
        assert world.checks == 2  # nothing changed since: nothing re-checked
        world.allowed["dev-user-2"] = False
        live.poke()
        await until(lambda: world.revoked)
        ((sid, reason),) = world.revoked
        assert sid == "dev-user-2"
        assert reason.startswith("access revoked: dev-user may no longer start sessions on mi-")
        assert "implicit deny" in reason
        assert "dev-user-1" in world.allowed
    finally:
        await live.stop()


@pytest.mark.asyncio
async def test_a_change_made_elsewhere_is_seen_through_the_counter() -> None:
    world = World(allowed={"dev-user-1": True})
    live = enforcement(world)
    live.start()
    try:
        await asyncio.sleep(0.05)
        world.allowed["dev-user-1"] = False
        world.generation += 1  # another replica changed a policy
        await until(lambda: world.revoked)
    finally:
        await live.stop()


@pytest.mark.asyncio
async def test_sessions_are_rechecked_from_time_to_time_without_a_change() -> None:
    world = World(allowed={"dev-user-1": True})
    live = enforcement(world, full_check_every=0.02)
    live.start()
    try:
        await until(lambda: world.checks >= 2)
    finally:
        await live.stop()


@pytest.mark.asyncio
async def test_a_failing_database_delays_the_check_and_nothing_else() -> None:
    world = World(allowed={"dev-user-1": True}, failing=True)
    live = enforcement(world)
    live.start()
    try:
        await asyncio.sleep(0.05)
        world.allowed["dev-user-1"] = False
        world.generation += 1
        await asyncio.sleep(0.05)
        assert not world.revoked
        world.failing = False
        await until(lambda: world.revoked)
    finally:
        await live.stop()
