"""End-to-end session encryption with a KMS data key, as AWS Session Manager does it
(docs/protocol.md §7.9): the sans-I/O half.

When the preferences name a ``kmsKeyId``, the agent's HandshakeRequest carries a
``KMSEncryption`` action (:class:`KmsEncryptionRequest`). The **client** asks the key service
for a 64-byte data key (GenerateDataKey, encryption context :func:`encryption_context`) and
returns the wrapped key in its HandshakeResponse (:class:`KmsEncryptionResult`); the **agent**
unwraps it (Decrypt, the same context). Bytes 0–31 of the key seal agent → client payloads,
bytes 32–63 client → agent (:func:`split_data_key`). Each sealed payload is AES-256-GCM without
associated data, laid out ``nonce(12) ‖ ciphertext ‖ tag(16)``, a fresh random nonce each time.
An :class:`EncryptionChallenge` round (PayloadTypes 8 and 9) proves both hold the key before
the agent completes the handshake.

Which payloads are sealed is AWS's choice, kept exactly so that AWS's plugin interoperates
(:data:`SEALED_BY_AGENT`, :data:`SEALED_BY_CLIENT`): Output, StdErr and ExitCode from the agent,
Output from the client. Size, Flag, the handshake and every non-stream frame stay in clear, as
do Port sessions (never encrypted).

The cipher itself (AES-GCM needs ``cryptography``, which this package does not import) is
``hatchway.auth.sessioncipher``; here is its interface (:class:`PayloadCipher`) and everything
both ends must agree on.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final, Protocol

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.gojson import JsonObject, dumps, loads_object

__all__ = [
    "CHALLENGE_BYTES",
    "CONTEXT_CHALLENGE",
    "CONTEXT_SESSION",
    "CONTEXT_TARGET",
    "DATA_KEY_BYTES",
    "ENCRYPTED_MESSAGE",
    "NONCE_SIZE",
    "OVERHEAD",
    "REQUEST_CHALLENGE_BYTES",
    "SEALED_BY_AGENT",
    "SEALED_BY_CLIENT",
    "TAG_SIZE",
    "EncryptionChallenge",
    "KmsEncryptionRequest",
    "KmsEncryptionResult",
    "PayloadCipher",
    "encryption_context",
    "split_data_key",
]

#: GenerateDataKey's ``NumberOfBytes``: two AES-256 keys, one per direction.
DATA_KEY_BYTES: Final = 64
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
#: What sealing adds to a payload.
OVERHEAD: Final = NONCE_SIZE + TAG_SIZE
#: Random bytes the agent's EncChallengeRequest seals (AWS's agent uses 64).
CHALLENGE_BYTES: Final = 64
#: Random bytes of the handshake's ``Challenge`` string (before base64, as AWS's agent).
REQUEST_CHALLENGE_BYTES: Final = 16
#: Encryption context keys (docs/protocol.md §7.9), exactly as AWS's peers spell them.
CONTEXT_SESSION: Final = "aws:ssm:SessionId"
CONTEXT_TARGET: Final = "aws:ssm:TargetId"
CONTEXT_CHALLENGE: Final = "aws:ssm:RandomChallenge"
#: HandshakeComplete's CustomerMessage for an encrypted session (AWS's agent's words).
ENCRYPTED_MESSAGE: Final = "This session is encrypted using AWS KMS."

#: Payload types each end seals before sending (and the other opens on arrival).
SEALED_BY_AGENT: Final = frozenset({PayloadType.OUTPUT, PayloadType.STDERR, PayloadType.EXIT_CODE})
SEALED_BY_CLIENT: Final = frozenset({PayloadType.OUTPUT})


class PayloadCipher(Protocol):
    """One end's pair of AES-256-GCM keys: it seals what it sends, opens what it receives."""

    def seal(self, plaintext: bytes) -> bytes:
        """``nonce ‖ ciphertext ‖ tag`` of ``plaintext`` under this end's sending key."""
        ...

    def open(self, sealed: bytes) -> bytes:
        """The plaintext of a payload the peer sealed.

        Raises:
            PayloadAuthenticationError: too short, altered, or sealed under another key.
        """
        ...


