"""The key service's rows: KMS keys (their material encrypted under the master key) and aliases.

The repository never sees key material in the clear: ``server.kms`` encrypts it with the
master key before :meth:`KmsRepository.create_key` and decrypts it after a read. State changes
are single conditional ``UPDATE`` statements (``from_states``), so two replicas racing to
disable and schedule the deletion of one key cannot both win.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update

from hatchway.store import schema as t
from hatchway.store.repositories import _Repository

__all__ = ["KeyState", "KmsAlias", "KmsKey", "KmsRepository"]


class KeyState(StrEnum):
    """A KMS key's state (AWS's names; Hatchway has no imported or multi-Region keys)."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"


@dataclass(frozen=True, slots=True)
class KmsKey:
    """One key. ``material_encrypted`` is the master key's ``SecretBox`` text, never plain."""

    key_id: str
    arn: str
    description: str
    key_state: KeyState
    key_usage: str
    key_spec: str
    material_encrypted: str = field(repr=False)
    creation_date: float
    tags: Sequence[Mapping[str, str]] = ()
    deletion_date: float | None = None


@dataclass(frozen=True, slots=True)
class KmsAlias:
    """``alias/NAME`` → a key."""

    alias_name: str
    key_id: str
    creation_date: float
    last_updated_date: float


class KmsRepository(_Repository):
    async def create_key(self, key: KmsKey) -> None:
        values = {name: getattr(key, name) for name in key.__slots__}
        values["key_state"] = key.key_state.value
        values["tags"] = [dict(tag) for tag in key.tags]
        await self._write(insert(t.kms_keys).values(**values))

    async def get_key(self, key_id: str) -> KmsKey | None:
        rows = await self._fetch(select(t.kms_keys).where(t.kms_keys.c.key_id == key_id))
        return _key(rows[0]) if rows else None

    async def list_keys(self, *, after: str | None, limit: int) -> list[KmsKey]:
        """Keys in key id order, from the first past ``after``."""
        c = t.kms_keys.c
        stmt = select(t.kms_keys).order_by(c.key_id).limit(limit)
        if after is not None:
            stmt = stmt.where(c.key_id > after)
        return [_key(r) for r in await self._fetch(stmt)]

    async def set_state(
        self,
        key_id: str,
        state: KeyState,
        *,
        from_states: Collection[KeyState],
        deletion_date: float | None = None,
    ) -> bool:
        """Move the key to ``state`` if it is in one of ``from_states``; whether it moved."""
        c = t.kms_keys.c
        count = await self._write(
            update(t.kms_keys)
            .where(c.key_id == key_id, c.key_state.in_([s.value for s in from_states]))
            .values(key_state=state.value, deletion_date=deletion_date)
        )
        return count == 1

    async def delete_key(self, key_id: str) -> None:
        """Delete the key and its aliases (what a passed deletion date does)."""
        await self._write(
            delete(t.kms_aliases).where(t.kms_aliases.c.key_id == key_id),
            delete(t.kms_keys).where(t.kms_keys.c.key_id == key_id),
        )

    async def create_alias(self, alias: KmsAlias) -> None:
        """Raises ``Conflict`` if the alias exists (or the key does not)."""
        values = {name: getattr(alias, name) for name in alias.__slots__}
        await self._write(insert(t.kms_aliases).values(**values))

    async def get_alias(self, alias_name: str) -> KmsAlias | None:
        rows = await self._fetch(
            select(t.kms_aliases).where(t.kms_aliases.c.alias_name == alias_name)
        )
        return KmsAlias(**rows[0]._mapping) if rows else None

    async def list_aliases(
        self, *, key_id: str | None = None, after: str | None, limit: int
    ) -> list[KmsAlias]:
        """Aliases in name order (of one key, if ``key_id``), from the first past ``after``."""
        c = t.kms_aliases.c
        stmt = select(t.kms_aliases).order_by(c.alias_name).limit(limit)
        if key_id is not None:
            stmt = stmt.where(c.key_id == key_id)
        if after is not None:
            stmt = stmt.where(c.alias_name > after)
        return [KmsAlias(**r._mapping) for r in await self._fetch(stmt)]

    async def delete_alias(self, alias_name: str) -> bool:
        """Whether there was such an alias."""
        count = await self._write(
            delete(t.kms_aliases).where(t.kms_aliases.c.alias_name == alias_name)
        )
        return count == 1


def _key(row: Any) -> KmsKey:
    m = dict(row._mapping)
    m["key_state"] = KeyState(m["key_state"])
    m["tags"] = tuple(dict(tag) for tag in m["tags"] or ())
    return KmsKey(**m)
