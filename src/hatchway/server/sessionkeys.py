"""``kms:Decrypt`` for nodes: how an agent unwraps the data key of an end-to-end encrypted
session (docs/protocol.md §7.9).

The client generates the session's data key with its user's credentials (``kms:GenerateDataKey``
on the key, under the user's policies) and hands the wrapped key to the agent in the handshake.
The agent then calls ``TrentService.Decrypt`` signed with the node's own key (RSA SigV4 and a
fresh nonce, as its WebSocket upgrades). Nodes have no IAM policies in Hatchway; what a node
may decrypt is fixed here, the way AWS's documentation scopes an instance role's
``kms:Decrypt`` with encryption-context conditions:

* the encryption context names exactly ``aws:ssm:SessionId``, ``aws:ssm:TargetId`` and
  optionally ``aws:ssm:RandomChallenge``;
* ``aws:ssm:TargetId`` is the calling node, and ``aws:ssm:SessionId`` one of its **active**
  sessions;
* the ciphertext is under the KMS key that session's preferences chose (its ARN was fixed when
  the session started).

So a node can open the data key of its own sessions while they run, and nothing else: not
another node's, not a recording's data key, not an arbitrary blob. The key's state applies as
for anyone (a disabled key: ``DisabledException``).

A node may also call ``TrentService.GenerateDataKey`` (32 bytes) for the recording it makes of
such a session (``agent.recording``): only with the context ``{"aws:ssm:SessionId": <one of
its active sessions>}`` and that session's key. It may not Decrypt such a key back (the
context lacks ``aws:ssm:TargetId``): only readers allowed ``kms:Decrypt`` can.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any, Final

from hatchway.auth.kmsblob import key_id_of
from hatchway.errors import AccessDenied, IncorrectKey, ValidationError
from hatchway.protocol.encryption import CONTEXT_CHALLENGE, CONTEXT_SESSION, CONTEXT_TARGET
from hatchway.server.kms import KmsService
from hatchway.store.store import Store

log = logging.getLogger(__name__)

__all__ = ["SESSION_KEY_PREFERENCE", "NodeDataKeys"]

#: The member of a session's applied preferences (``DescribeSessions``' ``Preferences``) that
#: holds the ARN of the KMS key its data channel is encrypted under.
SESSION_KEY_PREFERENCE: Final = "KmsKeyId"
_CONTEXT_KEYS: Final = frozenset({CONTEXT_SESSION, CONTEXT_TARGET, CONTEXT_CHALLENGE})


class NodeDataKeys:
    """Decrypt for a node (see the module docstring)."""

    def __init__(self, kms: KmsService, store: Store) -> None:
        self._kms = kms
        self._store = store

    async def _active_session_key(self, node_id: str, session_id: str, refuse: Any) -> str:
        """The key ARN of ``session_id``, an active session on ``node_id`` encrypted end to
        end; else ``refuse(why)`` is raised."""
        session = await self._store.sessions.get(session_id)
        if session is None or session.target != node_id or not session.status.is_active:
            raise refuse(f"{session_id} is not an active session on this node")
        chosen = (session.preferences or {}).get(SESSION_KEY_PREFERENCE)
        if not chosen:
            raise refuse(f"session {session_id} is not encrypted end to end")
        return str(chosen)

    async def generate(self, node_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``TrentService.GenerateDataKey`` as ``node_id``: the data key of the recording the
        node makes of one of its encrypted sessions.

        Raises:
            AccessDenied: not a recording key of one of the node's active encrypted sessions.
            KeyDisabled, KeyInvalidState, KeyNotFound: as GenerateDataKey for anyone.
        """
        key = await self._kms.find(str(body.get("KeyId", "")))
        context: Mapping[str, str] = body.get("EncryptionContext") or {}

        def refuse(why: str) -> AccessDenied:
            log.warning("node %s refused kms:GenerateDataKey on %s: %s", node_id, key.arn, why)
            return AccessDenied(
                f"Node {node_id} is not authorized to perform: kms:GenerateDataKey on "
                f"resource: {key.arn}: {why}"
            )

        session_id = context.get(CONTEXT_SESSION, "")
        if set(context) != {CONTEXT_SESSION} or not session_id:
            raise refuse(f"a node may generate only session recording keys ({CONTEXT_SESSION})")
        if await self._active_session_key(node_id, session_id, refuse) != key.arn:
            raise refuse(f"session {session_id} is not encrypted under this key")
        if body.get("KeySpec", "AES_256") != "AES_256" or body.get("NumberOfBytes") is not None:
            raise ValidationError("A node's recording keys are AES_256.")
        data_key = await self._kms.generate_data_key(key.key_id, context)
        return {
            "CiphertextBlob": base64.b64encode(data_key.blob).decode("ascii"),
            "Plaintext": base64.b64encode(data_key.plaintext).decode("ascii"),
            "KeyId": data_key.key_arn,
        }

    async def decrypt(self, node_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``TrentService.Decrypt`` as ``node_id`` (``body`` validated against KMS's model).

        Raises:
            AccessDenied: the context or the key is not one of the node's active sessions'.
            InvalidCiphertext, IncorrectKey, KeyDisabled, KeyInvalidState, KeyNotFound: as
                Decrypt for anyone.
        """
        blob: bytes | None = body.get("CiphertextBlob")
        if blob is None:
            raise ValidationError("CiphertextBlob is required.")
        key_arn = self._kms.key_arn(key_id_of(blob))
        context: Mapping[str, str] = body.get("EncryptionContext") or {}
        session_id = context.get(CONTEXT_SESSION, "")

        def refuse(why: str) -> AccessDenied:
            log.warning("node %s refused kms:Decrypt on %s: %s", node_id, key_arn, why)
            return AccessDenied(
                f"Node {node_id} is not authorized to perform: kms:Decrypt on resource: "
                f"{key_arn}: {why}"
            )

        if not set(context) <= _CONTEXT_KEYS or not session_id:
            raise refuse(
                "a node may decrypt only session data keys (encryption context "
                f"{CONTEXT_SESSION}, {CONTEXT_TARGET})"
            )
        if context.get(CONTEXT_TARGET) != node_id:
            raise refuse(f"the encryption context's {CONTEXT_TARGET} is not this node")
        if await self._active_session_key(node_id, session_id, refuse) != key_arn:
            raise refuse(f"session {session_id} is not encrypted under this key")
        if body.get("KeyId") is not None:
            named = await self._kms.find(body["KeyId"])
            if named.arn != key_arn:
                raise IncorrectKey(
                    "The key ID in the request does not identify the KMS key that was used "
                    "to encrypt the ciphertext."
                )
        plaintext = await self._kms.decrypt_data_key(blob, context)
        return {
            "Plaintext": base64.b64encode(plaintext).decode("ascii"),
            "KeyId": key_arn,
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }
