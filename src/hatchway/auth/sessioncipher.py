"""AES-256-GCM for end-to-end encrypted sessions (docs/protocol.md §7.9), as AWS's peers do it.

A session's 64-byte KMS data key is two keys: bytes 0–31 seal what the agent sends, bytes 32–63
what the client sends. :class:`SessionCipher` is one end's view: it seals with its own
direction's key and opens with the other's, so a payload can only be opened by the other end,
and a payload sent back in the wrong direction fails. Each payload is
``nonce(12) ‖ ciphertext ‖ tag(16)`` with a fresh random nonce and no associated data (AWS's
layout; its peers would not open anything else). Frames are already sequenced and acknowledged
end to end, so a replayed or reordered payload is the reliability layer's business.

This is the implementation of ``hatchway.protocol.encryption.PayloadCipher`` (the protocol
package cannot import ``cryptography``).
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hatchway.errors import PayloadAuthenticationError, ValidationError

__all__ = ["NONCE_SIZE", "OVERHEAD", "TAG_SIZE", "SessionCipher", "Side"]

DATA_KEY_BYTES: Final = 64
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
OVERHEAD: Final = NONCE_SIZE + TAG_SIZE


class Side(Enum):
    """Which end of the session a cipher belongs to."""

    AGENT = "agent"
    CLIENT = "client"


class SessionCipher:
    """One end's sealing and opening keys of a session (see the module docstring).

    Args:
        data_key: the session's 64-byte data key (GenerateDataKey's plaintext).
        side: whose end this is.

    Raises:
        ValidationError: the data key is not 64 bytes.
    """

    __slots__ = ("_open", "_seal", "side")

    def __init__(self, data_key: bytes, side: Side) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValidationError(
                f"a session data key has {DATA_KEY_BYTES} bytes, not {len(data_key)}"
            )
        agent_key, client_key = data_key[:32], data_key[32:]
        mine, theirs = (agent_key, client_key) if side is Side.AGENT else (client_key, agent_key)
        self._seal = AESGCM(mine)
        self._open = AESGCM(theirs)
        self.side = side

    def __repr__(self) -> str:
        return f"SessionCipher(<keys hidden>, side={self.side.value})"

    def seal(self, plaintext: bytes) -> bytes:
        """``nonce ‖ ciphertext ‖ tag`` of ``plaintext``, for the other end."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._seal.encrypt(nonce, plaintext, None)

    def open(self, sealed: bytes) -> bytes:
        """The plaintext the other end sealed.

        Raises:
            PayloadAuthenticationError: shorter than a nonce and a tag, altered, sealed
                under another session's key, or sealed by this same end (wrong direction).
        """
        if len(sealed) < OVERHEAD:
            raise PayloadAuthenticationError(
                f"an encrypted payload of {len(sealed)} bytes is shorter than its nonce and tag"
            )
        try:
            return self._open.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], None)
        except InvalidTag as exc:
            raise PayloadAuthenticationError(
                "an encrypted payload failed authentication (altered, or not sealed by the "
                f"session's {'client' if self.side is Side.AGENT else 'agent'} with its key)"
            ) from exc
