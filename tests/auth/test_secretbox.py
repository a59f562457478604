"""Master key creation and AES-GCM encryption of secrets at rest."""

from __future__ import annotations

import base64
import multiprocessing
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from hatchway.auth.secretbox import (
    SecretBox,
    load_or_create_master_key,
    new_access_key_id,
    new_secret_access_key,
)
from hatchway.errors import ConfigError, CorruptData


def test_master_key_created_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    key = load_or_create_master_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key
    assert load_or_create_master_key(path) == key
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key"]


def test_master_key_concurrent_creation_has_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(load_or_create_master_key(path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 and len(set(results)) == 1
    assert results[0] == path.read_bytes()


def _create_in_process(path: str, barrier: Any, results: Any) -> None:
    """A replica's start: wait for the others, then load or create the key at once."""
    barrier.wait()
    results.put(load_or_create_master_key(Path(path)).hex())


def test_master_key_processes_creating_it_at_once_share_one(tmp_path: Path) -> None:
    """Replicas (processes) starting together on one shared key file: one key wins, every
    process returns it, the file is 0600 and no temporary file is left behind."""
    path = tmp_path / "shared" / "master.key"
    context = multiprocessing.get_context("spawn")  # no fork of a threaded pytest
    barrier, results = context.Barrier(6), context.Queue()
    procs = [
        context.Process(target=_create_in_process, args=(str(path), barrier, results))
        for _ in range(6)
    ]
    for proc in procs:
        proc.start()
    keys = {results.get(timeout=60) for _ in procs}
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert keys == {path.read_bytes().hex()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_master_key_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"k" * size)
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        load_or_create_master_key(path)
    assert path.read_bytes() == b"k" * size  # never overwritten


def test_master_key_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_or_create_master_key(path)


def test_master_key_in_a_non_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="master key"):
        load_or_create_master_key(blocker / "master.key")


def test_round_trip_and_format() -> None:
    box = SecretBox(bytes(range(32)))
    token = box.encrypt(b"secret", context=b"HWAK1")
    assert token.startswith("v1:")
    raw = base64.b64decode(token[3:], validate=True)
    assert len(raw) == 12 + len(b"secret") + 16
    assert box.decrypt(token, context=b"HWAK1") == b"secret"
    assert box.encrypt(b"secret", context=b"HWAK1") != token  # random nonce
    assert box.decrypt(box.encrypt(b"")) == b""


def test_tamper_wrong_context_and_wrong_key_fail() -> None:
    box = SecretBox(bytes(32))
    token = box.encrypt(b"secret", context=b"HWAK1")
    with pytest.raises(CorruptData):
        box.decrypt(token, context=b"HWAK2")
    with pytest.raises(CorruptData):
        box.decrypt(token)
    with pytest.raises(CorruptData):
        SecretBox(bytes([1]) * 32).decrypt(token, context=b"HWAK1")
    raw = bytearray(base64.b64decode(token[3:]))
    for index in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(raw)
        flipped[index] ^= 1
        with pytest.raises(CorruptData):
            box.decrypt("v1:" + base64.b64encode(bytes(flipped)).decode(), context=b"HWAK1")


@pytest.mark.parametrize("bad", ["", "v2:AAAA", "v1:not base64!", "v1:" + "A" * 36])
def test_malformed_ciphertext_is_a_server_fault(bad: str) -> None:
    with pytest.raises(CorruptData):
        SecretBox(bytes(32)).decrypt(bad)


def test_key_size_and_repr() -> None:
    with pytest.raises(ConfigError):
        SecretBox(bytes(16))
    key = bytes(range(32))
    assert key.hex() not in repr(SecretBox(key)) and "hidden" in repr(SecretBox(key))


def test_access_key_shapes() -> None:
    key_ids = {new_access_key_id() for _ in range(100)}
    assert len(key_ids) == 100
    assert all(re.fullmatch(r"HWAK[A-Z0-9]{16}", k) for k in key_ids)
    secrets_ = {new_secret_access_key() for _ in range(100)}
    assert len(secrets_) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{40}", s) for s in secrets_)
