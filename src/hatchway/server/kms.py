"""The key service (KMS's role): ``TrentService.*`` operations in AWS KMS's shapes, and the
data keys the server's own envelope encryption (session recordings) asks for.

Key hierarchy: the server's master key (``DIR/master.key``) encrypts each KMS key's 32 random
bytes of material at rest (``auth.secretbox``, bound to the key id); a KMS key encrypts small
plaintexts and data keys (``auth.kmsblob``: AES-256-GCM, self-describing blobs bound to an
encryption context); data keys encrypt bulk data (recordings: ``auth.sealedrecording``). Key
material never leaves this module in the clear, and is never logged.

Keys are named as AWS names them: key id (a UUID), key ARN
(``arn:aws:kms:REGION:ACCOUNT:key/UUID``), alias name (``alias/NAME``) or alias ARN. A key is
``Enabled``, ``Disabled`` (no cryptographic use: ``DisabledException``) or
``PendingDeletion`` (no use at all: ``KMSInvalidStateException``) until its deletion date,
after which it is deleted the first time it is looked up: what it encrypted is then lost.

Authorization is the API edge's (``operations``): ``kms:<Operation>`` on the key's ARN
(:meth:`KmsService.resource`), ``*`` for CreateKey, ListKeys and ListAliases.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hatchway.auth.kmsblob import (
    KEY_MATERIAL_BYTES,
    key_id_of,
    new_key_material,
    open_blob,
    seal,
)
from hatchway.auth.secretbox import SecretBox
from hatchway.errors import (
    AlreadyExists,
    Conflict,
    IncorrectKey,
    InvalidMarker,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    ValidationError,
)
from hatchway.server.authz import Resource
from hatchway.server.principal import Principal
from hatchway.server.validation import echo
from hatchway.store.kms import KeyState, KmsAlias, KmsKey, KmsRepository

log = logging.getLogger(__name__)

__all__ = ["RECORDING_CONTEXT_KEY", "DataKey", "KmsService"]

SYMMETRIC: Final = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT: Final = "ENCRYPT_DECRYPT"
DEFAULT_PENDING_DAYS: Final = 30
MIN_PENDING_DAYS: Final = 7
MAX_PENDING_DAYS: Final = 30
DEFAULT_LIMIT: Final = 100
RECORDING_CONTEXT_KEY: Final = "aws:ssm:SessionId"
"""The encryption context key of a session's data keys (as AWS Session Manager uses it)."""
_DATA_KEY_BYTES: Final = {"AES_256": 32, "AES_128": 16}
_ALIAS = re.compile(r"alias/[a-zA-Z0-9/_-]{1,250}")
_KEY_ARN = re.compile(r"arn:(?:aws|hatchway):kms:([^:]*):([0-9]*):key/(.+)")
_ALIAS_ARN = re.compile(r"arn:(?:aws|hatchway):kms:([^:]*):([0-9]*):(alias/.+)")
_MARKER = re.compile(r"[A-Za-z0-9/_:-]{1,256}")

Handler = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class DataKey:
    """A new data key: its plaintext (for the caller's use only, never stored) and its blob."""

    plaintext: bytes
    blob: bytes
    key_arn: str

    def __repr__(self) -> str:
        return f"DataKey(<{len(self.plaintext)} bytes hidden>, key_arn={self.key_arn!r})"


