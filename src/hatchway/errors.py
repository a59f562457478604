"""Hatchway's one exception tree.

::

    HatchwayError                       InternalServerError                  500
    ├── ConfigError                     ValidationException                  400
    ├── ValidationError                 ValidationException                  400
    │   ├── SerializationError          SerializationException               400
    │   ├── UnknownOperation            UnknownOperationException            400
    │   ├── InvalidNextToken            InvalidNextToken                     400
    │   ├── InvalidMarker               InvalidMarkerException               400
    │   ├── InvalidFilterKey            InvalidFilterKey                     400
    │   ├── RequestTooLarge             RequestEntityTooLargeException       413
    │   ├── MalformedPolicyDocument     MalformedPolicyDocumentException     400
    │   ├── InvalidCiphertext           InvalidCiphertextException           400
    │   ├── IncorrectKey                IncorrectKeyException                400
    │   ├── PasswordPolicyViolation     PasswordPolicyViolationException     400
    │   ├── InvalidParameter            InvalidParameterException            400
    │   ├── InvalidDocumentContent      InvalidDocumentContent               400
    │   ├── InvalidDocumentSchemaVersion InvalidDocumentSchemaVersion        400
    │   ├── InvalidDocumentVersion      InvalidDocumentVersion               400
    │   ├── InvalidDocumentOperation    InvalidDocumentOperation             400
    │   ├── DuplicateDocumentContent    DuplicateDocumentContent             400
    │   └── MaxDocumentSizeExceeded     MaxDocumentSizeExceeded              400
    ├── ProtocolError                   ProtocolError                        400
    │   ├── LocalProtocolError          (our bug)
    │   └── RemoteProtocolError         (the peer's)
    │       └── PayloadAuthenticationError (a sealed payload failed AES-GCM's check)
    ├── ChannelClosed                   ChannelClosed                        400
    ├── AuthError                       UnrecognizedClientException          400
    │   ├── MissingAuthenticationToken  MissingAuthenticationTokenException  400
    │   ├── IncompleteSignature         IncompleteSignatureException         400
    │   ├── InvalidSignature            InvalidSignatureException            400
    │   └── InvalidActivation           InvalidActivation                    400
    ├── AccessDenied                    AccessDeniedException                400
    ├── NotFound                        DoesNotExistException                400
    │   ├── InvalidDocument             InvalidDocument                      400
    │   ├── InvalidInstanceId           InvalidInstanceId                    400
    │   ├── InvalidActivationId         InvalidActivationId                  400
    │   ├── InvalidResourceId           InvalidResourceId                    400
    │   ├── InvalidResourceType         InvalidResourceType                  400
    │   ├── NoSuchEntity                NoSuchEntityException                400
    │   ├── KeyNotFound                 NotFoundException                    400
    │   └── ResourceNotFound            ResourceNotFoundException            400
    ├── Conflict                        ConflictException                    400
    │   ├── EntityAlreadyExists         EntityAlreadyExistsException         400
    │   ├── DeleteConflict              DeleteConflictException              400
    │   ├── UnmodifiableEntity          UnmodifiableEntityException          400
    │   ├── AlreadyExists               AlreadyExistsException               400
    │   ├── KeyDisabled                 DisabledException                    400
    │   ├── KeyInvalidState             KMSInvalidStateException             400
    │   ├── ResourceAlreadyExists       ResourceAlreadyExistsException       400
    │   └── DocumentAlreadyExists       DocumentAlreadyExists                400
    ├── LimitExceeded                   LimitExceededException               400
    │   ├── TooManyTags                 TooManyTagsError                     400
    │   └── DocumentVersionLimitExceeded DocumentVersionLimitExceeded        400
    ├── Throttled                       ThrottlingException                  400
    ├── Unavailable                     ServiceUnavailable                   400
    │   └── TargetNotConnected          TargetNotConnected                   400
    └── StoreError                      InternalServerError                  500
        └── CorruptData                 InternalServerError                  500

Each class carries its AWS error type (``code``) and the HTTP status the API answers with
(``status``): that is the API edge's table, and raise sites pick a class, never a string. The
other edges have one table each: WebSocket close codes in ``protocol.closecodes.CloseCode``, CLI
exit statuses in ``cli.ExitStatus``. AWS JSON services answer every client error with HTTP 400;
a 5xx never carries the exception's message to the caller (``server.errormap``).
"""

