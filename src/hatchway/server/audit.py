"""The server's audit emitter: builds audit events at its edges and hands them to the store.

* :class:`CallAudit` follows one API request through the edge (``api.Api``): who called
  (after authentication), with which parameters (after validation, secrets redacted), on what
  (the operation's resources), what the authorizer decided, and how it ended. A call that
  changes something is recorded in the transaction of its change (``store.audit``); any other
  — a read, a refusal, a failure — in a transaction of its own before the answer leaves, so no
  answer is sent for a call that is not in the trail (a failing trail fails the call).
* :class:`AuditEvents` makes the server's own events: session lifecycle, node registration and
  deregistration; their services stage them with the change they record.

Not recorded (as CloudTrail records none of them): requests refused before anyone is
authenticated for being malformed (no target, too large, not JSON), and registration attempts
refused by the per-source back-off (``Throttled``: recording them would make the cheap refusal
a database write).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from hatchway.audit.chain import canonical
from hatchway.audit.events import (
    HATCHWAY_SOURCE,
    KMS_SOURCE,
    SERVICE_IDENTITY,
    SSM_SOURCE,
    AuditEvent,
    AuditResource,
    DecisionRecord,
    EventCode,
    Identity,
    IdentityType,
    format_time,
)
from hatchway.audit.redact import redact
from hatchway.errors import AccessDenied, AuthError, HatchwayError, Throttled
from hatchway.policy import Decision
from hatchway.server.authz import Arns, Resource
from hatchway.server.principal import Principal
from hatchway.store.audit import CallState, PendingCall
from hatchway.store.records import Session, SessionStatus
from hatchway.store.store import Store

log = logging.getLogger(__name__)

MAX_PARAMETERS = 16 * 1024
"""Characters of request parameters kept in a record; larger ones are summarised."""
MAX_TEXT = 1024
"""Characters kept of a user agent or an error message."""
MESSAGES_SOURCE: Final = "ssmmessages.amazonaws.com"
"""``eventSource`` of the data- and control-channel upgrades (AWS's service for them)."""
LOGS_SOURCE: Final = "logs.amazonaws.com"
"""``eventSource`` of the log groups' operations (``Logs_20140328.*``, CloudWatch Logs')."""
READ_PREFIXES: Final = ("Get", "List", "Describe", "Lookup", "Simulate", "Verify")

# Target prefixes → CloudTrail event sources (Hatchway's own: HATCHWAY_SOURCE).
_SOURCES: Final = {
    "AmazonSSM": SSM_SOURCE,
    "TrentService": KMS_SOURCE,
    "Logs_20140328": LOGS_SOURCE,
}
# ARN resource kinds → CloudTrail resource types.
_RESOURCE_TYPES: Final = (
    (":managed-instance/", "AWS::SSM::ManagedInstance"),
    (":document/", "AWS::SSM::Document"),
    (":session/", "AWS::SSM::Session"),
    (":user/", "AWS::IAM::User"),
    (":group/", "AWS::IAM::Group"),
    (":policy/", "AWS::IAM::Policy"),
    (":key/", "AWS::KMS::Key"),
    (":alias/", "AWS::KMS::Alias"),
)


def audit_resource(resource: Resource) -> AuditResource | None:
    """An authorization resource as the trail names it (``None`` for ``*``)."""
    arn = resource.arn
    if ":log-group:" in arn:  # names may hold "/": the name is all after the marker
        stream = next((a for a in resource.arns if ":log-stream:" in a), "")
        if stream:
            return AuditResource(
                "AWS::Logs::LogStream", stream.rpartition(":log-stream:")[2], stream
            )
        return AuditResource("AWS::Logs::LogGroup", arn.partition(":log-group:")[2], arn)
    for marker, kind in _RESOURCE_TYPES:
        if marker in arn:
            return AuditResource(kind, arn.rpartition("/")[2], arn)
    return None


def decision_record(decision: Decision) -> DecisionRecord:
    return DecisionRecord(decision.outcome, decision.policy, decision.statement, decision.explain())


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parameters(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's members with secrets redacted, summarised if they are too large or not
    exactly JSON (a NaN cannot be hashed canonically)."""
    cleaned = redact(body)
    members = sorted(str(k) for k in cleaned)
    try:
        size = len(canonical(cleaned))
    except (TypeError, ValueError):
        return {"unserializable": True, "members": members}
    if size > MAX_PARAMETERS:
        return {"truncated": True, "size": size, "members": members}
    return dict(cleaned)


def claimed_key_id(authorization: str) -> str:
    """The access key id a SigV4 ``Authorization`` header names (not verified)."""
    _, _, rest = authorization.partition("Credential=")
    key = rest.partition("/")[0]
    return key[:32] if key.isalnum() else ""


class AuditEvents:
    """Makes the server's own audit events (ids, times and resource names filled in).

    Args:
        arns: this server's ARNs (resources of sessions and nodes).
        clock: the wall clock.
    """

    def __init__(self, arns: Arns, clock: Callable[[], float]) -> None:
        self.arns = arns
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def _resources(self, session: Session) -> tuple[AuditResource, ...]:
        return tuple(
            r
            for r in (
                audit_resource(self.arns.session(session.session_id)),
                audit_resource(self.arns.node(session.target)),
            )
            if r is not None
        )

    def session(
        self,
        code: EventCode,
        session: Session,
        identity: Identity = SERVICE_IDENTITY,
        *,
        status: SessionStatus | None = None,
        reason: str = "",
        exit_code: int | None = None,
    ) -> AuditEvent:
        """A session lifecycle event (``SessionStarted``, ``SessionEnded``, …)."""
        details: dict[str, Any] = {
            "sessionId": session.session_id,
            "target": session.target,
            "documentName": session.document_name,
            "owner": session.owner,
            "status": (status or session.status).value,
        }
        if reason:
            details["reason"] = _cut(reason)
        if exit_code is not None:
            details["exitCode"] = exit_code
        if session.reason and code is EventCode.SESSION_STARTED:
            details["sessionReason"] = _cut(session.reason)
        names = {
            EventCode.SESSION_STARTED: "SessionStarted",
            EventCode.SESSION_ENDED: "SessionEnded",
            EventCode.SESSION_TERMINATED: "SessionTerminated",
            EventCode.SESSION_FAILED: "SessionFailed",
        }
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._clock(),
            code=code,
            event_name=names[code],
            event_source=HATCHWAY_SOURCE,
            identity=identity,
            resources=self._resources(session),
            details=details,
        )

    def node(
        self, code: EventCode, node_id: str, identity: Identity, details: Mapping[str, Any]
    ) -> AuditEvent:
        """A node's registration or deregistration."""
        name = "NodeRegistered" if code is EventCode.NODE_REGISTERED else "NodeDeregistered"
        resource = audit_resource(self.arns.node(node_id))
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._clock(),
            code=code,
            event_name=name,
            event_source=HATCHWAY_SOURCE,
            identity=identity,
            resources=(resource,) if resource else (),
            details=dict(details),
        )

    def trail_pruned(
        self, through: int, through_hash: str, deleted: int, before: float
    ) -> AuditEvent:
        """Old records were deleted (retention): which, so that verification can check the
        trail's new start against this record."""
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._clock(),
            code=EventCode.TRAIL_PRUNED,
            event_name="AuditTrailPruned",
            event_source=HATCHWAY_SOURCE,
            identity=SERVICE_IDENTITY,
            details={
                "throughSequence": through,
                "throughHash": through_hash,
                "recordsDeleted": deleted,
                "olderThan": format_time(before),
            },
        )

    def retention_deleted(
        self,
        recordings: Sequence[Mapping[str, Any]],
        log_events: Mapping[str, int],
        failures: Sequence[str],
    ) -> AuditEvent:
        """The retention job deleted recordings and log events (``server.retention``): every
        recording (session, location) and the events deleted per log group, and what it could
        not delete (tried again at its next run)."""
        resources = tuple(
            AuditResource(
                "AWS::SSM::Session", str(r["sessionId"]), self.arns.session(str(r["sessionId"])).arn
            )
            for r in recordings
        )
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._clock(),
            code=EventCode.RETENTION_DELETED,
            event_name="RetentionDeleted",
            event_source=HATCHWAY_SOURCE,
            identity=SERVICE_IDENTITY,
            resources=resources,
            details={
                "recordingsDeleted": [dict(r) for r in recordings],
                "logEventsDeleted": dict(sorted(log_events.items())),
                "failures": list(failures),
            },
        )

    def channel_denied(
        self,
        action: str,
        identity: Identity,
        resources: Sequence[Resource],
        error: AccessDenied,
        source_ip: str,
    ) -> AuditEvent:
        """A refused WebSocket upgrade: a client whose owner may no longer run the session,
        an agent opening a channel that is not its own."""
        decision = error.decision if isinstance(error.decision, Decision) else None
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._clock(),
            code=EventCode.ACCESS_DENIED,
            event_name=action.partition(":")[2],
            event_source=MESSAGES_SOURCE,
            identity=identity,
            action=action,
            source_ip=source_ip,
            request_id=str(uuid.uuid4()),
            resources=tuple(r for r in map(audit_resource, resources) if r is not None),
            decision=decision_record(decision) if decision is not None else None,
            error_code=error.code,
            error_message=_cut(error.message),
        )


