"""Audit events: typed records with stable codes (docs/design.md, "Audit trail").

An event says who (:class:`Identity`), from where (source IP, user agent), did what (event
name, the policy action, the resources), with which parameters (secrets redacted), what the
authorizer decided and why (:class:`DecisionRecord`), and how it ended (error code). Its JSON
form (:meth:`AuditEvent.to_json`) follows CloudTrail's record fields (``eventTime``,
``eventSource``, ``eventName``, ``userIdentity``, ``sourceIPAddress``, …) so tools that read
CloudTrail read it too; ``eventCode`` is Hatchway's stable code for the kind of event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

EVENT_VERSION: Final = "1.0"
"""Version of the record's JSON form; a change to the fields bumps it."""

SSM_SOURCE: Final = "ssm.amazonaws.com"
"""``eventSource`` of the SSM operations (CloudTrail's name for the service)."""
HATCHWAY_SOURCE: Final = "hatchway"
"""``eventSource`` of Hatchway's own operations and of the server's own events."""


class EventCode(StrEnum):
    """Stable codes of the kinds of audit events (never renumbered; new kinds get new codes).

    ``HWA`` API calls, ``HWS`` session lifecycle, ``HWN`` nodes, ``HWI`` IAM changes, ``HWT``
    the trail itself.
    """

    API_CALL = "HWA001"
    """An API call that succeeded."""
    API_CALL_FAILED = "HWA002"
    """An API call that was authorized (or anonymous) and then failed."""
    ACCESS_DENIED = "HWA003"
    """An API call the policies refused."""
    AUTHENTICATION_FAILED = "HWA004"
    """An API call whose signature or key did not check out."""
    SESSION_STARTED = "HWS001"
    SESSION_ENDED = "HWS002"
    """The session's shell or command ended on the node."""
    SESSION_TERMINATED = "HWS003"
    """The session was ended by someone or something else (TerminateSession, revoked
    access, a time-out, the node going away)."""
    SESSION_FAILED = "HWS004"
    NODE_REGISTERED = "HWN001"
    NODE_DEREGISTERED = "HWN002"
    IAM_CHANGED = "HWI001"
    """A successful call that changed users, groups, keys, policies or attachments."""
    TRAIL_PRUNED = "HWT001"
    """Records older than the retention were deleted from the trail's start."""


class EventType(StrEnum):
    """CloudTrail's ``eventType``: a caller's request, or something the service did."""

    API_CALL = "AwsApiCall"
    SERVICE_EVENT = "AwsServiceEvent"


class IdentityType(StrEnum):
    USER = "User"
    NODE = "Node"
    ANONYMOUS = "Anonymous"
    SERVICE = "Service"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who: a user (via one of its access keys), a node, an anonymous caller or the server."""

    type: IdentityType
    arn: str = ""
    user_name: str = ""
    access_key_id: str = ""
    node_id: str = ""

    @property
    def name(self) -> str:
        """What ``Username`` filters match: the user name, else the node id."""
        return self.user_name or self.node_id

    def to_json(self) -> dict[str, str]:
        out = {"type": self.type.value}
        for key, value in (
            ("arn", self.arn),
            ("userName", self.user_name),
            ("accessKeyId", self.access_key_id),
            ("nodeId", self.node_id),
        ):
            if value:
                out[key] = value
        return out


SERVICE_IDENTITY: Final = Identity(IdentityType.SERVICE, user_name="hatchway")
"""The server itself (time-outs, an agent's report, a server restart)."""


@dataclass(frozen=True, slots=True)
class AuditResource:
    """A resource an event concerns, as CloudTrail's ``resources`` list has them: its type
    (``AWS::SSM::ManagedInstance``), its name (``mi-…``, a user name) and its ARN."""

    type: str
    name: str
    arn: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"type": self.type, "name": self.name}
        if self.arn:
            out["arn"] = self.arn
        return out


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What the authorizer decided and the statement that decided it (none for an implicit
    deny): IAM's ``EvalDecision`` values."""

    outcome: str  # "allowed", "explicitDeny", "implicitDeny"
    policy: str | None = None
    statement: str | None = None
    explanation: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome}
        if self.policy is not None:
            out["policy"] = self.policy
        if self.statement is not None:
            out["statement"] = self.statement
        if self.explanation:
            out["explanation"] = self.explanation
        return out


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event, before it joins the chain.

    Attributes:
        event_id: a UUID, unique in the trail.
        event_time: when it happened (Unix seconds; recorded to the millisecond).
        code: its kind (stable).
        event_name: the operation (``StartSession``) or the service event (``SessionEnded``).
        event_source: ``ssm.amazonaws.com`` for SSM operations, else ``hatchway``.
        action: the policy action checked (``ssm:StartSession``), if any.
        read_only: the call only reads (CloudTrail's ``readOnly``).
        identity: who.
        source_ip, user_agent, request_id: of the API request, if there was one.
        resources: what it concerns.
        request_parameters: the request's members, secrets already redacted (``redact``).
        decision: the authorizer's answer, when one was asked.
        error_code, error_message: how it failed, if it did.
        details: facts of a service event (a session's status, exit code, reason…).
    """

    event_id: str
    event_time: float
    code: EventCode
    event_name: str
    event_source: str
    identity: Identity
    action: str = ""
    read_only: bool = False
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""
    resources: Sequence[AuditResource] = ()
    request_parameters: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    decision: DecisionRecord | None = None
    error_code: str = ""
    error_message: str = ""
    details: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @property
    def event_type(self) -> EventType:
        return EventType.API_CALL if self.request_id else EventType.SERVICE_EVENT

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON object that is hashed into the chain (CloudTrail's names)."""
        out: dict[str, Any] = {
            "eventVersion": EVENT_VERSION,
            "eventId": self.event_id,
            "eventTime": format_time(self.event_time),
            "eventCode": self.code.value,
            "eventType": self.event_type.value,
            "eventSource": self.event_source,
            "eventName": self.event_name,
            "readOnly": self.read_only,
            "userIdentity": self.identity.to_json(),
            "resources": [r.to_json() for r in self.resources],
        }
        optional: tuple[tuple[str, Any], ...] = (
            ("action", self.action),
            ("sourceIPAddress", self.source_ip),
            ("userAgent", self.user_agent),
            ("requestId", self.request_id),
            ("requestParameters", dict(self.request_parameters)),
            ("decision", self.decision.to_json() if self.decision else None),
            ("errorCode", self.error_code),
            ("errorMessage", self.error_message),
            ("additionalEventData", dict(self.details)),
        )
        for key, value in optional:
            if value:
                out[key] = value
        return out


def format_time(epoch: float) -> str:
    """``2026-11-30T16:20:01.123Z``: CloudTrail's form, to the millisecond, always UTC."""
    moment = datetime.fromtimestamp(round(epoch, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """The inverse of :func:`format_time` (any ISO 8601 time with an offset or ``Z``).

    Raises:
        ValueError: not such a time.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    return moment.timestamp()