from __future__ import annotations


class HatchwayError(Exception):
    """Root of every error Hatchway raises on purpose.

    ``code`` is a stable machine-readable name (the AWS error type where one exists) and
    ``status`` the HTTP status of an API response carrying this error.
    """

    code: str = "InternalServerError"
    status: int = 500

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(HatchwayError):
    """Invalid local configuration, profile or command-line input."""

    code = "ValidationException"
    status = 400


class ValidationError(HatchwayError):
    """An API request whose parameters break the operation's rules."""

    code = "ValidationException"
    status = 400


class SerializationError(ValidationError):
    """The request body is not the JSON object the protocol requires."""

    code = "SerializationException"


class UnknownOperation(ValidationError):
    """``X-Amz-Target`` names no operation this server implements."""

    code = "UnknownOperationException"


class InvalidNextToken(ValidationError):
    """A pagination token this server did not issue."""

    code = "InvalidNextToken"


class InvalidMarker(ValidationError):
    """A KMS listing's ``Marker`` this server did not issue."""

    code = "InvalidMarkerException"


class InvalidFilterKey(ValidationError):
    """A filter key the operation does not support."""

    code = "InvalidFilterKey"


class RequestTooLarge(ValidationError):
    """The request body exceeds the configured limit."""

    code = "RequestEntityTooLargeException"
    status = 413


class MalformedPolicyDocument(ValidationError):
    """A policy document that is not valid IAM policy JSON (the message names the path)."""

    code = "MalformedPolicyDocumentException"


class PasswordPolicyViolation(ValidationError):
    """A password that breaks the password policy (too short)."""

    code = "PasswordPolicyViolationException"


class InvalidCiphertext(ValidationError):
    """A KMS ciphertext that is malformed, was altered, or whose encryption context differs."""

    code = "InvalidCiphertextException"


class IncorrectKey(ValidationError):
    """Decrypt named a KMS key other than the one the ciphertext was encrypted under."""

    code = "IncorrectKeyException"


class InvalidParameter(ValidationError):
    """A CloudWatch Logs request parameter that is not valid (``InvalidParameterException``)."""

    code = "InvalidParameterException"


class InvalidDocumentContent(ValidationError):
    """A session document that breaks AWS's session-document schema (the message names the
    field path and what is wrong)."""

    code = "InvalidDocumentContent"


class InvalidDocumentSchemaVersion(ValidationError):
    """A document's ``schemaVersion`` that session documents do not have (only ``1.0``)."""

    code = "InvalidDocumentSchemaVersion"


class InvalidDocumentVersion(ValidationError):
    """A document version that does not exist, or that the operation cannot act on."""

    code = "InvalidDocumentVersion"


class InvalidDocumentOperation(ValidationError):
    """An operation the document does not allow (the built-in AWS documents are read-only)."""

    code = "InvalidDocumentOperation"


class DuplicateDocumentContent(ValidationError):
    """An update whose content equals a version the document has already."""

    code = "DuplicateDocumentContent"


class MaxDocumentSizeExceeded(ValidationError):
    """Document content beyond the size limit."""

    code = "MaxDocumentSizeExceeded"


class ProtocolError(HatchwayError):
    """The wire protocol was broken."""

    code = "ProtocolError"
    status = 400


class LocalProtocolError(ProtocolError):
    """We attempted something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a malformed or illegal frame or message."""


class PayloadAuthenticationError(RemoteProtocolError):
    """A payload of an end-to-end encrypted session did not authenticate: altered on the way,
    sealed under another key or for the other direction, or cut (docs/protocol.md §7.9)."""


class ChannelClosed(HatchwayError):
    """The channel or session has closed."""

    code = "ChannelClosed"
    status = 400


class AuthError(HatchwayError):
    """Authentication failed: unknown key, expired or revoked token, refused identity."""

    code = "UnrecognizedClientException"
    status = 400


class MissingAuthenticationToken(AuthError):
    """The request carries no ``Authorization`` header."""

    code = "MissingAuthenticationTokenException"


class IncompleteSignature(AuthError):
    """The ``Authorization`` header or ``X-Amz-Date`` is malformed or incomplete."""

    code = "IncompleteSignatureException"


