"""Event notifications (EventBridge's and SNS's role): what happened on this server —
sessions started, ended and terminated, nodes registered, online and offline, access denied —
posted to webhooks, signed, retried from the persistent outbox (``store.events``), at least
once and in order per subscription.

``publisher`` builds the events at the places where they happen; ``signature`` and ``retry``
are the delivery contract's pure parts; ``worker`` posts; ``service`` is the API.
"""
