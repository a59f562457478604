"""Envelope encryption of session recordings: which KMS key seals a session's recording, its
data key, and who may open it.

Each encrypted recording has its own data key from the key service (GenerateDataKey with the
encryption context ``{"aws:ssm:SessionId": <session id>}``, as AWS Session Manager uses it):
the recorder holds the plaintext data key in memory while it writes; the file's header and the
recording's row keep only the wrapped key (``auth.sealedrecording``). Reading decrypts the data
key again, and only for a caller who is allowed ``kms:Decrypt`` on the recording's KMS key,
besides ``hatchway:GetSessionRecording`` on the session (checked at the API edge).

The key is the server's ``--recordings-kms-key`` today; :meth:`RecordingKeys.key_for` is where
a session's preferences (``kmsKeyId``, ``s3EncryptionEnabled`` of
``SSM-SessionManagerRunShell``) will choose another per session.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Final

from hatchway.auth.sealedrecording import RecordingHeader
from hatchway.errors import (
    AccessDenied,
    InvalidNextToken,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
)
from hatchway.server.authz import Authorizer, Resource
from hatchway.server.kms import RECORDING_CONTEXT_KEY, KmsService
from hatchway.server.principal import Principal
from hatchway.server.recorder import Sealing
from hatchway.store.recordings import Recording

log = logging.getLogger(__name__)

__all__ = ["RecordingKeys", "page_token", "read_page_token", "recording_context"]

_TOKEN = re.compile(r"([0-9]{1,15})\.([0-9]{1,12})\.([0-9a-f]{32})")
_TOKEN_LABEL: Final = b"hatchway-recording-page\x00"


def recording_context(session_id: str) -> dict[str, str]:
    """The encryption context of a session's data key."""
    return {RECORDING_CONTEXT_KEY: session_id}


class RecordingKeys:
    """Data keys of encrypted recordings.

    Args:
        kms: the key service.
        authz: checks ``kms:Decrypt`` for readers.
        default_key: the server's ``--recordings-kms-key`` (key id, ARN, alias), or ``None``.
    """

    def __init__(self, kms: KmsService, authz: Authorizer, default_key: str | None) -> None:
        self._kms = kms
        self._authz = authz
        self.default_key = default_key

    def key_for(self, *, preference: str | None = None) -> str | None:
        """The KMS key a new session's recording is encrypted with (``None``: not encrypted):
        the session's preference when there is one, else the server's default."""
        return preference or self.default_key

    async def seal_for(self, session_id: str, key_ref: str) -> Sealing:
        """A new data key for the session's recording, and the header that carries it wrapped.

        Raises:
            KeyNotFound, KeyDisabled, KeyInvalidState: the key cannot be used now.
        """
        context = recording_context(session_id)
        data_key = await self._kms.generate_data_key(key_ref, context)
        header = RecordingHeader(session_id, data_key.key_arn, data_key.blob, context)
        return Sealing(header, data_key.plaintext)

    async def sealing_of(self, row: Recording) -> Sealing:
        """The sealing of an existing recording, for the server's own use (going on with it
        after a restart): no policy check.

        Raises:
            InvalidCiphertext, KeyNotFound, KeyDisabled, KeyInvalidState.
        """
        assert row.kms_key_arn is not None and row.wrapped_key is not None
        context = recording_context(row.session_id)
        data_key = await self._kms.decrypt_data_key(row.wrapped_key, context)
        return Sealing(
            RecordingHeader(row.session_id, row.kms_key_arn, row.wrapped_key, context), data_key
        )

    async def open_for(self, principal: Principal | None, row: Recording) -> bytes:
        """The recording's data key, for a reader allowed ``kms:Decrypt`` on its KMS key.

        Raises:
            AccessDenied: no reader, or the reader may not use the key (the message names
                ``kms:Decrypt`` and the key).
            KeyDisabled, KeyInvalidState, KeyNotFound: the key cannot be used (named, with
                what to do).
            InvalidCiphertext: the wrapped key was altered.
        """
        assert row.kms_key_arn is not None and row.wrapped_key is not None
        arn = row.kms_key_arn
        if principal is None:
            raise AccessDenied(f"reading an encrypted recording needs kms:Decrypt on {arn}")
        await self._authz.authorize(principal, "kms:Decrypt", (Resource((arn,)),))
        what = f"The recording of session {row.session_id} is encrypted with KMS key {arn}"
        try:
            return await self._kms.decrypt_data_key(
                row.wrapped_key, recording_context(row.session_id)
            )
        except KeyDisabled as exc:
            raise KeyDisabled(f"{what}, which is disabled: enable the key to read it.") from exc
        except KeyInvalidState as exc:
            raise KeyInvalidState(
                f"{what}, which is pending deletion: cancel the deletion and enable the key "
                "to read it."
            ) from exc
        except KeyNotFound as exc:
            raise KeyNotFound(f"{what}, which no longer exists: it cannot be read.") from exc


def page_token(data_key: bytes, session_id: str, offset: int, index: int) -> str:
    """A NextToken for an encrypted recording: where the next chunk starts and its index,
    authenticated with the recording's data key (a forged token is refused, never decrypted
    from the wrong place)."""
    return f"{offset}.{index}.{_token_mac(data_key, session_id, offset, index)}"


def read_page_token(data_key: bytes, session_id: str, token: str) -> tuple[int, int]:
    """(offset, chunk index) of a token :func:`page_token` made for this recording.

    Raises:
        InvalidNextToken: anything else.
    """
    m = _TOKEN.fullmatch(token)
    if m is None:
        raise InvalidNextToken("The NextToken is not valid.")
    offset, index = int(m[1]), int(m[2])
    if not hmac.compare_digest(m[3], _token_mac(data_key, session_id, offset, index)):
        raise InvalidNextToken("The NextToken is not valid.")
    return offset, index


def _token_mac(data_key: bytes, session_id: str, offset: int, index: int) -> str:
    # A key of its own for the tokens, derived from the data key (not the AES key itself).
    mac_key = hmac.new(data_key, _TOKEN_LABEL, hashlib.sha256).digest()
    message = f"{session_id}\x00{offset}\x00{index}".encode()
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()[:32]