def split_data_key(data_key: bytes) -> tuple[bytes, bytes]:
    """(agent → client key, client → agent key) of a 64-byte data key (docs/protocol.md §7.9).

    Raises:
        RemoteProtocolError: the key is not :data:`DATA_KEY_BYTES` long.
    """
    if len(data_key) != DATA_KEY_BYTES:
        raise RemoteProtocolError(
            f"a session data key has {DATA_KEY_BYTES} bytes, not {len(data_key)}"
        )
    half = DATA_KEY_BYTES // 2
    return data_key[:half], data_key[half:]


def encryption_context(session_id: str, target: str, challenge: str | None) -> dict[str, str]:
    """The encryption context of a session's data key: the session and the node, plus the
    handshake's random challenge when the client acknowledged it (binding the key to this one
    handshake; AWS's plugin of 2024 does not, and its context has the first two only)."""
    context = {CONTEXT_SESSION: session_id, CONTEXT_TARGET: target}
    if challenge is not None:
        context[CONTEXT_CHALLENGE] = challenge
    return context


@dataclass(frozen=True, slots=True)
class KmsEncryptionRequest:
    """The ``KMSEncryption`` action's parameters (agent → client, docs/protocol.md §7.3)."""

    kms_key_id: str
    challenge: str

    def to_dict(self) -> dict[str, Any]:
        return {"KMSKeyId": self.kms_key_id, "Challenge": self.challenge}

    @classmethod
    def from_dict(cls, value: Any) -> KmsEncryptionRequest:
        """Raises: RemoteProtocolError: not an object with a non-empty ``KMSKeyId``."""
        if not isinstance(value, dict):
            raise RemoteProtocolError("KMSEncryption: expected an object")
        obj = JsonObject(value, "KMSEncryption")
        key_id = obj.get_str("KMSKeyId")
        if not key_id:
            raise RemoteProtocolError("KMSEncryption: KMSKeyId is empty")
        return cls(kms_key_id=key_id, challenge=obj.get_str("Challenge", ""))


@dataclass(frozen=True, slots=True)
class KmsEncryptionResult:
    """The ``KMSEncryption`` action's result (client → agent, docs/protocol.md §7.4): the data
    key wrapped by the KMS key (GenerateDataKey's ``CiphertextBlob``)."""

    ciphertext_key: bytes
    challenge_acknowledged: bool = False

    def __repr__(self) -> str:
        return f"KmsEncryptionResult(<{len(self.ciphertext_key)}-byte blob>)"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "KMSCipherTextKey": base64.b64encode(self.ciphertext_key).decode("ascii"),
            "KMSCipherTextHash": None,
        }
        if self.challenge_acknowledged:
            out["ChallengeAcknowledgement"] = True
        return out

    @classmethod
    def from_dict(cls, value: Any) -> KmsEncryptionResult:
        """Raises: RemoteProtocolError: not an object with a base64 ``KMSCipherTextKey``."""
        if not isinstance(value, dict):
            raise RemoteProtocolError("KMSEncryption result: expected an object")
        obj = JsonObject(value, "KMSEncryption result")
        return cls(
            ciphertext_key=_b64(obj.get_str("KMSCipherTextKey"), "KMSCipherTextKey"),
            challenge_acknowledged=obj.get_bool("ChallengeAcknowledgement", False),
        )


@dataclass(frozen=True, slots=True)
class EncryptionChallenge:
    """EncChallengeRequest (8, agent → client) and EncChallengeResponse (9, client → agent):
    ``{"Challenge": <base64>}``. The agent seals :data:`CHALLENGE_BYTES` random bytes; the client
    opens them and seals them again with its own key; the agent opens that and compares."""

    challenge: bytes

    def to_json(self) -> bytes:
        return dumps({"Challenge": base64.b64encode(self.challenge).decode("ascii")})

    @classmethod
    def from_json(cls, data: bytes) -> EncryptionChallenge:
        obj = loads_object(data, "EncryptionChallenge")
        return cls(_b64(obj.get_str("Challenge"), "Challenge"))


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"{what} is not base64") from exc
