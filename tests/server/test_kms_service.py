"""The key service over a real store with a clock of the test's: deletion dates, the server's
own data keys, and key material bound to its row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from hatchway.auth.secretbox import SecretBox
from hatchway.errors import CorruptData, KeyDisabled, KeyInvalidState, KeyNotFound
from hatchway.server.kms import KmsService
from hatchway.server.principal import Principal
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

ADMIN = Principal("AIDAADMIN", "admin", "123456789012", "")
DAY = 86400.0
pytestmark = pytest.mark.asyncio


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[KmsService, Store, Clock]]:
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    clock = Clock()
    try:
        yield (
            KmsService(store.kms, SecretBox(bytes(32)), "local", "123456789012", clock),
            store,
            clock,
        )
    finally:
        await store.close()


async def test_a_key_is_deleted_once_its_date_has_passed(env) -> None:
    kms, store, clock = env
    key = (await kms.create_key(ADMIN, {}))["KeyMetadata"]
    await kms.create_alias(ADMIN, {"AliasName": "alias/k", "TargetKeyId": key["KeyId"]})
    answer = await kms.schedule_key_deletion(
        ADMIN, {"KeyId": key["KeyId"], "PendingWindowInDays": 7}
    )
    assert answer["DeletionDate"] == clock.now + 7 * DAY
    clock.now += 7 * DAY - 1
    with pytest.raises(KeyInvalidState):
        await kms.generate_data_key("alias/k", {})
    clock.now += 1
    with pytest.raises(KeyNotFound):
        await kms.describe_key(ADMIN, {"KeyId": key["KeyId"]})
    assert await store.kms.get_key(key["KeyId"]) is None
    assert await store.kms.get_alias("alias/k") is None


async def test_the_servers_own_data_keys(env) -> None:
    kms, _, _ = env
    key = (await kms.create_key(ADMIN, {}))["KeyMetadata"]
    data_key = await kms.generate_data_key(key["KeyId"], {"aws:ssm:SessionId": "s"})
    assert len(data_key.plaintext) == 32 and data_key.key_arn == key["Arn"]
    assert data_key.plaintext.hex() not in repr(data_key)
    back = await kms.decrypt_data_key(data_key.blob, {"aws:ssm:SessionId": "s"})
    assert back == data_key.plaintext
    assert await kms.check_usable(key["Arn"]) == key["Arn"]
    await kms.disable_key(ADMIN, {"KeyId": key["KeyId"]})
    with pytest.raises(KeyDisabled):
        await kms.check_usable(key["KeyId"])
    with pytest.raises(KeyDisabled):
        await kms.decrypt_data_key(data_key.blob, {"aws:ssm:SessionId": "s"})


async def test_key_material_copied_onto_another_key_is_refused(env) -> None:
    kms, store, _ = env
    one = (await kms.create_key(ADMIN, {}))["KeyMetadata"]["KeyId"]
    two = (await kms.create_key(ADMIN, {}))["KeyMetadata"]["KeyId"]
    row_one, row_two = await store.kms.get_key(one), await store.kms.get_key(two)
    assert row_one is not None and row_two is not None
    await store.kms.delete_key(two)
    await store.kms.create_key(replace(row_two, material_encrypted=row_one.material_encrypted))
    with pytest.raises(CorruptData):
        await kms.generate_data_key(two, {})
