"""The key service's ciphertext blobs: what Encrypt and GenerateDataKey hand out, Decrypt takes.

A blob is self-describing, so Decrypt finds its key without being told (as in AWS KMS)::

    version (1 byte, 0x01) | key id (16 bytes, the key's UUID) | nonce (12) | ciphertext | tag (16)

AES-256-GCM under the KMS key's 32-byte material. The associated data is a domain label, the
blob's first 17 bytes (so the key id cannot be swapped) and the *encryption context* in
canonical JSON (:func:`canonical_context`: keys sorted, no spaces, UTF-8): decrypting with a
different context, or none where one was given, fails like any altered blob.

Nothing here stores or looks up keys (``server.kms`` does); this is only the format.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hatchway.errors import InvalidCiphertext

__all__ = [
    "BLOB_VERSION",
    "KEY_MATERIAL_BYTES",
    "canonical_context",
    "key_id_of",
    "new_key_material",
    "open_blob",
    "seal",
]

BLOB_VERSION: Final = 1
KEY_MATERIAL_BYTES: Final = 32
"""AES-256 key material of a KMS key (and of the data keys recordings use)."""
_NONCE: Final = 12
_TAG: Final = 16
_HEAD: Final = 1 + 16
_LABEL: Final = b"hatchway-kms-blob-v1\x00"


def new_key_material() -> bytes:
    """32 random bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_MATERIAL_BYTES)


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """The encryption context as the bytes authenticated with the blob (``{}`` when none)."""
    return json.dumps(
        dict(context or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def seal(
    material: bytes, key_id: str, plaintext: bytes, context: Mapping[str, str] | None
) -> bytes:
    """Encrypt ``plaintext`` under ``material`` (the key ``key_id``, a UUID), bound to
    ``context``."""
    head = bytes([BLOB_VERSION]) + uuid.UUID(key_id).bytes
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(material).encrypt(nonce, plaintext, _aad(head, context))
    return head + nonce + sealed


def key_id_of(blob: bytes) -> str:
    """The id of the key that sealed ``blob`` (read from its head; nothing is verified yet).

    Raises:
        InvalidCiphertext: too short, or an unknown version.
    """
    if len(blob) < _HEAD + _NONCE + _TAG:
        raise InvalidCiphertext("The ciphertext is not a valid ciphertext of this key service.")
    if blob[0] != BLOB_VERSION:
        raise InvalidCiphertext(f"The ciphertext has an unknown format version ({blob[0]}).")
    return str(uuid.UUID(bytes=bytes(blob[1:_HEAD])))


def open_blob(material: bytes, blob: bytes, context: Mapping[str, str] | None) -> bytes:
    """Decrypt ``blob`` (made by :func:`seal` with the same key and ``context``).

    Raises:
        InvalidCiphertext: malformed, altered, sealed by another key, or another context.
    """
    key_id_of(blob)
    head, nonce, sealed = blob[:_HEAD], blob[_HEAD : _HEAD + _NONCE], blob[_HEAD + _NONCE :]
    try:
        return AESGCM(material).decrypt(nonce, sealed, _aad(head, context))
    except InvalidTag as exc:
        raise InvalidCiphertext(
            "The ciphertext failed authentication: it was altered, or the encryption context "
            "differs from the one it was encrypted with."
        ) from exc


def _aad(head: bytes, context: Mapping[str, str] | None) -> bytes:
    return _LABEL + head + canonical_context(context)
