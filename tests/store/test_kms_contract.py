"""The key service's repository contract, on SQLite and PostgreSQL (the ``url`` fixture)."""

from __future__ import annotations

import pytest

from hatchway.errors import Conflict
from hatchway.store.kms import KeyState, KmsAlias, KmsKey
from hatchway.store.recordings import Recording, RecordingState, Storage
from hatchway.store.store import Store
from tests.fakes import session_record
from tests.store.conftest import with_store

K1 = "11111111-1111-4111-8111-111111111111"
K2 = "22222222-2222-4222-8222-222222222222"


def key(key_id: str = K1, state: KeyState = KeyState.ENABLED) -> KmsKey:
    return KmsKey(
        key_id=key_id,
        arn=f"arn:aws:kms:local:123456789012:key/{key_id}",
        description="d",
        key_state=state,
        key_usage="ENCRYPT_DECRYPT",
        key_spec="SYMMETRIC_DEFAULT",
        material_encrypted="v1:sealed",
        creation_date=1.5,
        tags=({"TagKey": "team", "TagValue": "ops"},),
    )


def test_keys_are_stored_listed_and_change_state_conditionally(url: str) -> None:
    async def body(store: Store) -> None:
        await store.kms.create_key(key(K2))
        await store.kms.create_key(key(K1))
        assert await store.kms.get_key(K1) == key(K1)
        assert await store.kms.get_key("33333333-3333-4333-8333-333333333333") is None
        with pytest.raises(Conflict):
            await store.kms.create_key(key(K1))
        assert [k.key_id for k in await store.kms.list_keys(after=None, limit=10)] == [K1, K2]
        assert [k.key_id for k in await store.kms.list_keys(after=K1, limit=10)] == [K2]
        assert [k.key_id for k in await store.kms.list_keys(after=None, limit=1)] == [K1]
        enabled = (KeyState.ENABLED,)
        assert await store.kms.set_state(K1, KeyState.DISABLED, from_states=enabled)
        assert not await store.kms.set_state(K1, KeyState.DISABLED, from_states=enabled)
        assert await store.kms.set_state(
            K1, KeyState.PENDING_DELETION, from_states=(KeyState.DISABLED,), deletion_date=99.0
        )
        row = await store.kms.get_key(K1)
        assert row is not None
        assert (row.key_state, row.deletion_date) == (KeyState.PENDING_DELETION, 99.0)

    with_store(url, body)


def test_aliases_are_unique_and_go_with_their_key(url: str) -> None:
    async def body(store: Store) -> None:
        await store.kms.create_key(key(K1))
        await store.kms.create_key(key(K2))
        await store.kms.create_alias(KmsAlias("alias/b", K1, 1.0, 1.0))
        await store.kms.create_alias(KmsAlias("alias/a", K2, 2.0, 2.0))
        await store.kms.create_alias(KmsAlias("alias/c", K1, 3.0, 3.0))
        with pytest.raises(Conflict):
            await store.kms.create_alias(KmsAlias("alias/b", K2, 4.0, 4.0))
        with pytest.raises(Conflict):  # no such key
            await store.kms.create_alias(
                KmsAlias("alias/d", "44444444-4444-4444-8444-444444444444", 4.0, 4.0)
            )
        assert await store.kms.get_alias("alias/b") == KmsAlias("alias/b", K1, 1.0, 1.0)
        names = [a.alias_name for a in await store.kms.list_aliases(after=None, limit=10)]
        assert names == ["alias/a", "alias/b", "alias/c"]
        mine = await store.kms.list_aliases(key_id=K1, after="alias/b", limit=10)
        assert [a.alias_name for a in mine] == ["alias/c"]
        assert await store.kms.delete_alias("alias/a")
        assert not await store.kms.delete_alias("alias/a")
        await store.kms.delete_key(K1)
        assert await store.kms.get_key(K1) is None
        assert await store.kms.list_aliases(after=None, limit=10) == []

    with_store(url, body)


def test_a_recording_keeps_its_wrapped_data_key(url: str) -> None:
    sid = "alice-0123456789abcdef0"

    async def body(store: Store) -> None:
        await store.sessions.create(session_record(sid, "mi-0123456789abcdef0"), sid, 0.0)
        recording = Recording(
            session_id=sid,
            storage=Storage.LOCAL,
            location="/r.cast",
            spool_path="/r.cast",
            state=RecordingState.RECORDING,
            size=0,
            started_at=1.0,
            kms_key_arn=key().arn,
            wrapped_key=bytes(range(256)),
        )
        await store.recordings.create(recording)
        assert await store.recordings.get(sid) == recording

    with_store(url, body)
