"""The event-subscription operations (``Hatchway.CreateEventSubscription``,
``ListEventSubscriptions``, ``DeleteEventSubscription``, ``ListEventDeliveries``).

Bodies arrive checked against ``shapes`` (types, lengths, the id pattern, the status enum);
this module checks what a model cannot say: that the URL is an http(s) URL without
credentials, that every event type exists, and the secret's length (without echoing it). The
secret is stored encrypted with the master key (``auth.secretbox``, bound to the subscription
id) because signing needs it; no answer and no log line ever contains it.
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from hatchway.auth.secretbox import SecretBox
from hatchway.errors import NotFound, ValidationError
from hatchway.server.events.shapes import MAX_SECRET, MIN_SECRET
from hatchway.server.events.worker import secret_context
from hatchway.server.pagination import page_request, page_response
from hatchway.server.principal import Principal
from hatchway.server.validation import echo
from hatchway.store.events import (
    Delivery,
    DeliveryStatus,
    EventRepository,
    EventType,
    Subscription,
)

log = logging.getLogger(__name__)

Operation = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]
KNOWN_TYPES = ", ".join(e.value for e in EventType)


class EventService:
    """One method per operation, each ``(principal, body) -> answer``."""

    def __init__(self, events: EventRepository, box: SecretBox, clock: Callable[[], float]) -> None:
        self._events = events
        self._box = box
        self._clock = clock

    def operations(self) -> dict[str, Operation]:
        """Every operation by its name (``Hatchway.<name>``)."""
        return {
            "CreateEventSubscription": self.create_subscription,
            "ListEventSubscriptions": self.list_subscriptions,
            "DeleteEventSubscription": self.delete_subscription,
            "ListEventDeliveries": self.list_deliveries,
        }

    async def create_subscription(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        url = check_url(body["Url"])
        types = check_event_types(body["Events"])
        secret: str = body["Secret"]
        if not MIN_SECRET <= len(secret) <= MAX_SECRET:
            raise ValidationError(
                f"Secret must be {MIN_SECRET} to {MAX_SECRET} characters long "
                f"(it has {len(secret)})"
            )
        subscription_id = "sub-" + secrets.token_hex(8)
        subscription = Subscription(
            subscription_id=subscription_id,
            url=url,
            event_types=types,
            secret_encrypted=self._box.encrypt(
                secret.encode("utf-8"), context=secret_context(subscription_id)
            ),
            created_at=self._clock(),
            created_by=principal.arn,
        )
        await self._events.create_subscription(subscription)
        log.info(
            "event subscription %s created by %s for %s",
            subscription_id,
            principal.user_name,
            ",".join(types),
        )
        return {"Subscription": subscription_json(subscription)}

    async def list_subscriptions(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = page_request(body, default=50)
        everything = await self._events.subscriptions()
        page = everything[offset : offset + limit]
        return {
            "Subscriptions": [subscription_json(s) for s in page],
            **page_response(len(everything) > offset + limit, offset + limit),
        }

    async def delete_subscription(
        self, principal: Principal, body: dict[str, Any]
    ) -> dict[str, Any]:
        subscription_id: str = body["SubscriptionId"]
        await self._events.delete_subscription(subscription_id)
        log.info("event subscription %s deleted by %s", subscription_id, principal.user_name)
        return {}

    async def list_deliveries(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = page_request(body, default=50)
        subscription_id: str | None = body.get("SubscriptionId")
        if subscription_id is not None and await self._events.subscription(subscription_id) is None:
            raise NotFound(f"Event subscription {subscription_id} does not exist.")
        status = DeliveryStatus(body["Status"]) if "Status" in body else None
        rows = await self._events.deliveries(
            subscription_id=subscription_id, status=status, limit=limit + 1, offset=offset
        )
        return {
            "Deliveries": [delivery_json(d) for d in rows[:limit]],
            **page_response(len(rows) > limit, offset + limit),
        }


def check_url(url: str) -> str:
    """A webhook URL: ``http`` or ``https``, with a host, no credentials, no spaces.

    Raises:
        ValidationError: saying what is wrong.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValidationError(f"Url '{echo(url)}' must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ValidationError(f"Url '{echo(url)}' is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(f"Url '{echo(url)}' must start with http:// or https://")
    if not parts.hostname:
        raise ValidationError(f"Url '{echo(url)}' has no host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Url must not contain credentials (they would be shown by list-subscriptions); "
            "receivers authenticate deliveries by their signature"
        )
    if port == 0:
        raise ValidationError(f"Url '{echo(url)}' has port 0")
    return url


def check_event_types(names: list[str]) -> tuple[EventType, ...]:
    """The event types named, each once, in the catalogue's order.

    Raises:
        ValidationError: naming the first unknown type and listing the known ones.
    """
    chosen: set[EventType] = set()
    for name in names:
        try:
            chosen.add(EventType(name))
        except ValueError:
            raise ValidationError(
                f"unknown event type '{echo(name)}'; the event types are: {KNOWN_TYPES}"
            ) from None
    return tuple(e for e in EventType if e in chosen)


def subscription_json(s: Subscription) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret."""
    return {
        "SubscriptionId": s.subscription_id,
        "Url": s.url,
        "Events": [e.value for e in s.event_types],
        "CreatedDate": s.created_at,
        "CreatedBy": s.created_by,
    }


def delivery_json(d: Delivery) -> dict[str, Any]:
    """One line of the delivery log."""
    out: dict[str, Any] = {
        "DeliveryId": d.delivery_id,
        "SubscriptionId": d.subscription_id,
        "EventId": d.event_id,
        "EventType": d.event_type,
        "EventTime": d.event_time,
        "Status": d.status.value,
        "Attempts": d.attempts,
        "CreatedDate": d.created_at,
    }
    optional = {
        "LastAttemptDate": d.last_attempt_at,
        "LastStatusCode": d.last_status_code,
        "LastError": d.last_error or None,
        "NextAttemptDate": d.next_attempt_at if d.status is DeliveryStatus.PENDING else None,
        "DeliveredDate": d.delivered_at,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