class InvalidSignature(AuthError):
    """The signature does not match, is stale, or is scoped wrongly."""

    code = "InvalidSignatureException"


class InvalidActivation(AuthError):
    """The activation id or code is not valid (the two are never told apart)."""

    code = "InvalidActivation"


class AccessDenied(HatchwayError):
    """The principal is authenticated but not allowed to do this.

    ``decision`` is the authorizer's decision that refused it (``hatchway.policy.Decision``),
    when a policy evaluation did: the audit trail records it.
    """

    code = "AccessDeniedException"
    status = 400
    decision: object | None = None


class NotFound(HatchwayError):
    """The named resource does not exist."""

    code = "DoesNotExistException"
    status = 400


class InvalidDocument(NotFound):
    """The session document does not exist or cannot be run here."""

    code = "InvalidDocument"


class InvalidInstanceId(NotFound):
    """The managed node does not exist."""

    code = "InvalidInstanceId"


class InvalidActivationId(NotFound):
    """The activation does not exist."""

    code = "InvalidActivationId"


class InvalidResourceId(NotFound):
    """The resource named by a tag operation does not exist."""

    code = "InvalidResourceId"


class InvalidResourceType(NotFound):
    """A tag operation names a resource type this server does not tag."""

    code = "InvalidResourceType"


class NoSuchEntity(NotFound):
    """An IAM entity (user, group, access key, policy, policy version) does not exist."""

    code = "NoSuchEntityException"


class KeyNotFound(NotFound):
    """A KMS key or alias that does not exist (KMS's ``NotFoundException``)."""

    code = "NotFoundException"


class ResourceNotFound(NotFound):
    """A log group or log stream that does not exist (CloudWatch Logs' error type)."""

    code = "ResourceNotFoundException"


class Conflict(HatchwayError):
    """The request conflicts with the current state of a resource."""

    code = "ConflictException"
    status = 400


class EntityAlreadyExists(Conflict):
    """An IAM entity with this name (or ARN) exists already."""

    code = "EntityAlreadyExistsException"


class DeleteConflict(Conflict):
    """The IAM entity is still in use (keys, members, attachments) and cannot be deleted."""

    code = "DeleteConflictException"


class UnmodifiableEntity(Conflict):
    """A built-in IAM entity (a Hatchway-managed policy) cannot be changed or deleted."""

    code = "UnmodifiableEntityException"


class AlreadyExists(Conflict):
    """A KMS alias of this name exists already."""

    code = "AlreadyExistsException"


class KeyDisabled(Conflict):
    """The KMS key is disabled: it cannot encrypt or decrypt until it is enabled again."""

    code = "DisabledException"


class KeyInvalidState(Conflict):
    """The KMS key's state does not allow the operation (pending deletion, say)."""

    code = "KMSInvalidStateException"


class ResourceAlreadyExists(Conflict):
    """A log group of this name exists already (CloudWatch Logs' error type)."""

    code = "ResourceAlreadyExistsException"


class DocumentAlreadyExists(Conflict):
    """A document with this name exists already."""

    code = "DocumentAlreadyExists"


class LimitExceeded(HatchwayError):
    """An IAM quota would be exceeded (access keys per user, policy versions, ...)."""

    code = "LimitExceededException"
    status = 400


class TooManyTags(LimitExceeded):
    """A resource would carry more tags than SSM allows (50)."""

    code = "TooManyTagsError"


class DocumentVersionLimitExceeded(LimitExceeded):
    """The document has the most versions a document may have."""

    code = "DocumentVersionLimitExceeded"


class Throttled(HatchwayError):
    """Too many requests or failed attempts from this caller; retry later."""

    code = "ThrottlingException"
    status = 400


class Unavailable(HatchwayError):
    """A peer or service is unreachable or not connected."""

    code = "ServiceUnavailable"
    status = 400


class TargetNotConnected(Unavailable):
    """The managed node is not connected to this server."""

    code = "TargetNotConnected"


class StoreError(HatchwayError):
    """The database failed."""

    code = "InternalServerError"
    status = 500


class CorruptData(StoreError):
    """Stored data (an encrypted secret, a hash) cannot be used: a server-side fault."""
