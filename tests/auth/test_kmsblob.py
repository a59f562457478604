"""The key service's ciphertext blobs: self-describing, bound to key and encryption context."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.auth.kmsblob import (
    BLOB_VERSION,
    canonical_context,
    key_id_of,
    new_key_material,
    open_blob,
    seal,
)
from hatchway.errors import InvalidCiphertext

KEY_ID = "6f1c2e0a-8a3b-4c1d-9e2f-0123456789ab"
MATERIAL = bytes(range(32))
CTX = {"aws:ssm:SessionId": "alice-0123456789abcdef0"}


def test_the_blob_names_its_key_and_version() -> None:
    blob = seal(MATERIAL, KEY_ID, b"secret", CTX)
    assert blob[0] == BLOB_VERSION
    assert blob[1:17] == uuid.UUID(KEY_ID).bytes
    assert len(blob) == 1 + 16 + 12 + len(b"secret") + 16
    assert key_id_of(blob) == KEY_ID
    assert b"secret" not in blob


def test_round_trip_and_fresh_nonces() -> None:
    one, two = seal(MATERIAL, KEY_ID, b"x", CTX), seal(MATERIAL, KEY_ID, b"x", CTX)
    assert one != two
    assert open_blob(MATERIAL, one, CTX) == open_blob(MATERIAL, two, CTX) == b"x"


@pytest.mark.parametrize("context", [None, {}, {"aws:ssm:SessionId": "bob"}, {**CTX, "more": "x"}])
def test_another_context_fails(context: dict[str, str] | None) -> None:
    blob = seal(MATERIAL, KEY_ID, b"secret", CTX)
    with pytest.raises(InvalidCiphertext, match="encryption context"):
        open_blob(MATERIAL, blob, context)


def test_context_order_does_not_matter() -> None:
    a = {"b": "2", "a": "1"}
    blob = seal(MATERIAL, KEY_ID, b"s", a)
    assert open_blob(MATERIAL, blob, {"a": "1", "b": "2"}) == b"s"
    assert canonical_context(a) == b'{"a":"1","b":"2"}'
    assert canonical_context(None) == canonical_context({}) == b"{}"


def test_another_key_or_a_swapped_key_id_fails() -> None:
    blob = seal(MATERIAL, KEY_ID, b"secret", CTX)
    with pytest.raises(InvalidCiphertext):
        open_blob(new_key_material(), blob, CTX)
    swapped = blob[:1] + uuid.uuid4().bytes + blob[17:]
    with pytest.raises(InvalidCiphertext):
        open_blob(MATERIAL, swapped, CTX)


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_fails(position: int, bit: int) -> None:
    blob = bytearray(seal(MATERIAL, KEY_ID, b"some secret bytes", CTX))
    blob[position % len(blob)] ^= 1 << bit
    with pytest.raises(InvalidCiphertext):
        open_blob(MATERIAL, bytes(blob), CTX)


@pytest.mark.parametrize("blob", [b"", b"\x01" * 44, b"\x02" + b"\x00" * 60])
def test_malformed_blobs_are_refused_before_decryption(blob: bytes) -> None:
    with pytest.raises(InvalidCiphertext):
        key_id_of(blob)
