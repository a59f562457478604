"""The server's master key, encryption of secrets at rest, and new access keys.

SigV4 needs the plain secret of an access key to verify a signature, so secrets cannot be
stored as one-way hashes. They are encrypted instead with AES-256-GCM under a
master key kept outside the database (``DIR/master.key`` or ``--master-key-file``): a
copy of the database alone reveals nothing.

Ciphertexts are self-describing text, ``v1:`` + base64(nonce ‖ ciphertext ‖ tag), so the format
can evolve. Each one can be bound to a *context* (for example the access key id) given as
associated data: a ciphertext copied onto another row then fails to decrypt instead of
silently granting that row's holder someone else's secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
import string
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hatchway.auth.atomicfile import create_exclusive
from hatchway.errors import ConfigError, CorruptData

__all__ = [
    "ACCESS_KEY_ID_PREFIX",
    "MASTER_KEY_BYTES",
    "SecretBox",
    "load_or_create_master_key",
    "new_access_key_id",
    "new_secret_access_key",
]

logger = logging.getLogger(__name__)

MASTER_KEY_BYTES = 32
"""AES-256."""

ACCESS_KEY_ID_PREFIX = "HWAK"
"""Hatchway access key ids: ``HWAK`` + 16 upper-case alphanumerics (docs/design.md,
"Identity, tokens and secrets")."""

_VERSION_PREFIX = "v1:"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits
# AWS secret access keys are 40 characters of base64's alphabet; ours look the same so that
# tools that sanity-check them accept them. 40 * 6 = 240 random bits.
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def load_or_create_master_key(path: Path) -> bytes:
    """Return the 32-byte master key in ``path``, creating it (mode 0600) if it is absent.

    Creation is atomic and exclusive: if several replicas start at once on a shared directory,
    exactly one key wins and every process reads that one.

    Raises:
        ConfigError: the file exists but cannot be read or is not exactly 32 bytes, or it
            cannot be created.
    """
    try:
        return _read_master_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = create_exclusive(path, secrets.token_bytes(MASTER_KEY_BYTES), mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create the master key {path}: {exc.strerror or exc}") from exc
    if created:
        logger.info("created a new master key at %s", path)
    # Read back even if we created it, so every process returns exactly what is on disk.
    try:
        return _read_master_key(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"master key {path} vanished while it was being created") from exc


def _read_master_key(path: Path) -> bytes:
    """Read and check an existing master key; ``FileNotFoundError`` passes through."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MASTER_KEY_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read the master key {path}: {exc.strerror or exc}") from exc
    if len(data) != MASTER_KEY_BYTES:
        raise ConfigError(
            f"master key {path} must be exactly {MASTER_KEY_BYTES} bytes "
            f"(found {'more' if len(data) > MASTER_KEY_BYTES else len(data)})"
        )
    if stat.S_IMODE(mode) & 0o077:
        logger.warning(
            "master key %s is accessible by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return data


class SecretBox:
    """Authenticated encryption of small secrets (AES-256-GCM, random 96-bit nonces).

    Random nonces are safe here: the number of secrets encrypted under one key stays many
    orders of magnitude below the 2**32 messages at which GCM nonce collisions become a risk.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        """Create a box for ``key``.

        Raises:
            ConfigError: ``key`` is not 32 bytes.
        """
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError(f"master key must be {MASTER_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plaintext: bytes, *, context: bytes = b"") -> str:
        """Encrypt ``plaintext``, bound to ``context``; return ``v1:`` + base64 text."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, context)
        return _VERSION_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str, *, context: bytes = b"") -> bytes:
        """Decrypt a value made by :meth:`encrypt` with the same ``context``.

        Raises:
            CorruptData: not something :meth:`encrypt` produces (unknown version, bad base64,
                too short), or authentication failed (the data was changed, the context
                differs, or it was encrypted under another master key). Either way it is a
                server-side fault, never the caller's: a logged 500 at the API edge.
        """
        if not token.startswith(_VERSION_PREFIX):
            raise CorruptData("encrypted secret has an unknown format (expected 'v1:')")
        try:
            raw = base64.b64decode(token[len(_VERSION_PREFIX) :], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptData("encrypted secret is not valid base64") from exc
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise CorruptData("encrypted secret is too short")
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise CorruptData(
                "encrypted secret failed authentication: it was altered, belongs to another "
                "record, or was encrypted with a different master key"
            ) from exc


def new_access_key_id() -> str:
    """Return a new access key id: ``HWAK`` + 16 upper-case letters and digits (~82 bits)."""
    return ACCESS_KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))


def new_secret_access_key() -> str:
    """Return a new 40-character secret access key (AWS's length and alphabet, 240 bits)."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
