"""The data-channel handshake (docs/protocol.md §7) and Hatchway's ``HatchwayExtensions`` action.

The agent sends a :class:`HandshakeRequest` (SessionType first, then KMSEncryption when the
session is encrypted end to end, then our extensions offer), the client answers with a
:class:`HandshakeResponse`, and the agent finishes with a :class:`HandshakeComplete` (after the
encryption challenge of ``protocol.encryption``, if encrypted). AWS's plugin answers an
unknown action with ActionStatus 0 and ActionResult 3 (§7.4); we read that, like any
non-success, as "no extensions" and fall back to AWS behaviour. Our extension is specified in
docs/protocol.md §7.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.encryption import KmsEncryptionRequest, KmsEncryptionResult
from hatchway.protocol.gojson import UINT32_MAX, JsonObject, dumps, loads_object

__all__ = [
    "AGENT_VERSION",
    "CLIENT_VERSION",
    "HATCHWAY_MAX_PAYLOAD",
    "HATCHWAY_STREAM_WINDOW",
    "ActionStatus",
    "ActionType",
    "Extensions",
    "HandshakeComplete",
    "HandshakeRequest",
    "HandshakeResponse",
    "ProcessedClientAction",
    "RequestedClientAction",
    "SessionType",
    "answer_request",
    "build_request",
    "kms_request_of",
    "kms_result_of",
    "negotiated_from_response",
    "peer_is_hatchway",
    "response_failed",
]

#: Versions we announce: 4-part and above every threshold in docs/protocol.md §7.7, so AWS's plugin
#: and agent pick mux and disable smux keepalives. Not Hatchway's release version.
AGENT_VERSION: Final = "3.3.1802.0"
CLIENT_VERSION: Final = "1.2.700.0"
#: The largest stream payload Hatchway offers or accepts (docs/protocol.md §7.6).
HATCHWAY_MAX_PAYLOAD: Final = 262144
#: The per-stream receive window Hatchway offers for multiplexed port sessions: smux v2 credit,
#: and so the most a stream's receiver holds unconsumed (docs/protocol.md §7.6, §8.5).
HATCHWAY_STREAM_WINDOW: Final = 1 << 20
#: The largest ``StreamWindow`` accepted (smux v2 counts in uint32; half of that keeps the
#: modular arithmetic unambiguous).
MAX_STREAM_WINDOW: Final = (1 << 31) - 1

_KMS_UNSUPPORTED: Final = "KMS encryption is not supported"


class ActionType(StrEnum):
    """``ActionType`` values of requested/processed client actions (docs/protocol.md §7.3)."""

    SESSION_TYPE = "SessionType"
    KMS_ENCRYPTION = "KMSEncryption"
    HATCHWAY_EXTENSIONS = "HatchwayExtensions"


class ActionStatus(IntEnum):
    """``ActionStatus`` values (docs/protocol.md §7.4). AWS's plugin also sends 0 for unknown
    actions."""

    SUCCESS = 1
    FAILED = 2
    UNSUPPORTED = 3


class SessionType(StrEnum):
    """Session types a document can name (docs/protocol.md §7.3, §8)."""

    STANDARD_STREAM = "Standard_Stream"
    INTERACTIVE_COMMANDS = "InteractiveCommands"
    NON_INTERACTIVE_COMMANDS = "NonInteractiveCommands"
    PORT = "Port"


_SESSION_TYPES: Final = frozenset(t.value for t in SessionType)


@dataclass(frozen=True, slots=True)
class Extensions:
    """What Hatchway's extension negotiated; the defaults are plain AWS behaviour.

    Attributes:
        max_payload_size: largest stream payload either side may send (AWS: 1024, §7.6).
        exit_code: whether the agent sends ``PayloadType.EXIT_CODE`` for shell sessions.
        no_payload_digest: stream frames carry no SHA-256 PayloadDigest (zeros) and are not
            checked for one: TLS protects every hop, and the digest costs a hash of every byte
            at both ends (§7.6).
        stream_window: multiplexed port sessions speak smux v2 with this per-stream window
            (bytes); 0: smux v1 without per-stream flow control, as AWS's ends (§8.5).
    """

    max_payload_size: int = 1024
    exit_code: bool = False
    no_payload_digest: bool = False
    stream_window: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ActionParameters/ActionResult object of a HatchwayExtensions action."""
        out: dict[str, Any] = {"MaxPayloadSize": self.max_payload_size, "ExitCode": self.exit_code}
        if self.no_payload_digest:
            out["NoPayloadDigest"] = True
        if self.stream_window:
            out["StreamWindow"] = self.stream_window
        return out

    def agreed(self, other: Extensions) -> Extensions:
        """What both sides support: the smaller payload, the features both offer."""
        return Extensions(
            max_payload_size=min(self.max_payload_size, other.max_payload_size),
            exit_code=self.exit_code and other.exit_code,
            no_payload_digest=self.no_payload_digest and other.no_payload_digest,
            stream_window=(
                min(self.stream_window, other.stream_window)
                if self.stream_window and other.stream_window
                else 0
            ),
        )

    @classmethod
    def from_dict(cls, value: Any) -> Extensions:
        """Parse ActionParameters/ActionResult of a HatchwayExtensions action.

        Raises:
            RemoteProtocolError: not an object with a positive ``MaxPayloadSize``.
        """
        if not isinstance(value, dict):
            raise RemoteProtocolError("HatchwayExtensions: expected an object")
        obj = JsonObject(value, "HatchwayExtensions")
        return cls(
            max_payload_size=obj.get_int("MaxPayloadSize", low=1, high=UINT32_MAX),
            exit_code=obj.get_bool("ExitCode", False),
            no_payload_digest=obj.get_bool("NoPayloadDigest", False),
            stream_window=obj.get_int("StreamWindow", 0, low=0, high=MAX_STREAM_WINDOW),
        )


