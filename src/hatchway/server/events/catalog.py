"""The events this server emits, built from the records they are about.

Each method returns the events of one change as a tuple, for the repository call that makes
the change (``events=...``): they are then written in the same transaction (``store.events``).
The ``detail`` members are part of the webhook contract (README, "Webhooks"); times in them are
ISO 8601 like the event's ``time``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from hatchway.errors import HatchwayError
from hatchway.store.events import Event, EventRepository, EventType, event_time
from hatchway.store.records import Node, Session, SessionStatus

log = logging.getLogger(__name__)


class EventCatalog:
    """Builds events with fresh ids, stamped by ``clock`` (wall-clock seconds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def _event(self, kind: EventType, detail: dict[str, Any], when: float | None = None) -> Event:
        return Event(str(uuid.uuid4()), kind, self._clock() if when is None else when, detail)

    def session_started(self, session: Session) -> tuple[Event, ...]:
        """StartSession recorded the session (status ``Connecting``)."""
        return (
            self._event(
                EventType.SESSION_STARTED,
                {
                    "sessionId": session.session_id,
                    "nodeId": session.target,
                    "principal": session.owner,
                    "document": session.document_name,
                    "reason": session.reason,
                    "sourceIp": session.source_ip,
                    "startTime": event_time(session.start_date),
                },
                session.start_date,
            ),
        )

    def session_ended(
        self,
        session: Session,
        *,
        status: SessionStatus,
        details: str,
        end: float,
        exit_code: int | None,
        bytes_in: int,
        bytes_out: int,
        terminated_by: str = "",
    ) -> tuple[Event, ...]:
        """The session ended with ``status``. ``terminated_by`` names who ended it by force
        (a user's ARN, or ``hatchway`` for the server itself): then ``session.terminated``
        comes first, in the same transaction as ``session.ended``."""
        events: list[Event] = []
        if terminated_by:
            events.append(
                self._event(
                    EventType.SESSION_TERMINATED,
                    {
                        "sessionId": session.session_id,
                        "nodeId": session.target,
                        "principal": session.owner,
                        "terminatedBy": terminated_by,
                        "reason": details,
                    },
                    end,
                )
            )
        events.append(
            self._event(
                EventType.SESSION_ENDED,
                {
                    "sessionId": session.session_id,
                    "nodeId": session.target,
                    "principal": session.owner,
                    "document": session.document_name,
                    "status": status.value,
                    "reason": details,
                    "startTime": event_time(session.start_date),
                    "endTime": event_time(end),
                    "durationSeconds": round(max(0.0, end - session.start_date), 3),
                    "exitCode": exit_code,
                    "bytesIn": bytes_in,
                    "bytesOut": bytes_out,
                },
                end,
            )
        )
        return tuple(events)

    def node_registered(self, node: Node) -> tuple[Event, ...]:
        """A node registered with an activation."""
        return (
            self._event(
                EventType.NODE_REGISTERED,
                {
                    "nodeId": node.instance_id,
                    "activationId": node.activation_id,
                    "name": node.name,
                    "tags": dict(node.tags),
                },
                node.registration_date,
            ),
        )

    def node_online(self, node_id: str) -> tuple[Event, ...]:
        """The node's agent connected its control channel."""
        return (self._event(EventType.NODE_ONLINE, {"nodeId": node_id}),)

    def node_offline(self, node_id: str, reason: str) -> tuple[Event, ...]:
        """The node's control channel closed for good (not replaced by a newer one)."""
        return (self._event(EventType.NODE_OFFLINE, {"nodeId": node_id, "reason": reason}),)

    def access_denied(
        self, *, principal: str, action: str, resource: str, reason: str, source_ip: str
    ) -> tuple[Event, ...]:
        """An API request was refused by policy."""
        return (
            self._event(
                EventType.ACCESS_DENIED,
                {
                    "principal": principal,
                    "action": action,
                    "resource": resource,
                    "reason": reason,
                    "sourceIp": source_ip,
                },
            ),
        )


async def publish(events: EventRepository, batch: Sequence[Event]) -> None:
    """Store events that report no change of their own (``access.denied``) in a transaction
    of their own. A failing database is logged, never raised: the refusal must still be
    answered as a refusal, not as a server error."""
    try:
        await events.publish(batch)
    except HatchwayError as exc:
        log.warning("cannot record %s event(s): %s", ", ".join(e.type for e in batch), exc)
