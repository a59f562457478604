"""Session operations: StartSession, ResumeSession, TerminateSession, DescribeSessions.

A session is a database row (its status is the truth), a live entry in the gateway while it
runs, and a task on the node's agent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from hatchway.audit.events import SERVICE_IDENTITY, EventCode, Identity
from hatchway.auth.tokens import hash_token, new_token
from hatchway.errors import (
    HatchwayError,
    InvalidDocument,
    InvalidFilterKey,
    NotFound,
    TargetNotConnected,
)
from hatchway.protocol.controlchannel import ConnectionReport, TaskComplete
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.payloads import AgentTaskPayload
from hatchway.server.audit import AuditEvents, node_identity, user_identity
from hatchway.server.authz import Arns
from hatchway.server.control import NodeControl
from hatchway.server.documents import DEFAULT_SHELL_DOCUMENT, parse_content, resolve
from hatchway.server.events.catalog import EventCatalog
from hatchway.server.gateway import Gateway
from hatchway.server.kms import KmsService
from hatchway.server.logstreams import LogStreamService, choose_log_group
from hatchway.server.pagination import page_request, page_response
from hatchway.server.preferences import Preferences, SessionLimits
from hatchway.server.principal import Principal
from hatchway.server.recordings import RECORDED_SESSION_TYPES, RecordingService
from hatchway.server.sessionkeys import SESSION_KEY_PREFERENCE
from hatchway.server.settings import ServerSettings
from hatchway.server.validation import parse_timestamp
from hatchway.store.records import Session, SessionConnection, SessionStatus
from hatchway.store.store import Store

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"^mi-[0-9a-f]{17}$")
#: Every session type a document can name (docs/protocol.md §8).
SUPPORTED_SESSION_TYPES = tuple(t.value for t in SessionType)
SERVER = "hatchway"
"""Who terminated a session the server itself ended (``session.terminated``'s terminatedBy)."""
RECORDED_BY = "RecordedBy"
"""Applied-preferences member: who records the session (``node`` when it is encrypted end to
end, so that only its node sees the plaintext)."""
MAX_DETAILS = 1024
"""Characters of an agent's failure message kept as the session's ``Details``."""
_FILTER_KEYS = ("InvokedAfter", "InvokedBefore", "Target", "Owner", "Status", "SessionId")


class Elsewhere(Protocol):
    """Scale-out: tells the other replicas (``server.cluster``)."""

    async def session_ended(self, session_id: str, output: str) -> None: ...

    async def node_gone(self, node_id: str) -> None: ...


class SessionService:
    """Runs the session lifecycle against the store, the control channels and the gateway."""

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        control: NodeControl,
        recordings: RecordingService | None = None,
        logs: LogStreamService | None = None,
        *,
        audit: AuditEvents | None = None,
        kms: KmsService | None = None,
    ) -> None:
        self._store = store
        self._kms = kms
        self.recordings = recordings
        self.logs = logs
        self._audit = audit or AuditEvents(Arns(settings.region, ""), clock)
        self._settings = settings
        self._clock = clock
        self._control = control
        self.gateway = Gateway(store, settings, clock, self._expired)
        self.gateway.limits_of = self._limits_of
        self._background: set[asyncio.Task[None]] = set()
        self.events = EventCatalog(clock)
        #: Scale-out: this replica's id (the relay of the sessions it starts), and what tells
        #: the other replicas of a session's end and a node's departure.
        self.replica_id = ""
        self.elsewhere: Elsewhere | None = None

    async def preferences(self) -> Preferences:
        """The Session Manager preferences now: the ``inputs`` of the preferences document's
        latest version (defaults if it is gone)."""
        head = await self._store.documents.get(DEFAULT_SHELL_DOCUMENT)
        if head is None:
            return Preferences()
        latest = await self._store.documents.version(DEFAULT_SHELL_DOCUMENT, head.latest_version)
        inputs = parse_content(latest or head).get("inputs") or {}
        return Preferences.from_inputs(inputs if isinstance(inputs, dict) else {})

    def _limits_of(self, session: Session) -> SessionLimits | None:
        """The time limits a session started with (taken in again after a restart)."""
        applied = session.preferences
        if "IdleSessionTimeout" not in applied:
            return None  # started before preferences were kept
        preferences = Preferences(
            idle_minutes=int(applied["IdleSessionTimeout"]),
            max_minutes=applied.get("MaxSessionDuration"),
        )
        return preferences.limits(self._settings.preference_minute)

    # ---- API operations -------------------------------------------------------------------

    async def start(
        self, principal: Principal, body: dict[str, Any], stream_base: str
    ) -> dict[str, Any]:
        """StartSession; ``body`` has been validated against the model (api.Api)."""
        target: str = body["Target"]
        document_name: str = body.get("DocumentName", DEFAULT_SHELL_DOCUMENT)
        reason: str = body.get("Reason", "")
        parameters: dict[str, list[str]] = body.get("Parameters", {})
        # The model allows any target up to 400 characters; this server's nodes are mi-….
        if not NODE_ID.match(target):
            raise TargetNotConnected(f"{target} is not connected.")
        document = await self._store.documents.get(document_name)
        if document is not None and document_name == DEFAULT_SHELL_DOCUMENT:
            # The preferences document applies at its latest version (server.preferences).
            document = await self._store.documents.version(document_name, document.latest_version)
        if document is None:
            raise InvalidDocument(f"Document {document_name} does not exist.")
        content = parse_content(document)
        session_type = content.get("sessionType")
        if session_type not in SUPPORTED_SESSION_TYPES:
            raise InvalidDocument(
                f"Document {document_name} has sessionType {session_type}, which is not a "
                "session type"
            )
        node = await self._store.nodes.get(target)
        if node is None or not await self._control.reachable(target):
            raise TargetNotConnected(f"{target} is not connected.")
        # Validated against the document, defaults filled in, substituted into its properties
        # (docs/protocol.md §8.6); the agent gets both.
        content, parameters = resolve(content, parameters, document_name)
        preferences = await self.preferences()
        # A port session runs no process, so it has no OS user.
        port = session_type == SessionType.PORT
        run_as = "" if port else preferences.run_as(principal.tags, principal.user_name)
        # kmsKeyId encrypts the data channel end to end, except Port sessions (as AWS):
        # docs/protocol.md §7.9. The key is named by its ARN from now on.
        e2e_key = "" if port else await self._session_key(preferences.kms_key_id)
        applied = preferences.applied(run_as)
        if e2e_key:
            applied[SESSION_KEY_PREFERENCE] = e2e_key
            if str(session_type) in RECORDED_SESSION_TYPES:
                applied[RECORDED_BY] = "node"  # agent.recording: the gateway cannot

        now = self._clock()
        session_id = f"{principal.user_name}-{secrets.token_hex(9)[:17]}"
        token = new_token()
        session = Session(
            session_id=session_id,
            target=target,
            status=SessionStatus.CONNECTING,
            start_date=now,
            end_date=None,
            document_name=document_name,
            owner=principal.arn,
            owner_id=principal.user_id,
            source_ip=principal.source_ip,
            reason=reason,
            details="",
            max_session_duration=str(preferences.max_minutes or ""),
            parameters=parameters,
            run_as=run_as,
            exit_code=None,
            bytes_in=0,
            bytes_out=0,
            preferences=applied,
            relay=self.replica_id,
        )
        started = self._audit.session(EventCode.SESSION_STARTED, session, user_identity(principal))
        await self._store.sessions.create(
            session,
            hash_token(token),
            now,
            audit=[started],
            events=self.events.session_started(session),
        )
        self.gateway.expect(
            session_id, target, preferences.limits(self._settings.preference_minute)
        )
        if self.recordings is not None and not e2e_key:
            # An encrypted session's stream is ciphertext here: the gateway records nothing
            # rather than garbage (``sessions get`` says why: _recording_summary).
            recorder = await self.recordings.begin(
                session_id,
                str(session_type),
                kms_key=preferences.kms_key_id or None,
                s3_bucket=preferences.s3_bucket,
                s3_prefix=preferences.s3_prefix,
            )
            if recorder is not None:
                self.gateway.attach_recorder(session_id, recorder)
        if self.logs is not None:
            group = choose_log_group(
                self.logs.log_group,
                {
                    "cloudWatchLogGroupName": preferences.log_group,
                    "cloudWatchStreamingEnabled": preferences.log_streaming,
                },
            )
            tap = await self.logs.begin(
                session_id,
                str(session_type),
                group,
                unreadable=unstreamed_reason(e2e_key) if e2e_key else None,
            )
            if tap is not None:
                self.gateway.attach_log_stream(session_id, tap)
        task = AgentTaskPayload(
            session_id=session_id,
            document_name=document_name,
            document_content=content,
            parameters=parameters,
            run_as_user=run_as,
            session_owner=principal.arn,
            run_as_enabled=preferences.run_as_enabled and not port,
            shell_profile=(
                preferences.shell_profile if session_type == SessionType.STANDARD_STREAM else ""
            ),
            kms_key_id=e2e_key,
        )
        try:
            await self._control.start_session(target, task)
        except TargetNotConnected:
            await self._finish(
                session_id,
                SessionStatus.FAILED,
                "target not connected",
                actor=user_identity(principal),
            )
            raise
        log.info("session %s started by %s on %s", session_id, principal.user_name, target)
        return {
            "SessionId": session_id,
            "TokenValue": token,
            "StreamUrl": self.stream_url(stream_base, session_id),
        }

    async def _session_key(self, key_ref: str) -> str:
        """The ARN of the key ``kmsKeyId`` names ("" for none). A key that cannot be found
        keeps the name it was given: the client's GenerateDataKey then fails the session
        with the key service's reason, as on AWS."""
        if not key_ref:
            return ""
        if self._kms is None:
            return key_ref
        try:
            return (await self._kms.find(key_ref)).arn
        except HatchwayError as exc:
            log.warning("kmsKeyId %s cannot be resolved: %s", key_ref, exc.message)
            return key_ref

    async def resume(
        self, principal: Principal, body: dict[str, Any], stream_base: str
    ) -> dict[str, Any]:
        session_id: str = body["SessionId"]
        session = await self._store.sessions.get(session_id)
        if session is None:
            raise NotFound(f"Session {session_id} does not exist.")
        if not session.status.is_active:
            # AWS's plugin reads an absent token as "the session has ended" (docs/protocol.md §9.4).
            return {"SessionId": session_id}
        token = new_token()
        await self._store.sessions.replace_tokens(session_id, hash_token(token), self._clock())
        return {
            "SessionId": session_id,
            "TokenValue": token,
            "StreamUrl": self.stream_url(stream_base, session_id),
        }

    async def terminate(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        session_id: str = body["SessionId"]
        session = await self._store.sessions.get(session_id)
        if session is None:
            raise NotFound(f"Session {session_id} does not exist.")
        if session.status.is_active:
            await self._finish(
                session_id,
                SessionStatus.TERMINATED,
                f"terminated by {principal.user_name}",
                output=f"Session terminated by {principal.user_name}.",
                terminated_by=principal.arn,
                actor=user_identity(principal),
            )
        return {"SessionId": session_id}

    async def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        state: str = body["State"]
        limit, offset = page_request(body, default=50)
        criteria: dict[str, Any] = {}
        for item in body.get("Filters", []):
            key, value = item["key"], item["value"]
            # The model's keys include AccessType, which this server does not record.
            if key not in _FILTER_KEYS:
                raise InvalidFilterKey(f"The filter key {key} is not supported.")
            if key in ("InvokedAfter", "InvokedBefore"):
                criteria[key.replace("Invoked", "invoked_").lower()] = parse_timestamp(value)
            else:
                criteria[{"SessionId": "session_id"}.get(key, key.lower())] = value
        rows = await self._store.sessions.describe(
            active=state == "Active", limit=limit + 1, offset=offset, **criteria
        )
        sessions = [session_json(s) for s in rows[:limit]]
        if "session_id" in criteria:  # one session asked for: its details too (Hatchway)
            for out in sessions:
                records = await self._store.sessions.connections(out["SessionId"])
                out["Connections"] = [connection_json(c) for c in records]
                session = await self._store.sessions.get(out["SessionId"])
                if session is not None and session.preferences:
                    out["Preferences"] = session.preferences
                if self.recordings is not None:
                    recording = await self.recordings.summary(out["SessionId"])
                    if session is not None:
                        recording = _by_node(session, recording)
                    if recording is not None:
                        out["Recording"] = recording
        return {
            "Sessions": sessions,
            **page_response(len(rows) > limit, offset + limit),
        }

    # ---- events from agents and timers ----------------------------------------------------

    async def task_complete(self, node_id: str, done: TaskComplete) -> None:
        """The agent finished a session (shell exited, or it was cancelled)."""
        session = await self._store.sessions.get(done.task_id)
        if session is None or session.target != node_id:
            log.info("node %s completed unknown task %s", node_id, done.task_id)
            return
        exit_code = done.exit_code  # a decimal int32 in Output, else None
        status = (
            SessionStatus.TERMINATED
            if done.final_task_status != "Failed"
            else (SessionStatus.FAILED)
        )
        output = done.output if status == SessionStatus.FAILED else ""
        await self._finish(
            done.task_id,
            status,
            output[:MAX_DETAILS] or done.final_task_status,  # why it failed, if the agent said
            output=output,
            exit_code=exit_code,
            notify_agent=False,
            actor=node_identity(node_id),
            ended_on_node=True,
        )

    async def node_gone(self, node_id: str) -> None:
        """The node's control channel closed for good (not replaced by a newer one).

        Its sessions' clients hear of it at once; a session whose agent does not come back
        within ``disconnect_grace`` ends saying so (docs/protocol.md §9.6).
        """
        self.gateway.node_gone(node_id)
        if self.elsewhere is not None:
            await self.elsewhere.node_gone(node_id)

    async def sessions_reported(self, node_id: str, running: frozenset[str]) -> None:
        """The node's heartbeat lists the sessions its agent runs: a session that went away
        with the node (or with a server restart) and is not among them ends now instead of
        after the grace: the agent restarted and lost it."""
        for session_id in self.gateway.no_longer_run(node_id, running):
            reason = "the node's agent no longer runs the session (it restarted)"
            await self._finish(session_id, SessionStatus.TERMINATED, reason, output=reason)

    async def connections_reported(self, node_id: str, report: ConnectionReport) -> None:
        """A port session's agent reported connections it carried: kept with the session
        (``DescribeSessions`` filtered by ``SessionId`` shows them). Reports for a session
        that is not this node's are ignored."""
        session = await self._store.sessions.get(report.session_id)
        if session is None or session.target != node_id:
            log.info("node %s reported connections of unknown session %s", node_id,
                     report.session_id)  # fmt: skip
            return
        records = [
            SessionConnection(
                destination=c.destination,
                opened_at=c.opened,
                closed_at=c.closed,
                bytes_in=c.bytes_in,
                bytes_out=c.bytes_out,
                error=c.error,
            )
            for c in report.connections
        ]
        stored = await self._store.sessions.add_connections(report.session_id, records)
        if stored < len(records):
            log.warning(
                "session %s: %d connection record(s) not kept (the session has its maximum)",
                report.session_id,
                len(records) - stored,
            )

    async def restore(self) -> int:
        """At start: go on with every session a previous server process left active.

        Nothing of a session lives only in the server's memory: its ends re-dial (the client
        after ResumeSession) and the reliability layer re-sends what is unacknowledged. Each
        session gets ``disconnect_grace`` for its ends to come back (docs/protocol.md §9.7).
        """
        page_size = 1000
        active: list[Session] = []
        while True:
            page = await self._store.sessions.describe(
                active=True, limit=page_size, offset=len(active)
            )
            active += page
            if len(page) < page_size:
                break
        return await self.gateway.restore(active)

    def _expired(self, session_id: str, status: SessionStatus, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._finish(
                session_id,
                status,
                reason,
                output=reason,
                terminated_by=SERVER if status is SessionStatus.TERMINATED else "",
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(
        self,
        session_id: str,
        status: SessionStatus,
        details: str,
        *,
        output: str = "",
        exit_code: int | None = None,
        notify_agent: bool = True,
        terminated_by: str = "",
        actor: Identity = SERVICE_IDENTITY,
        ended_on_node: bool = False,
    ) -> None:
        """End a session: status first (one transaction, with its audit record and its
        events), then both ends and the agent.

        ``actor`` ended it (a user, the node's agent, or the server); ``ended_on_node``: its
        shell or command ended (``SessionEnded``), rather than being ended (``Terminated``).
        ``terminated_by`` names who ended it by force (events: the README's "Webhooks").
        """
        session = await self._store.sessions.get(session_id)
        if session is None:
            return
        active = tuple(s for s in SessionStatus if s.is_active)
        now = self._clock()
        live = self.gateway.live(session_id)  # byte counts not yet flushed to the row
        if status is SessionStatus.FAILED:
            code = EventCode.SESSION_FAILED
        else:
            code = EventCode.SESSION_ENDED if ended_on_node else EventCode.SESSION_TERMINATED
        event = self._audit.session(
            code, session, actor, status=status, reason=details, exit_code=exit_code
        )
        changed = await self._store.sessions.set_status(
            session_id,
            status,
            now=now,
            only_if=active,
            exit_code=exit_code,
            details=details,
            events=self.events.session_ended(
                session,
                status=status,
                details=details,
                end=now,
                exit_code=exit_code,
                bytes_in=session.bytes_in + (live.bytes_in if live else 0),
                bytes_out=session.bytes_out + (live.bytes_out if live else 0),
                terminated_by=terminated_by,
            ),
            audit=[event],
        )
        if live is not None or self.elsewhere is None:
            await self.end_here(session_id, output)
        else:  # relayed by another replica: it hangs up
            await self.elsewhere.session_ended(session_id, output)
        if changed and notify_agent:
            try:
                await self._control.end_session(session.target, session_id, output)
            except HatchwayError as exc:
                log.debug("cannot tell %s to end %s: %s", session.target, session_id, exc)

    async def end_here(self, session_id: str, output: str) -> None:
        """Hang up a session this server relays: both ends, its recording, its log stream."""
        self.gateway.end(session_id, output)  # returns at once; the goodbyes run on their own
        if self.recordings is not None:
            await self.recordings.finish(session_id)
        if self.logs is not None:
            await self.logs.finish(session_id)

    def live_session_ids(self) -> list[str]:
        """Sessions this server relays now (what live enforcement re-checks)."""
        return self.gateway.live_ids()

    async def revoke(self, session_id: str, reason: str) -> None:
        """End a session its owner may no longer run; both ends are told ``reason``."""
        message = f"Session terminated: {reason}"
        log.warning("session %s ended: %s", session_id, reason)
        await self._finish(
            session_id, SessionStatus.TERMINATED, reason, output=message, terminated_by=SERVER
        )

    async def end_sessions_on(self, node_id: str, reason: str) -> None:
        for session in await self._store.sessions.active_on(node_id):
            await self._finish(
                session.session_id,
                SessionStatus.TERMINATED,
                reason,
                output=reason,
                terminated_by=SERVER,
            )

    @staticmethod
    def stream_url(base: str, session_id: str) -> str:
        return f"{base}/v1/data-channel/{session_id}?role=publish_subscribe"


def session_json(s: Session) -> dict[str, Any]:
    """A ``Session`` in DescribeSessions' shape (docs/protocol.md §2.2), plus Hatchway extras."""
    out: dict[str, Any] = {
        "SessionId": s.session_id,
        "Target": s.target,
        "Status": s.status.value,
        "StartDate": s.start_date,
        "DocumentName": s.document_name,
        "Owner": s.owner,
        "OutputUrl": {"S3OutputUrl": "", "CloudWatchOutputUrl": ""},
    }
    if s.end_date is not None:
        out["EndDate"] = s.end_date
    if s.reason:
        out["Reason"] = s.reason
    if s.details:
        out["Details"] = s.details
    if s.max_session_duration:
        out["MaxSessionDuration"] = s.max_session_duration
    if s.exit_code is not None:
        out["ExitCode"] = s.exit_code
    if s.relay:
        out["Relay"] = s.relay  # scale-out: the replica that relays it
    return out


def connection_json(c: SessionConnection) -> dict[str, Any]:
    """A port session's connection in DescribeSessions (a Hatchway extension)."""
    out: dict[str, Any] = {
        "Destination": c.destination,
        "OpenedDate": c.opened_at,
        "BytesIn": c.bytes_in,
        "BytesOut": c.bytes_out,
    }
    if c.closed_at is not None:
        out["ClosedDate"] = c.closed_at
    if c.error:
        out["Error"] = c.error
    return out


def unstreamed_reason(key_arn: str) -> str:
    """Why the server does not stream an end-to-end encrypted session's output."""
    return (
        f"not streamed: the session is encrypted end to end with KMS key {key_arn} "
        "(kmsKeyId), so the server relays only ciphertext (its node records it, sealed)"
    )


def _by_node(session: Session, recording: dict[str, Any] | None) -> dict[str, Any] | None:
    """``sessions get``'s Recording of an end-to-end encrypted session, which its node
    records (agent.recording) because the gateway sees only ciphertext; other sessions'
    ``recording`` unchanged."""
    applied = session.preferences or {}
    key = applied.get(SESSION_KEY_PREFERENCE)
    if not key or applied.get(RECORDED_BY) != "node":
        return recording
    if recording is not None:
        return {**recording, "RecordedBy": "node"}
    if session.status.is_active:
        return {
            "State": "RecordingOnNode",
            "Size": 0,
            "Reason": (
                f"the session is encrypted end to end with KMS key {key} (kmsKeyId): the "
                "server relays only ciphertext, so its node records it and sends the "
                "recording sealed when the session ends"
            ),
        }
    return {
        "State": "NotRecorded",
        "Size": 0,
        "Reason": (
            f"the session was encrypted end to end with KMS key {key} (kmsKeyId): the server "
            "relayed only ciphertext, and its node sent no recording"
        ),
    }
