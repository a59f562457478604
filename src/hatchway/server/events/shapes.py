"""Input shapes of the event-subscription operations, in botocore's model format: merged into
``validation.HATCHWAY_MODEL`` so they are checked like every other request body."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from hatchway.store.events import DeliveryStatus

MIN_SECRET = 6
"""Characters a subscription secret needs at least (README: use 32 random ones)."""
MAX_SECRET = 256
MAX_URL = 2048

_HTTP = {"method": "POST", "requestUri": "/"}

EVENT_OPERATIONS: Mapping[str, Any] = MappingProxyType(
    {
        name: {"name": name, "http": _HTTP, "input": {"shape": f"{name}Request"}}
        for name in (
            "CreateEventSubscription",
            "ListEventSubscriptions",
            "DeleteEventSubscription",
            "ListEventDeliveries",
        )
    }
)

EVENT_SHAPES: Mapping[str, Any] = MappingProxyType(
    {
        "CreateEventSubscriptionRequest": {
            "type": "structure",
            "required": ["Url", "Events", "Secret"],
            "members": {
                "Url": {"shape": "EventWebhookUrl"},
                "Events": {"shape": "EventTypeList"},
                "Secret": {"shape": "EventWebhookSecret"},
            },
        },
        "ListEventSubscriptionsRequest": {
            "type": "structure",
            "members": {
                "MaxResults": {"shape": "EventMaxResults"},
                "NextToken": {"shape": "EventNextToken"},
            },
        },
        "DeleteEventSubscriptionRequest": {
            "type": "structure",
            "required": ["SubscriptionId"],
            "members": {"SubscriptionId": {"shape": "EventSubscriptionId"}},
        },
        "ListEventDeliveriesRequest": {
            "type": "structure",
            "members": {
                "SubscriptionId": {"shape": "EventSubscriptionId"},
                "Status": {"shape": "EventDeliveryStatus"},
                "MaxResults": {"shape": "EventMaxResults"},
                "NextToken": {"shape": "EventNextToken"},
            },
        },
        "EventWebhookUrl": {"type": "string", "min": 1, "max": MAX_URL},
        "EventTypeList": {
            "type": "list",
            "member": {"shape": "EventTypeName"},
            "min": 1,
            "max": 16,
        },
        "EventTypeName": {"type": "string", "min": 1, "max": 64},
        # Its length is checked by the service, whose message does not echo the value.
        "EventWebhookSecret": {"type": "string", "sensitive": True},
        "EventSubscriptionId": {"type": "string", "pattern": "^sub-[0-9a-f]{16}$"},
        "EventDeliveryStatus": {"type": "string", "enum": [s.value for s in DeliveryStatus]},
        "EventMaxResults": {"type": "integer", "min": 1, "max": 100},
        "EventNextToken": {"type": "string", "max": 16},
    }
)