@dataclass(frozen=True, slots=True)
class RequestedClientAction:
    """One ``{ActionType, ActionParameters}`` entry of a HandshakeRequest."""

    action_type: str
    action_parameters: Any

    def to_dict(self) -> dict[str, Any]:
        return {"ActionType": self.action_type, "ActionParameters": self.action_parameters}


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """``PayloadType.HANDSHAKE_REQUEST``, agent → client (docs/protocol.md §7.3)."""

    agent_version: str
    requested_client_actions: tuple[RequestedClientAction, ...]

    def to_json(self) -> bytes:
        return dumps(
            {
                "AgentVersion": self.agent_version,
                "RequestedClientActions": [a.to_dict() for a in self.requested_client_actions],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeRequest:
        obj = loads_object(data, "HandshakeRequest")
        actions = []
        for item in obj.get_list("RequestedClientActions") or []:
            if not isinstance(item, dict):
                raise RemoteProtocolError("HandshakeRequest: an action is not an object")
            action = JsonObject(item, "HandshakeRequest action")
            actions.append(
                RequestedClientAction(
                    action_type=action.get_str("ActionType"),
                    action_parameters=action.get_any("ActionParameters"),
                )
            )
        return cls(
            agent_version=obj.get_str("AgentVersion"), requested_client_actions=tuple(actions)
        )


@dataclass(frozen=True, slots=True)
class ProcessedClientAction:
    """One ``{ActionType, ActionStatus, ActionResult, Error}`` entry of a HandshakeResponse."""

    action_type: str
    action_status: int
    action_result: Any
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ActionType": self.action_type,
            "ActionStatus": self.action_status,
            "ActionResult": self.action_result,
            "Error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """``PayloadType.HANDSHAKE_RESPONSE``, client → agent (docs/protocol.md §7.4)."""

    client_version: str
    processed_client_actions: tuple[ProcessedClientAction, ...]
    errors: tuple[str, ...] | None = None

    def to_json(self) -> bytes:
        return dumps(
            {
                "ClientVersion": self.client_version,
                "ProcessedClientActions": [a.to_dict() for a in self.processed_client_actions],
                "Errors": None if self.errors is None else list(self.errors),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeResponse:
        obj = loads_object(data, "HandshakeResponse")
        actions = []
        for item in obj.get_list("ProcessedClientActions") or []:
            if not isinstance(item, dict):
                raise RemoteProtocolError("HandshakeResponse: an action is not an object")
            action = JsonObject(item, "HandshakeResponse action")
            actions.append(
                ProcessedClientAction(
                    action_type=action.get_str("ActionType"),
                    action_status=action.get_int("ActionStatus", 0),
                    action_result=action.get_any("ActionResult"),
                    error=action.get_str("Error", ""),
                )
            )
        raw_errors = obj.get_list("Errors")
        errors: tuple[str, ...] | None = None
        if raw_errors is not None:
            if not all(isinstance(e, str) for e in raw_errors):
                raise RemoteProtocolError("HandshakeResponse: field Errors must hold strings")
            errors = tuple(raw_errors)
        return cls(
            client_version=obj.get_str("ClientVersion"),
            processed_client_actions=tuple(actions),
            errors=errors,
        )


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """``PayloadType.HANDSHAKE_COMPLETE``, agent → client (docs/protocol.md §7.5)."""

    handshake_time_to_complete_ns: int
    customer_message: str = ""

    def to_json(self) -> bytes:
        return dumps(
            {
                "HandshakeTimeToComplete": self.handshake_time_to_complete_ns,
                "CustomerMessage": self.customer_message,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeComplete:
        obj = loads_object(data, "HandshakeComplete")
        return cls(
            handshake_time_to_complete_ns=obj.get_int("HandshakeTimeToComplete", 0),
            customer_message=obj.get_str("CustomerMessage", ""),
        )


def build_request(
    session_type: str,
    properties: Any,
    offer: Extensions,
    *,
    agent_version: str = AGENT_VERSION,
    kms: KmsEncryptionRequest | None = None,
) -> HandshakeRequest:
    """The agent's HandshakeRequest: SessionType first (§7.3), then KMSEncryption if ``kms``
    (as AWS's agent orders them, §7.9), then our extensions offer.

    ``properties`` are the document's properties for Port and ``None`` for shells (§7.3).
    """
    actions = [
        RequestedClientAction(
            ActionType.SESSION_TYPE.value,
            {"SessionType": str(session_type), "Properties": properties},
        )
    ]
    if kms is not None:
        actions.append(RequestedClientAction(ActionType.KMS_ENCRYPTION.value, kms.to_dict()))
    actions.append(RequestedClientAction(ActionType.HATCHWAY_EXTENSIONS.value, offer.to_dict()))
    return HandshakeRequest(agent_version=agent_version, requested_client_actions=tuple(actions))


def kms_request_of(req: HandshakeRequest) -> KmsEncryptionRequest | None:
    """The request's KMSEncryption action, if it has one (the client must then encrypt).

    Raises:
        RemoteProtocolError: the action's parameters are malformed.
    """
    for action in req.requested_client_actions:
        if action.action_type == ActionType.KMS_ENCRYPTION:
            return KmsEncryptionRequest.from_dict(action.action_parameters)
    return None


def _session_type_of(params: Any) -> tuple[str, Any]:
    if not isinstance(params, dict):
        raise RemoteProtocolError("SessionType action parameters must be an object")
    obj = JsonObject(params, "SessionType action")
    return obj.get_str("SessionType"), obj.get_any("Properties")


def answer_request(
    req: HandshakeRequest,
    *,
    client_version: str = CLIENT_VERSION,
    supported: Extensions,
    kms: KmsEncryptionResult | str | None = None,
) -> tuple[HandshakeResponse, str, Any, Extensions]:
    """Answer a HandshakeRequest on the client side.

    Returns the response to send, the session type and properties from the SessionType action,
    and the negotiated extensions (smaller payload size, AND of the booleans; AWS defaults when
    the agent offered none). Unknown actions are answered UNSUPPORTED. KMSEncryption is
    answered SUCCESS with ``kms`` when it is the wrapped data key the client got
    (docs/protocol.md §7.9), FAILED with ``kms`` as the error when it is text (the client could
    not get a data key), and FAILED "not supported" without it (a client that does not
    encrypt, such as the web console's bridge). An unknown session type is answered FAILED and
    still returned; see :func:`response_failed`.

    Raises:
        RemoteProtocolError: no SessionType action, or its parameters are malformed.
    """
    processed: list[ProcessedClientAction] = []
    errors: list[str] = []
    session: tuple[str, Any] | None = None
    negotiated = Extensions()
    for action in req.requested_client_actions:
        kind = action.action_type
        if kind == ActionType.SESSION_TYPE:
            session = _session_type_of(action.action_parameters)
            if session[0] in _SESSION_TYPES:
                processed.append(ProcessedClientAction(kind, ActionStatus.SUCCESS, None))
            else:
                error = f"unknown session type {session[0]!r}"
                errors.append(error)
                processed.append(ProcessedClientAction(kind, ActionStatus.FAILED, None, error))
        elif kind == ActionType.HATCHWAY_EXTENSIONS:
            try:
                offer = Extensions.from_dict(action.action_parameters)
            except RemoteProtocolError as exc:
                errors.append(exc.message)
                processed.append(
                    ProcessedClientAction(kind, ActionStatus.FAILED, None, exc.message)
                )
                continue
            negotiated = offer.agreed(supported)
            processed.append(
                ProcessedClientAction(kind, ActionStatus.SUCCESS, negotiated.to_dict())
            )
        elif kind == ActionType.KMS_ENCRYPTION:
            if isinstance(kms, KmsEncryptionResult):
                processed.append(ProcessedClientAction(kind, ActionStatus.SUCCESS, kms.to_dict()))
                continue
            error = kms if kms else _KMS_UNSUPPORTED
            errors.append(error)
            processed.append(ProcessedClientAction(kind, ActionStatus.FAILED, None, error))
        else:
            processed.append(
                ProcessedClientAction(
                    kind, ActionStatus.UNSUPPORTED, None, f"unsupported action type {kind!r}"
                )
            )
    if session is None:
        raise RemoteProtocolError("HandshakeRequest has no SessionType action")
    response = HandshakeResponse(
        client_version=client_version,
        processed_client_actions=tuple(processed),
        errors=tuple(errors) if errors else None,
    )
    return response, session[0], session[1], negotiated


def _find(resp: HandshakeResponse, kind: ActionType) -> ProcessedClientAction | None:
    for action in resp.processed_client_actions:
        if action.action_type == kind:
            return action
    return None


def negotiated_from_response(
    resp: HandshakeResponse, *, offer: Extensions | None = None
) -> Extensions:
    """The extensions the client accepted, on the agent side.

    Only a HatchwayExtensions action with status SUCCESS and a well-formed ActionResult counts;
    anything else, including AWS's status 0 / ActionResult 3 (§7.4), gives ``Extensions()``. When
    ``offer`` is given, a result above the offer is clamped to it.
    """
    action = _find(resp, ActionType.HATCHWAY_EXTENSIONS)
    if action is None or action.action_status != ActionStatus.SUCCESS:
        return Extensions()
    try:
        result = Extensions.from_dict(action.action_result)
    except RemoteProtocolError:
        return Extensions()
    if offer is not None:
        result = result.agreed(offer)
    return result


def kms_result_of(resp: HandshakeResponse) -> KmsEncryptionResult:
    """The wrapped data key of the client's KMSEncryption answer (agent side, §7.9).

    Raises:
        RemoteProtocolError: the client did not answer the action, answered it with a failure
            (its error text is in the message: e.g. it was not allowed kms:GenerateDataKey),
            or with a malformed result.
    """
    action = _find(resp, ActionType.KMS_ENCRYPTION)
    if action is None:
        raise RemoteProtocolError("the client did not answer the KMSEncryption action")
    if action.action_status != ActionStatus.SUCCESS:
        why = action.error or f"status {action.action_status}"
        raise RemoteProtocolError(f"the client could not set up KMS encryption: {why}")
    return KmsEncryptionResult.from_dict(action.action_result)


def peer_is_hatchway(resp: HandshakeResponse) -> bool:
    """Whether the client accepted Hatchway's extensions (a successful, well-formed
    HatchwayExtensions action). False for AWS's session-manager-plugin, which answers the
    action with status 0 (§7.4): its acknowledgements are then read cumulatively, because it
    drops a duplicate frame without acknowledging it (docs/protocol.md §6.3, §6.6)."""
    action = _find(resp, ActionType.HATCHWAY_EXTENSIONS)
    if action is None or action.action_status != ActionStatus.SUCCESS:
        return False
    try:
        Extensions.from_dict(action.action_result)
    except RemoteProtocolError:
        return False
    return True


def response_failed(resp: HandshakeResponse) -> str | None:
    """Why the session cannot start, or ``None`` if the SessionType action succeeded (§7.2)."""
    action = _find(resp, ActionType.SESSION_TYPE)
    if action is None:
        return "the client did not process the SessionType action"
    if action.action_status == ActionStatus.SUCCESS:
        return None
    return action.error or f"the SessionType action failed with status {action.action_status}"