class KmsService:
    """The key service over the ``kms_keys``/``kms_aliases`` rows.

    Args:
        keys: the repository.
        box: the master key's box (encrypts key material at rest).
        region, account_id: of the ARNs.
        clock: the wall clock (creation and deletion dates).
    """

    def __init__(
        self,
        keys: KmsRepository,
        box: SecretBox,
        region: str,
        account_id: str,
        clock: Callable[[], float],
    ) -> None:
        self._keys = keys
        self._box = box
        self.region = region
        self.account_id = account_id
        self._clock = clock

    # ---- naming ------------------------------------------------------------------------------

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, alias_name: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{alias_name}"

    def _own(self, region: str, account: str, what: str) -> None:
        if region != self.region or account != self.account_id:
            raise KeyNotFound(f"{what} is not in this account and region.")

    async def find(self, ref: str) -> KmsKey:
        """The key ``ref`` names (key id, key ARN, alias name or alias ARN).

        Raises:
            KeyNotFound: no such key or alias (or a key whose deletion date has passed).
        """
        key_id = await self._key_id_of(ref)
        key = await self._keys.get_key(key_id)
        if key is None:
            raise KeyNotFound(f"Key '{self.key_arn(key_id)}' does not exist")
        if (
            key.key_state is KeyState.PENDING_DELETION
            and key.deletion_date is not None
            and key.deletion_date <= self._clock()
        ):
            await self._keys.delete_key(key.key_id)
            log.info("KMS key %s reached its deletion date and was deleted", key.arn)
            raise KeyNotFound(f"Key '{key.arn}' does not exist")
        return key

    async def _key_id_of(self, ref: str) -> str:
        if ref.startswith("alias/"):
            alias = await self._keys.get_alias(ref)
            if alias is None:
                raise KeyNotFound(f"Alias '{echo(self.alias_arn(ref))}' is not found.")
            return alias.key_id
        if m := _ALIAS_ARN.fullmatch(ref):
            self._own(m[1], m[2], "The alias")
            return await self._key_id_of(m[3])
        if m := _KEY_ARN.fullmatch(ref):
            self._own(m[1], m[2], "The key")
            ref = m[3]
        try:
            return str(uuid.UUID(ref)) if len(ref) == 36 else _not_a_key(ref)
        except ValueError:
            return _not_a_key(ref)

    async def resource(self, ref: str) -> Resource:
        """What policies see of the key ``ref`` names: its key ARN, or, if there is no such
        key, the ARN ``ref`` spells (the operation then answers ``NotFoundException`` to a
        caller allowed to ask)."""
        try:
            return Resource((self.key_arn((await self.find(ref)).key_id),))
        except KeyNotFound:
            if ref.startswith("alias/"):
                return Resource((self.alias_arn(ref),))
            if ref.startswith("arn:"):
                return Resource((ref,))
            return Resource((self.key_arn(ref),))

    def blob_resource(self, blob: bytes) -> Resource:
        """Decrypt's resource: the key the blob names (read from the blob, as in AWS).

        Raises:
            InvalidCiphertext: not a blob of this service.
        """
        return Resource((self.key_arn(key_id_of(blob)),))

    # ---- the server's own use ------------------------------------------------------------------

    async def generate_data_key(
        self, ref: str, context: Mapping[str, str], *, size: int = KEY_MATERIAL_BYTES
    ) -> DataKey:
        """A new data key under the key ``ref`` names (no policy check: the server's own use).

        Raises:
            KeyNotFound, KeyDisabled, KeyInvalidState: as GenerateDataKey.
        """
        key = await self.find(ref)
        material = self._usable(key)
        plaintext = secrets.token_bytes(size)
        return DataKey(plaintext, seal(material, key.key_id, plaintext, context), key.arn)

    async def check_usable(self, ref: str) -> str:
        """The ARN of the key ``ref`` names, if it can encrypt now.

        Raises:
            KeyNotFound, KeyDisabled, KeyInvalidState.
        """
        key = await self.find(ref)
        self._usable(key)
        return key.arn

    async def decrypt_data_key(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext of a blob (no policy check: callers check ``kms:Decrypt`` first).

        Raises:
            InvalidCiphertext: the blob is malformed, altered or the context differs.
            KeyNotFound, KeyDisabled, KeyInvalidState: as Decrypt.
        """
        key = await self.find(key_id_of(blob))
        return open_blob(self._usable(key), blob, context)

    def _usable(self, key: KmsKey) -> bytes:
        """The key's material, if its state allows cryptographic use."""
        if key.key_state is KeyState.DISABLED:
            raise KeyDisabled(f"{key.arn} is disabled.")
        if key.key_state is KeyState.PENDING_DELETION:
            raise KeyInvalidState(f"{key.arn} is pending deletion.")
        return self._box.decrypt(key.material_encrypted, context=_material_context(key.key_id))

    # ---- the API -----------------------------------------------------------------------------

    def operations(self) -> dict[str, Handler]:
        """``TrentService.<name>`` → handler."""
        return {
            "CreateKey": self.create_key,
            "DescribeKey": self.describe_key,
            "ListKeys": self.list_keys,
            "EnableKey": self.enable_key,
            "DisableKey": self.disable_key,
            "ScheduleKeyDeletion": self.schedule_key_deletion,
            "CancelKeyDeletion": self.cancel_key_deletion,
            "CreateAlias": self.create_alias,
            "ListAliases": self.list_aliases,
            "DeleteAlias": self.delete_alias,
            "Encrypt": self.encrypt,
            "Decrypt": self.decrypt,
            "GenerateDataKey": self.generate_data_key_api,
            "GenerateDataKeyWithoutPlaintext": self.generate_data_key_without_plaintext,
        }

    async def create_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("Policy") is not None:
            raise ValidationError(
                "Key policies are not supported: access to keys is granted by identity "
                "policies (kms:* actions on the key's ARN)."
            )
        usage = body.get("KeyUsage", ENCRYPT_DECRYPT)
        spec = body.get("KeySpec", body.get("CustomerMasterKeySpec", SYMMETRIC))
        if usage != ENCRYPT_DECRYPT or spec != SYMMETRIC:
            raise ValidationError(
                f"Only symmetric encryption keys are supported (KeyUsage {ENCRYPT_DECRYPT}, "
                f"KeySpec {SYMMETRIC})."
            )
        if body.get("Origin", "AWS_KMS") != "AWS_KMS" or body.get("MultiRegion"):
            raise ValidationError("Only single-Region keys with Origin AWS_KMS are supported.")
        if body.get("CustomKeyStoreId") or body.get("XksKeyId"):
            raise ValidationError("Custom key stores are not supported.")
        tags = [{"TagKey": t["TagKey"], "TagValue": t["TagValue"]} for t in body.get("Tags", ())]
        if len({t["TagKey"] for t in tags}) != len(tags):
            raise ValidationError("Tag keys must be unique.")
        key_id = str(uuid.uuid4())
        material = new_key_material()
        key = KmsKey(
            key_id=key_id,
            arn=self.key_arn(key_id),
            description=body.get("Description", ""),
            key_state=KeyState.ENABLED,
            key_usage=ENCRYPT_DECRYPT,
            key_spec=SYMMETRIC,
            material_encrypted=self._box.encrypt(material, context=_material_context(key_id)),
            creation_date=self._clock(),
            tags=tags,
        )
        del material
        await self._keys.create_key(key)
        log.info("KMS key %s created by %s", key.arn, principal.arn)
        return {"KeyMetadata": self._metadata(key)}

    async def describe_key(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return {"KeyMetadata": self._metadata(await self.find(body["KeyId"]))}

    async def list_keys(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        limit, after = _page(body)
        keys = await self._keys.list_keys(after=after, limit=limit + 1)
        out: dict[str, Any] = {
            "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in keys[:limit]],
            "Truncated": len(keys) > limit,
        }
        if len(keys) > limit:
            out["NextMarker"] = keys[limit - 1].key_id
        return out

    async def enable_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._move(
            body["KeyId"], KeyState.ENABLED, (KeyState.ENABLED, KeyState.DISABLED), principal
        )
        return {}

    async def disable_key(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        await self._move(
            body["KeyId"], KeyState.DISABLED, (KeyState.ENABLED, KeyState.DISABLED), principal
        )
        return {}

    async def schedule_key_deletion(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        days = int(body.get("PendingWindowInDays", DEFAULT_PENDING_DAYS))
        if not MIN_PENDING_DAYS <= days <= MAX_PENDING_DAYS:
            raise ValidationError(
                f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed "
                f"to satisfy constraint: Member must have value between {MIN_PENDING_DAYS} and "
                f"{MAX_PENDING_DAYS}"
            )
        date = self._clock() + days * 86400
        key = await self._move(
            body["KeyId"],
            KeyState.PENDING_DELETION,
            (KeyState.ENABLED, KeyState.DISABLED),
            principal,
            deletion_date=date,
        )
        return {
            "KeyId": key.arn,
            "DeletionDate": date,
            "KeyState": KeyState.PENDING_DELETION.value,
            "PendingWindowInDays": days,
        }

    async def cancel_key_deletion(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        # As AWS: a key whose deletion is cancelled is Disabled, not back to what it was.
        key = await self._move(
            body["KeyId"], KeyState.DISABLED, (KeyState.PENDING_DELETION,), principal
        )
        return {"KeyId": key.arn}

    async def _move(
        self,
        ref: str,
        state: KeyState,
        from_states: Sequence[KeyState],
        principal: Principal,
        *,
        deletion_date: float | None = None,
    ) -> KmsKey:
        key = await self.find(ref)
        if key.key_state not in from_states or not await self._keys.set_state(
            key.key_id, state, from_states=from_states, deletion_date=deletion_date
        ):
            current = (await self.find(key.key_id)).key_state
            raise KeyInvalidState(f"{key.arn} is {_state_words(current)}.")
        log.info("KMS key %s is now %s (by %s)", key.arn, state.value, principal.arn)
        return key

    async def create_alias(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["AliasName"]
        _check_alias_name(name)
        target: str = body["TargetKeyId"]
        if target.startswith("alias/") or _ALIAS_ARN.fullmatch(target):
            raise ValidationError("TargetKeyId must be a key id or a key ARN, not an alias.")
        key = await self.find(target)
        if key.key_state is KeyState.PENDING_DELETION:
            raise KeyInvalidState(f"{key.arn} is pending deletion.")
        now = self._clock()
        try:
            await self._keys.create_alias(KmsAlias(name, key.key_id, now, now))
        except Conflict as exc:
            raise AlreadyExists(
                f"An alias with the name {self.alias_arn(name)} already exists"
            ) from exc
        log.info("KMS alias %s → %s created by %s", name, key.arn, principal.arn)
        return {}

    async def delete_alias(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["AliasName"]
        if not await self._keys.delete_alias(name):
            raise KeyNotFound(f"Alias {self.alias_arn(name)} is not found.")
        log.info("KMS alias %s deleted by %s", name, principal.arn)
        return {}

    async def list_aliases(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        limit, after = _page(body)
        key_id = None
        if body.get("KeyId") is not None:
            key_id = (await self.find(body["KeyId"])).key_id
        aliases = await self._keys.list_aliases(key_id=key_id, after=after, limit=limit + 1)
        out: dict[str, Any] = {
            "Aliases": [
                {
                    "AliasName": a.alias_name,
                    "AliasArn": self.alias_arn(a.alias_name),
                    "TargetKeyId": a.key_id,
                    "CreationDate": a.creation_date,
                    "LastUpdatedDate": a.last_updated_date,
                }
                for a in aliases[:limit]
            ],
            "Truncated": len(aliases) > limit,
        }
        if len(aliases) > limit:
            out["NextMarker"] = aliases[limit - 1].alias_name
        return out

    async def encrypt(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        _check_algorithm(body)
        key = await self.find(body["KeyId"])
        blob = seal(self._usable(key), key.key_id, body["Plaintext"], _context(body))
        return {
            "CiphertextBlob": _b64(blob),
            "KeyId": key.arn,
            "EncryptionAlgorithm": SYMMETRIC,
        }

    async def decrypt(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        _check_algorithm(body)
        blob: bytes | None = body.get("CiphertextBlob")
        if blob is None:
            raise ValidationError("CiphertextBlob is required.")
        key = await self.find(key_id_of(blob))
        if body.get("KeyId") is not None and (await self.find(body["KeyId"])).key_id != key.key_id:
            raise IncorrectKey(
                "The key ID in the request does not identify the KMS key that was used to "
                "encrypt the ciphertext."
            )
        plaintext = open_blob(self._usable(key), blob, _context(body))
        return {"Plaintext": _b64(plaintext), "KeyId": key.arn, "EncryptionAlgorithm": SYMMETRIC}

    async def generate_data_key_api(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        data_key = await self.generate_data_key(
            body["KeyId"], _context(body), size=_data_key_size(body)
        )
        return {
            "CiphertextBlob": _b64(data_key.blob),
            "Plaintext": _b64(data_key.plaintext),
            "KeyId": data_key.key_arn,
        }

    async def generate_data_key_without_plaintext(
        self, _: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        data_key = await self.generate_data_key(
            body["KeyId"], _context(body), size=_data_key_size(body)
        )
        return {"CiphertextBlob": _b64(data_key.blob), "KeyId": data_key.key_arn}

    def _metadata(self, key: KmsKey) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AWSAccountId": self.account_id,
            "KeyId": key.key_id,
            "Arn": key.arn,
            "CreationDate": key.creation_date,
            "Enabled": key.key_state is KeyState.ENABLED,
            "Description": key.description,
            "KeyUsage": key.key_usage,
            "KeyState": key.key_state.value,
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": key.key_spec,
            "KeySpec": key.key_spec,
            "EncryptionAlgorithms": [SYMMETRIC],
            "MultiRegion": False,
        }
        if key.deletion_date is not None:
            out["DeletionDate"] = key.deletion_date
        return out


def _material_context(key_id: str) -> bytes:
    """What binds a key's encrypted material to its row (a copy on another row fails)."""
    return b"kms-key:" + key_id.encode()


def _not_a_key(ref: str) -> str:
    raise KeyNotFound(f"Invalid keyId '{echo(ref)}'")


def _state_words(state: KeyState) -> str:
    return {
        KeyState.ENABLED: "enabled",
        KeyState.DISABLED: "disabled",
        KeyState.PENDING_DELETION: "pending deletion",
    }[state]


def _check_alias_name(name: str) -> None:
    if _ALIAS.fullmatch(name) is None:
        raise ValidationError(
            f"Alias name '{echo(name)}' must be alias/ followed by letters, digits, '/', '_' "
            "or '-'."
        )
    if name.startswith("alias/aws/"):
        raise ValidationError("Alias names beginning with alias/aws/ are reserved.")


def _check_algorithm(body: Mapping[str, Any]) -> None:
    if body.get("EncryptionAlgorithm", SYMMETRIC) != SYMMETRIC:
        raise ValidationError(f"Only the {SYMMETRIC} encryption algorithm is supported.")


def _context(body: Mapping[str, Any]) -> dict[str, str]:
    context: dict[str, str] = body.get("EncryptionContext") or {}
    return context


def _data_key_size(body: Mapping[str, Any]) -> int:
    spec, count = body.get("KeySpec"), body.get("NumberOfBytes")
    if (spec is None) == (count is None):
        raise ValidationError("Specify either KeySpec or NumberOfBytes, but not both.")
    if spec is not None:
        return _DATA_KEY_BYTES[spec]  # the model's enum: AES_256 or AES_128
    assert isinstance(count, int)  # the model's integer, 1..1024
    return count


def _page(body: Mapping[str, Any]) -> tuple[int, str | None]:
    limit = int(body.get("Limit", DEFAULT_LIMIT))
    marker = body.get("Marker")
    if marker is not None and _MARKER.fullmatch(marker) is None:
        raise InvalidMarker("The marker is not valid.")
    return limit, marker


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
