"""Envelope encryption of recordings through the recordings service, over a real store, key
service and authorizer: sealed on disk, read back decrypted for callers allowed kms:Decrypt."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from hatchway.auth.secretbox import SecretBox
from hatchway.auth.tokens import hash_token, new_token
from hatchway.errors import (
    AccessDenied,
    InvalidCiphertext,
    InvalidNextToken,
    KeyDisabled,
    KeyInvalidState,
)
from hatchway.protocol.asciicast import parse_event
from hatchway.protocol.frames import peek_header
from hatchway.server.authz import Arns, Authorizer
from hatchway.server.iam import IamService
from hatchway.server.kms import KmsService
from hatchway.server.principal import Principal
from hatchway.server.recordingkeys import RecordingKeys
from hatchway.server.recordings import RecordingService
from hatchway.server.recordingstorage import Destination, RecordingStorages
from hatchway.server.settings import ServerSettings
from hatchway.store.database import sqlite_url
from hatchway.store.recordings import RecordingState, Storage
from hatchway.store.store import Store
from tests.fakes import session_record
from tests.server.test_gateway import output_frame

SID = "alice-0123456789abcdef0"
ACCOUNT = "123456789012"
pytestmark = pytest.mark.asyncio


@dataclass
class World:
    svc: RecordingService
    store: Store
    kms: KmsService
    key_arn: str
    reader: Principal
    stranger: Principal
    settings: ServerSettings


async def _user(iam: IamService, store: Store, name: str, statements: list[dict]) -> Principal:
    admin = Principal("AIDAADMIN", "admin", ACCOUNT, "")
    await iam.create_user(admin, {"UserName": name})
    if statements:
        document = json.dumps({"Version": "2012-10-17", "Statement": statements})
        await iam.put_user_policy(
            admin, {"UserName": name, "PolicyName": "p", "PolicyDocument": document}
        )
    user = next(u for u in await store.identity.users() if u.name == name)
    return Principal(user.user_id, name, ACCOUNT, "")


async def build(tmp_path: Path, key_ref: str | None = "alias/recordings") -> World:
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    box = SecretBox(bytes(32))
    clock = lambda: 1_700_000_000.0  # noqa: E731
    kms = KmsService(store.kms, box, "local", ACCOUNT, clock)
    admin = Principal("AIDAADMIN", "admin", ACCOUNT, "")
    key = (await kms.create_key(admin, {}))["KeyMetadata"]
    await kms.create_alias(admin, {"AliasName": "alias/recordings", "TargetKeyId": key["KeyId"]})
    authz = Authorizer(store, Arns("local", ACCOUNT), clock)
    iam = IamService(store, box, ACCOUNT, clock, region="local")
    reader = await _user(
        iam, store, "reader", [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key["Arn"]}]
    )
    stranger = await _user(iam, store, "stranger", [])
    settings = ServerSettings(data_dir=tmp_path, recordings_kms_key=key_ref)
    storages = RecordingStorages(settings.recordings_dir, Destination(Storage.LOCAL))
    svc = RecordingService(
        store,
        settings,
        clock,
        storages,
        flush_interval=0.05,
        keys=RecordingKeys(kms, authz, key_ref),
    )
    await store.sessions.create(
        session_record(SID, "mi-0123456789abcdef0"), hash_token(new_token()), 0
    )
    return World(svc, store, kms, key["Arn"], reader, stranger, settings)


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await build(tmp_path)
    w.svc.start()
    try:
        yield w
    finally:
        await w.svc.stop()
        await w.store.close()


def fill(rec: object, first: int, n: int) -> None:
    for seq in range(first, first + n):
        data = output_frame(seq, f"secret {seq:05d}\r\n".encode())
        rec.feed(False, peek_header(data), data)  # type: ignore[attr-defined]


async def read_all(svc: RecordingService, who: Principal, max_bytes: int = 1 << 20) -> bytes:
    out, token = b"", None
    while True:
        body: dict[str, object] = {"SessionId": SID, "MaxBytes": max_bytes}
        if token:
            body["NextToken"] = token
        page = await svc.get_recording(body, who)
        out += base64.b64decode(page["Data"])
        token = page.get("NextToken")
        if not token:
            return out


async def test_the_file_is_sealed_and_readers_get_the_asciicast(world: World) -> None:
    rec = await world.svc.begin(SID, "Standard_Stream")
    assert rec is not None
    fill(rec, 0, 3000)
    row = await world.store.recordings.get(SID)
    assert row is not None and row.kms_key_arn == world.key_arn and row.wrapped_key
    live = await read_all(world.svc, world.reader)  # while it records: flushed first
    assert live.count(b"\n") == 3001
    await world.svc.finish(SID)
    on_disk = Path(row.spool_path).read_bytes()
    assert b"secret" not in on_disk and on_disk.startswith(b"HWREC1 ")
    for page_size in (1 << 20, 1000):
        plain = await read_all(world.svc, world.reader, page_size)
        lines = plain.splitlines()
        assert json.loads(lines[0])["version"] == 2
        texts = [parse_event(line).data for line in lines[1:] if line.startswith(b"[")]
        assert "".join(texts) == "".join(f"secret {n:05d}\r\n" for n in range(3000))
    summary = await world.svc.summary(SID)
    assert summary is not None and summary["KmsKeyId"] == world.key_arn


async def test_a_caller_without_kms_decrypt_is_refused(world: World) -> None:
    rec = await world.svc.begin(SID, "Standard_Stream")
    fill(rec, 0, 5)
    await world.svc.finish(SID)
    with pytest.raises(AccessDenied, match="kms:Decrypt") as caught:
        await world.svc.get_recording({"SessionId": SID}, world.stranger)
    assert world.key_arn in caught.value.message
    with pytest.raises(AccessDenied, match="kms:Decrypt"):
        await world.svc.get_recording({"SessionId": SID})


async def test_a_disabled_or_doomed_key_is_a_clear_error(world: World) -> None:
    rec = await world.svc.begin(SID, "Standard_Stream")
    fill(rec, 0, 5)
    await world.svc.finish(SID)
    admin = Principal("AIDAADMIN", "admin", ACCOUNT, "")
    await world.kms.disable_key(admin, {"KeyId": world.key_arn})
    with pytest.raises(KeyDisabled, match="disabled: enable the key to read it"):
        await world.svc.get_recording({"SessionId": SID}, world.reader)
    await world.kms.schedule_key_deletion(admin, {"KeyId": world.key_arn})
    with pytest.raises(KeyInvalidState, match="pending deletion"):
        await world.svc.get_recording({"SessionId": SID}, world.reader)
    await world.kms.cancel_key_deletion(admin, {"KeyId": world.key_arn})
    await world.kms.enable_key(admin, {"KeyId": world.key_arn})
    assert b"secret 00004" in await read_all(world.svc, world.reader)


async def test_forged_tokens_and_cut_recordings_are_refused(world: World) -> None:
    rec = await world.svc.begin(SID, "Standard_Stream")
    fill(rec, 0, 3000)
    await world.svc.finish(SID)
    page = await world.svc.get_recording({"SessionId": SID, "MaxBytes": 1000}, world.reader)
    offset, index, mac = page["NextToken"].split(".")
    for bad in (f"{offset}.{int(index) + 1}.{mac}", f"{int(offset) + 1}.{index}.{mac}", "12"):
        with pytest.raises(InvalidNextToken):
            await world.svc.get_recording({"SessionId": SID, "NextToken": bad}, world.reader)
    row = await world.store.recordings.get(SID)
    assert row is not None
    path = Path(row.spool_path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # the final chunk is cut
    with pytest.raises(InvalidCiphertext, match="cut short"):
        await read_all(world.svc, world.reader)
    # Cut at a chunk boundary: the final chunk is missing.
    from hatchway.auth.sealedrecording import parse_header

    _, line = parse_header(data)
    pos, ends = len(line), []
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        ends.append(pos)
    path.write_bytes(data[: ends[-2]])
    await world.store.recordings.finish(
        SID, state=RecordingState.COMPLETE, size=ends[-2], ended_at=1.0
    )
    with pytest.raises(InvalidCiphertext, match="final chunk is missing"):
        await read_all(world.svc, world.reader)
    flipped = bytearray(data)
    flipped[len(line) + 30] ^= 1
    path.write_bytes(bytes(flipped))
    await world.store.recordings.finish(
        SID, state=RecordingState.COMPLETE, size=len(data), ended_at=1.0
    )
    with pytest.raises(InvalidCiphertext, match="chunk 0"):
        await read_all(world.svc, world.reader)


async def test_a_recording_goes_on_encrypted_after_a_restart(tmp_path: Path) -> None:
    w = await build(tmp_path)
    rec = await w.svc.begin(SID, "Standard_Stream")
    fill(rec, 0, 10)
    await w.svc.stop()  # the server stops; the session goes on
    svc = RecordingService(
        w.store,
        w.settings,
        lambda: 1_700_000_000.0,
        w.svc.storages,
        keys=w.svc.keys,
    )
    attached: list[str] = []
    await svc.restore({SID}, lambda sid, _: attached.append(sid) is None)
    assert attached == [SID]
    again = svc.recorder(SID)
    assert again is not None
    fill(again, 10, 5)
    await svc.finish(SID)
    plain = await read_all(svc, w.reader)
    assert plain.count(b"secret") == 15
    await w.store.close()


async def test_an_unusable_key_leaves_the_session_unrecorded(tmp_path: Path) -> None:
    w = await build(tmp_path, key_ref="alias/nonexistent")
    assert await w.svc.begin(SID, "Standard_Stream") is None
    assert await w.store.recordings.get(SID) is None
    await w.store.close()


async def test_without_a_key_recordings_stay_plain(tmp_path: Path) -> None:
    w = await build(tmp_path, key_ref=None)
    rec = await w.svc.begin(SID, "Standard_Stream")
    fill(rec, 0, 2)
    await w.svc.finish(SID)
    row = await w.store.recordings.get(SID)
    assert row is not None and row.kms_key_arn is None
    assert b"secret 00001" in Path(row.spool_path).read_bytes()
    assert b"secret 00001" in await read_all(w.svc, w.stranger)
    await asyncio.sleep(0)
    await w.store.close()
