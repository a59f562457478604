"""Frame payloads: the JSON documents and small binary encodings carried inside frames.

Each JSON payload is a frozen dataclass with ``to_json()`` (compact, Go field names and order as
in docs/protocol.md §1.3, ``None`` → ``null``) and ``from_json()`` (Go-style case-insensitive
keys; raises :class:`~hatchway.errors.RemoteProtocolError` for bad JSON, missing or mistyped
fields). Fields that Go peers always send are required; the rest fall back to their defaults
when absent.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.frames import FlagValue, MessageType
from hatchway.protocol.gojson import UINT32_MAX, dumps, loads_object

__all__ = [
    "AcknowledgeContent",
    "AgentHeartbeat",
    "AgentSessionState",
    "AgentTaskAcknowledge",
    "AgentTaskComplete",
    "AgentTaskPayload",
    "ChannelClosedPayload",
    "MGSPayload",
    "NoticeKind",
    "NoticePayload",
    "OpenDataChannelInput",
    "SizePayload",
    "decode_exit_code",
    "decode_flag",
    "encode_exit_code",
    "encode_flag",
]


@dataclass(frozen=True, slots=True)
class AcknowledgeContent:
    """Payload of an ``acknowledge`` frame (docs/protocol.md §6.2; exact bytes in §4.5)."""

    acknowledged_message_type: str
    acknowledged_message_id: str
    acknowledged_sequence_number: int
    is_sequential_message: bool = True

    def to_json(self) -> bytes:
        return dumps(
            {
                "AcknowledgedMessageType": self.acknowledged_message_type,
                "AcknowledgedMessageId": self.acknowledged_message_id,
                "AcknowledgedMessageSequenceNumber": self.acknowledged_sequence_number,
                "IsSequentialMessage": self.is_sequential_message,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AcknowledgeContent:
        obj = loads_object(data, "acknowledge payload")
        return cls(
            acknowledged_message_type=obj.get_str("AcknowledgedMessageType"),
            acknowledged_message_id=obj.get_str("AcknowledgedMessageId", ""),
            acknowledged_sequence_number=obj.get_int("AcknowledgedMessageSequenceNumber"),
            is_sequential_message=obj.get_bool("IsSequentialMessage", True),
        )


@dataclass(frozen=True, slots=True)
class ChannelClosedPayload:
    """Payload of ``channel_closed`` on either channel (docs/protocol.md §9.1).

    Only ``SessionId`` is required on input: it is all the Go peers read besides ``Output``.
    """

    message_id: str
    created_date: str
    destination_id: str
    session_id: str
    output: str = ""
    message_type: str = MessageType.CHANNEL_CLOSED.value
    schema_version: int = 1

    def to_json(self) -> bytes:
        return dumps(
            {
                "MessageId": self.message_id,
                "CreatedDate": self.created_date,
                "DestinationId": self.destination_id,
                "SessionId": self.session_id,
                "MessageType": self.message_type,
                "SchemaVersion": self.schema_version,
                "Output": self.output,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ChannelClosedPayload:
        obj = loads_object(data, "channel_closed payload")
        return cls(
            message_id=obj.get_str("MessageId", ""),
            created_date=obj.get_str("CreatedDate", ""),
            destination_id=obj.get_str("DestinationId", ""),
            session_id=obj.get_str("SessionId"),
            output=obj.get_str("Output", ""),
            message_type=obj.get_str("MessageType", MessageType.CHANNEL_CLOSED.value),
            schema_version=obj.get_int("SchemaVersion", 1),
        )


@dataclass(frozen=True, slots=True)
class SizePayload:
    """Terminal size, ``PayloadType.SIZE`` (docs/protocol.md §5.3): ``{"cols":80,"rows":24}``."""

    cols: int
    rows: int

    def to_json(self) -> bytes:
        return dumps({"cols": self.cols, "rows": self.rows})

    @classmethod
    def from_json(cls, data: bytes) -> SizePayload:
        obj = loads_object(data, "size payload")
        return cls(
            cols=obj.get_int("cols", low=0, high=UINT32_MAX),
            rows=obj.get_int("rows", low=0, high=UINT32_MAX),
        )


@dataclass(frozen=True, slots=True)
class AgentSessionState:
    """Payload of ``agent_session_state`` (docs/protocol.md §9.2): ``Connected`` or
    ``Terminating``."""

    session_state: str
    session_id: str
    schema_version: int = 1

    def to_json(self) -> bytes:
        return dumps(
            {
                "SchemaVersion": self.schema_version,
                "SessionState": self.session_state,
                "SessionId": self.session_id,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AgentSessionState:
        obj = loads_object(data, "agent_session_state payload")
        return cls(
            session_state=obj.get_str("SessionState"),
            session_id=obj.get_str("SessionId", ""),
            schema_version=obj.get_int("SchemaVersion", 1),
        )


@dataclass(frozen=True, slots=True)
class OpenDataChannelInput:
    """The client's first (text) WebSocket message on the data channel (docs/protocol.md §3.1).

    ``client_version=None`` omits ``ClientVersion``, as older plugins do (docs/protocol.md §3.1).
    """

    token_value: str
    request_id: str
    client_id: str
    client_version: str | None = None
    message_schema_version: str = "1.0"

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "MessageSchemaVersion": self.message_schema_version,
            "RequestId": self.request_id,
            "TokenValue": self.token_value,
            "ClientId": self.client_id,
        }
        if self.client_version is not None:
            doc["ClientVersion"] = self.client_version
        return dumps(doc)

    @classmethod
    def from_json(cls, data: bytes) -> OpenDataChannelInput:
        obj = loads_object(data, "OpenDataChannelInput")
        version = obj.get_any("ClientVersion")
        if version is not None and not isinstance(version, str):
            raise RemoteProtocolError("OpenDataChannelInput: field ClientVersion must be a string")
        return cls(
            token_value=obj.get_str("TokenValue"),
            request_id=obj.get_str("RequestId", ""),
            client_id=obj.get_str("ClientId", ""),
            client_version=version,
            message_schema_version=obj.get_str("MessageSchemaVersion", "1.0"),
        )


@dataclass(frozen=True, slots=True)
class AgentTaskPayload:
    """The session-start document inside ``MGSPayload.Content`` (docs/protocol.md §10.4)."""

    session_id: str
    document_name: str
    document_content: dict[str, Any]
    parameters: dict[str, Any]
    run_as_user: str = ""
    session_owner: str = ""
    #: The preferences' ``runAsEnabled``: ``run_as_user`` must exist on the node (the agent
    #: refuses the session rather than creating it), as AWS's agent does.
    run_as_enabled: bool = False
    #: The preferences' ``shellProfile.linux``: run by the shell before its first prompt.
    shell_profile: str = ""
    #: The preferences' ``kmsKeyId`` (as the server resolved it to a key ARN): the session is
    #: encrypted end to end under a data key of this key (docs/protocol.md §7.9); "" for none.
    kms_key_id: str = ""

    def to_json(self) -> bytes:
        return dumps(
            {
                "SessionId": self.session_id,
                "DocumentName": self.document_name,
                "DocumentContent": self.document_content,
                "Parameters": self.parameters,
                "RunAsUser": self.run_as_user,
                "SessionOwner": self.session_owner,
                "RunAsEnabled": self.run_as_enabled,
                "ShellProfile": {"linux": self.shell_profile, "windows": ""},
                "KmsKeyId": self.kms_key_id,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AgentTaskPayload:
        obj = loads_object(data, "AgentTaskPayload")
        return cls(
            session_id=obj.get_str("SessionId"),
            document_name=obj.get_str("DocumentName", ""),
            document_content=obj.get_dict("DocumentContent"),
            parameters=obj.get_dict("Parameters", {}),
            run_as_user=obj.get_str("RunAsUser", ""),
            session_owner=obj.get_str("SessionOwner", ""),
            run_as_enabled=obj.get_any("RunAsEnabled") is True,
            shell_profile=_linux_profile(obj.get_any("ShellProfile")),
            kms_key_id=obj.get_str("KmsKeyId", ""),
        )


def _linux_profile(value: Any) -> str:
    """``ShellProfile.linux`` of an AgentTaskPayload ("" when absent or not a string)."""
    if isinstance(value, dict) and isinstance(value.get("linux"), str):
        return str(value["linux"])
    return ""


@dataclass(frozen=True, slots=True)
class MGSPayload:
    """Payload of ``interactive_shell`` (docs/protocol.md §10.4); ``content`` is JSON text."""

    content: str
    task_id: str
    topic: str
    schema_version: int = 1

    def to_json(self) -> bytes:
        return dumps(
            {
                "Content": self.content,
                "TaskId": self.task_id,
                "Topic": self.topic,
                "SchemaVersion": self.schema_version,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> MGSPayload:
        obj = loads_object(data, "MGSPayload")
        return cls(
            content=obj.get_str("Content"),
            task_id=obj.get_str("TaskId", ""),
            topic=obj.get_str("Topic", ""),
            schema_version=obj.get_int("SchemaVersion", 1),
        )

    @classmethod
    def wrap(cls, task: AgentTaskPayload, topic: str, *, task_id: str | None = None) -> MGSPayload:
        """Double-encode ``task`` into ``Content`` (docs/protocol.md §10.4).

        ``task_id`` defaults to the session id (the agent treats it as opaque).
        """
        return cls(
            content=task.to_json().decode("utf-8"),
            task_id=task.session_id if task_id is None else task_id,
            topic=topic,
        )

    def unwrap_task(self) -> AgentTaskPayload:
        """Decode ``Content`` as an :class:`AgentTaskPayload`.

        Raises:
            RemoteProtocolError: ``Content`` is not a valid AgentTaskPayload.
        """
        return AgentTaskPayload.from_json(self.content.encode("utf-8", errors="replace"))


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTaskComplete:
    """Payload of ``agent_task_complete`` on the control channel (docs/protocol.md §10.5).

    Keyword-only: ``topic`` has a default but precedes required fields in the Go struct order.
    """

    task_id: str
    topic: str = MessageType.AGENT_TASK_COMPLETE.value
    final_task_status: str
    instance_id: str
    output: str = ""
    schema_version: int = 1
    is_routing_failure: bool = False
    aws_account_id: str = ""
    s3_bucket: str = ""
    s3_url_suffix: str = ""
    cwl_group: str = ""
    cwl_stream: str = ""
    retry_number: int = 0

    def to_json(self) -> bytes:
        return dumps(
            {
                "SchemaVersion": self.schema_version,
                "TaskId": self.task_id,
                "Topic": self.topic,
                "FinalTaskStatus": self.final_task_status,
                "IsRoutingFailure": self.is_routing_failure,
                "AwsAccountId": self.aws_account_id,
                "InstanceId": self.instance_id,
                "Output": self.output,
                "S3Bucket": self.s3_bucket,
                "S3UrlSuffix": self.s3_url_suffix,
                "CwlGroup": self.cwl_group,
                "CwlStream": self.cwl_stream,
                "RetryNumber": self.retry_number,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AgentTaskComplete:
        obj = loads_object(data, "agent_task_complete payload")
        return cls(
            task_id=obj.get_str("TaskId"),
            topic=obj.get_str("Topic", MessageType.AGENT_TASK_COMPLETE.value),
            final_task_status=obj.get_str("FinalTaskStatus"),
            instance_id=obj.get_str("InstanceId"),
            output=obj.get_str("Output", ""),
            schema_version=obj.get_int("SchemaVersion", 1),
            is_routing_failure=obj.get_bool("IsRoutingFailure", False),
            aws_account_id=obj.get_str("AwsAccountId", ""),
            s3_bucket=obj.get_str("S3Bucket", ""),
            s3_url_suffix=obj.get_str("S3UrlSuffix", ""),
            cwl_group=obj.get_str("CwlGroup", ""),
            cwl_stream=obj.get_str("CwlStream", ""),
            retry_number=obj.get_int("RetryNumber", 0),
        )


@dataclass(frozen=True, slots=True)
class AgentTaskAcknowledge:
    """Payload of ``agent_task_acknowledge`` (docs/protocol.md §10.5); matched on ``MessageId``."""

    message_id: str
    task_id: str
    topic: str
    schema_version: int = 1

    def to_json(self) -> bytes:
        return dumps(
            {
                "SchemaVersion": self.schema_version,
                "MessageId": self.message_id,
                "TaskId": self.task_id,
                "Topic": self.topic,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AgentTaskAcknowledge:
        obj = loads_object(data, "agent_task_acknowledge payload")
        return cls(
            message_id=obj.get_str("MessageId"),
            task_id=obj.get_str("TaskId", ""),
            topic=obj.get_str("Topic", ""),
            schema_version=obj.get_int("SchemaVersion", 1),
        )


@dataclass(frozen=True, slots=True)
class AgentHeartbeat:
    """Payload of Hatchway's ``agent_heartbeat`` control message (docs/protocol.md §10.7).

    This is the wire shape only; ``protocol.controlchannel.Heartbeat`` bounds and checks the
    fields (a node is untrusted input). ``SessionIds`` is absent from older agents' heartbeats.
    """

    hostname: str
    platform_type: str
    platform_name: str
    platform_version: str
    ip_address: str
    agent_version: str
    active_sessions: int
    session_ids: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return dumps(
            {
                "Hostname": self.hostname,
                "PlatformType": self.platform_type,
                "PlatformName": self.platform_name,
                "PlatformVersion": self.platform_version,
                "IPAddress": self.ip_address,
                "AgentVersion": self.agent_version,
                "ActiveSessions": self.active_sessions,
                "SessionIds": list(self.session_ids),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AgentHeartbeat:
        obj = loads_object(data, "agent_heartbeat payload")
        ids = obj.get_list("SessionIds") or []
        if not all(isinstance(sid, str) for sid in ids):
            raise RemoteProtocolError("agent_heartbeat payload: SessionIds must hold strings")
        return cls(
            hostname=obj.get_str("Hostname"),
            platform_type=obj.get_str("PlatformType", ""),
            platform_name=obj.get_str("PlatformName", ""),
            platform_version=obj.get_str("PlatformVersion", ""),
            ip_address=obj.get_str("IPAddress", ""),
            agent_version=obj.get_str("AgentVersion"),
            active_sessions=obj.get_int("ActiveSessions", 0, low=0, high=UINT32_MAX),
            session_ids=tuple(ids),
        )


class NoticeKind(StrEnum):
    """What a ``hatchway_notice`` says."""

    #: The node's agent went away; the session waits ``Grace`` seconds for it to come back.
    NODE_AWAY = "NodeAway"
    #: The node's agent is back; the session goes on.
    NODE_BACK = "NodeBack"
    #: The session has been idle (no input, no output) and ends soon unless that changes.
    IDLE_WARNING = "IdleWarning"
    #: The session reaches its maximum duration soon.
    MAX_DURATION_WARNING = "MaxDurationWarning"


@dataclass(frozen=True, slots=True)
class NoticePayload:
    """Payload of Hatchway's ``hatchway_notice`` (gateway → client, docs/protocol.md §9.6).

    ``message`` is for a person (the CLI prints it on stderr); ``kind`` for programs.
    Unknown kinds are kept as they are, so an older client still prints the message.
    """

    kind: str
    message: str
    grace: int | None = None

    def to_json(self) -> bytes:
        out: dict[str, object] = {"Kind": self.kind, "Message": self.message}
        if self.grace is not None:
            out["Grace"] = self.grace
        return dumps(out)

    @classmethod
    def from_json(cls, data: bytes) -> NoticePayload:
        obj = loads_object(data, "hatchway_notice payload")
        grace = obj.get_any("Grace")
        if grace is not None:
            grace = obj.get_int("Grace", low=0, high=UINT32_MAX)
        return cls(
            kind=obj.get_str("Kind")[:64],
            message=obj.get_str("Message", "")[:1024],
            grace=grace,
        )


_FLAG: Final = struct.Struct(">I")
_EXIT_CODE_RE: Final = re.compile(rb"\s*EXIT_CODE:\s*([+-]?[0-9]{1,19})\s*")


def encode_flag(flag: FlagValue) -> bytes:
    """A ``PayloadType.FLAG`` payload: 4-byte big-endian uint32 (docs/protocol.md §5.4)."""
    value = int(flag)
    if not 0 <= value <= UINT32_MAX:
        raise LocalProtocolError(f"flag value {value} does not fit in a uint32")
    return _FLAG.pack(value)


def decode_flag(payload: bytes) -> int:
    """Read a ``PayloadType.FLAG`` payload; unknown values are returned as is.

    Raises:
        RemoteProtocolError: the payload is not exactly 4 bytes.
    """
    if len(payload) != _FLAG.size:
        raise RemoteProtocolError(f"flag payload must be 4 bytes, got {len(payload)}")
    value: int = _FLAG.unpack(payload)[0]
    return value


def encode_exit_code(code: int) -> bytes:
    """A ``PayloadType.EXIT_CODE`` payload: ASCII ``EXIT_CODE: <n>`` (docs/protocol.md §7.8)."""
    return f"EXIT_CODE: {int(code)}".encode("ascii")


def decode_exit_code(payload: bytes) -> int:
    """Read a ``PayloadType.EXIT_CODE`` payload.

    Raises:
        RemoteProtocolError: the payload is not ``EXIT_CODE: <integer>``.
    """
    match = _EXIT_CODE_RE.fullmatch(payload)
    if match is None:
        raise RemoteProtocolError(f"bad exit-code payload {payload[:64]!r}")
    return int(match.group(1))