def user_identity(principal: Principal) -> Identity:
    return Identity(
        IdentityType.USER,
        arn=principal.arn,
        user_name=principal.user_name,
        access_key_id=principal.access_key_id,
    )


def node_identity(node_id: str) -> Identity:
    return Identity(IdentityType.NODE, node_id=node_id)


def owner_identity(owner_arn: str) -> Identity:
    """The user who owns a session, from its ARN."""
    return Identity(IdentityType.USER, arn=owner_arn, user_name=owner_arn.rpartition("/")[2])


class CallAudit:
    """One API request's audit event, filled in as the edge learns more (see the module
    docstring). ``finish_*`` records it unless a change already did."""

    def __init__(self, store: Store, clock: Callable[[], float], request: web.Request) -> None:
        self._store = store
        self._clock = clock
        self.request_id = str(uuid.uuid4())
        self._time = clock()
        self._source_ip = request.remote or ""
        self._user_agent = _cut(request.headers.get("User-Agent", ""))
        self._claimed_key = claimed_key_id(request.headers.get("Authorization", ""))
        self._name = ""
        self._source = ""
        self._action = ""
        self._identity = Identity(IdentityType.ANONYMOUS, access_key_id=self._claimed_key)
        self._parameters: dict[str, Any] = {}
        self._resources: tuple[AuditResource, ...] = ()
        self._decision: DecisionRecord | None = None
        self.recordable = False
        """Set once the request reached authentication (or, anonymous, was admitted)."""
        self.pending = PendingCall(lambda: self._event(None))

    def operation(self, service: str, name: str, action: str) -> None:
        self._name = name
        self._source = _SOURCES.get(service, HATCHWAY_SOURCE)
        self._action = action

    def principal(self, principal: Principal) -> None:
        self._identity = user_identity(principal)

    def node(self, node_id: str) -> None:
        """The caller is a node (its agent's signed request: kms:Decrypt of a session key)."""
        self._identity = node_identity(node_id)

    def parameters(self, body: Mapping[str, Any]) -> None:
        self._parameters = _parameters(body)

    def resources(self, resources: Sequence[Resource]) -> None:
        self._resources = tuple(r for r in map(audit_resource, resources) if r is not None)

    def decision(self, decision: Decision | None) -> None:
        self._decision = decision_record(decision) if decision is not None else None

    def _event(self, error: HatchwayError | None) -> AuditEvent:
        read_only = self._name.startswith(READ_PREFIXES)
        if error is None:
            mutating_iam = self._source == HATCHWAY_SOURCE and not read_only
            code = EventCode.IAM_CHANGED if mutating_iam else EventCode.API_CALL
        elif isinstance(error, AccessDenied):
            code = EventCode.ACCESS_DENIED
        elif isinstance(error, AuthError):
            code = EventCode.AUTHENTICATION_FAILED
        else:
            code = EventCode.API_CALL_FAILED
        details: dict[str, Any] = {}
        if error is not None and self.pending.state is CallState.WRITTEN:
            details["recordedChangeSequence"] = self.pending.sequence
        return AuditEvent(
            event_id=str(uuid.uuid4()),
            event_time=self._time,
            code=code,
            event_name=self._name,
            event_source=self._source,
            identity=self._identity,
            action=self._action,
            read_only=read_only,
            source_ip=self._source_ip,
            user_agent=self._user_agent,
            request_id=self.request_id,
            resources=self._resources,
            request_parameters=self._parameters,
            decision=self._decision,
            error_code=error.code if error is not None else "",
            error_message=_cut(_public_message(error)) if error is not None else "",
            details=details,
        )

    async def finish_ok(self) -> None:
        """The call succeeded: record it unless its change did."""
        if self.recordable and self.pending.state is not CallState.WRITTEN:
            await self._store.audit.append(self._event(None))

    async def finish_error(self, error: HatchwayError) -> None:
        """The call failed: record how (after its change's record, if it made one)."""
        if not self.recordable or isinstance(error, Throttled):
            return
        if isinstance(error, AccessDenied) and isinstance(error.decision, Decision):
            self.decision(error.decision)
        await self._store.audit.append(self._event(error))


def _public_message(error: HatchwayError) -> str:
    """What the caller was told (a server fault's text stays in the log)."""
    return error.message if error.status < 500 else "internal server error"


class CallAudits:
    """Starts the audit record of each API request (``api.Api``)."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def begin(self, request: web.Request) -> CallAudit:
        return CallAudit(self._store, self._clock, request)
