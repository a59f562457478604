"""``hatchway events …``: webhook subscriptions and their delivery log.

Each command calls one ``Hatchway.<Operation>`` (``CreateEventSubscription``,
``ListEventSubscriptions``, ``DeleteEventSubscription``, ``ListEventDeliveries``) and prints
the answer as ``--output json`` (the whole response, every page merged, timestamps as ISO 8601)
or as a table. The CLI (``hatchway.cli``) loads this module only when ``hatchway events`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["events"]

SERVICE = "Hatchway"

Columns = Sequence[tuple[str, str]]

SUBSCRIPTION_COLUMNS: Columns = [
    ("SUBSCRIPTION ID", "SubscriptionId"),
    ("URL", "Url"),
    ("EVENTS", "Events"),
    ("CREATED", "CreatedDate"),
    ("CREATED BY", "CreatedBy"),
]
DELIVERY_COLUMNS: Columns = [
    ("DELIVERY", "DeliveryId"),
    ("SUBSCRIPTION ID", "SubscriptionId"),
    ("EVENT TYPE", "EventType"),
    ("EVENT ID", "EventId"),
    ("STATUS", "Status"),
    ("ATTEMPTS", "Attempts"),
    ("LAST CODE", "LastStatusCode"),
    ("LAST ATTEMPT", "LastAttemptDate"),
    ("NEXT ATTEMPT", "NextAttemptDate"),
    ("LAST ERROR", "LastError"),
]
EVENT_TYPES = (
    "session.started, session.ended, session.terminated, node.registered, node.online, "
    "node.offline, access.denied"
)

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (json: the whole response).",
)


@click.group()
def events() -> None:
    """Webhooks: signed JSON POSTs of what happens (sessions, nodes, denials)."""


@events.command("create-subscription")
@click.option("--url", required=True, help="http(s) URL the events are posted to.")
@click.option(
    "--events",
    "event_types",
    required=True,
    multiple=True,
    metavar="TYPE[,TYPE…]",
    help=f"Event types, comma-separated (or the flag repeated): {EVENT_TYPES}.",
)
@click.option(
    "--secret",
    help="Signing secret, 6 to 256 characters (use 32 random ones). Default: asked for "
    "without echo, or one line of stdin when piped.",
)
@OUTPUT
@click.pass_context
def create_subscription(
    ctx: click.Context, url: str, event_types: tuple[str, ...], secret: str | None, output: str
) -> None:
    """Post events of these types to URL, signed with the secret
    (Hatchway.CreateEventSubscription)."""
    names = [name.strip() for value in event_types for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name at least one event type", param_hint="--events")
    if secret is None:
        from hatchway.client.secretprompt import read_secret

        secret = read_secret("Signing secret", confirm=True)
    body = {"Url": url, "Events": names, "Secret": secret}
    result = _api(ctx).call("CreateEventSubscription", body, service=SERVICE)
    _print(result, output, "Subscription", SUBSCRIPTION_COLUMNS)


@events.command("list-subscriptions")
@OUTPUT
@click.pass_context
def list_subscriptions(ctx: click.Context, output: str) -> None:
    """List webhook subscriptions, never their secrets (Hatchway.ListEventSubscriptions)."""
    result = _paginate(_api(ctx), "ListEventSubscriptions", {}, "Subscriptions", None)
    _print(result, output, "Subscriptions", SUBSCRIPTION_COLUMNS)


@events.command("delete-subscription")
@click.argument("subscription_id")
@click.pass_context
def delete_subscription(ctx: click.Context, subscription_id: str) -> None:
    """Delete a subscription; its pending deliveries are dropped
    (Hatchway.DeleteEventSubscription)."""
    body = {"SubscriptionId": subscription_id}
    _api(ctx).call("DeleteEventSubscription", body, service=SERVICE)
    click.echo(f"deleted event subscription {subscription_id}", err=True)


@events.command("list-deliveries")
@click.option("--subscription", "subscription_id", metavar="ID", help="Only this subscription's.")
@click.option(
    "--status",
    type=click.Choice(["pending", "delivered", "failed"]),
    help="Only deliveries in this state.",
)
@click.option(
    "--max-items",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Newest deliveries shown at most.",
)
@OUTPUT
@click.pass_context
def list_deliveries(
    ctx: click.Context,
    subscription_id: str | None,
    status: str | None,
    max_items: int,
    output: str,
) -> None:
    """The delivery log, newest first: attempts, the receiver's last answer or error, and
    when the next attempt is due (Hatchway.ListEventDeliveries)."""
    body: dict[str, Any] = {}
    if subscription_id:
        body["SubscriptionId"] = subscription_id
    if status:
        body["Status"] = status
    result = _paginate(_api(ctx), "ListEventDeliveries", body, "Deliveries", max_items)
    _print(result, output, "Deliveries", DELIVERY_COLUMNS)


# ---- helpers --------------------------------------------------------------------------------


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


def _paginate(
    api: Any, operation: str, body: dict[str, Any], key: str, limit: int | None
) -> dict[str, Any]:
    """Pages (``NextToken``) merged under ``key``, up to ``limit`` items."""
    from hatchway.errors import RemoteProtocolError

    items: list[Any] = []
    seen: set[str] = set()
    token: str | None = None
    while limit is None or len(items) < limit:
        page_size = {} if limit is None else {"MaxResults": min(100, limit - len(items))}
        request = {**body, **page_size, **({"NextToken": token} if token else {})}
        page = api.call(operation, request, service=SERVICE)
        items.extend(page.get(key) or [])
        token = page.get("NextToken")
        if not token:
            break
        if token in seen:
            raise RemoteProtocolError(f"{operation}: the server repeated the token {token!r}")
        seen.add(token)
    return {key: items}


def _print(result: dict[str, Any], output: str, key: str, columns: Columns) -> None:
    from hatchway.client.output import print_json, print_table

    if output == "json":
        print_json(result)
        return
    rows = result.get(key) or []
    print_table([rows] if isinstance(rows, dict) else rows, columns)
