"""``hatchway kms …``: the key service's keys and aliases.

Each command calls one ``TrentService.<Operation>`` (AWS KMS's names and shapes, signed for
``kms``) and prints the answer as ``--output json`` (the whole response, listings merged over
every page, timestamps as ISO 8601) or as a table. Keys are named as in AWS: key id, key ARN,
``alias/NAME`` or alias ARN. The CLI (``hatchway.cli``) loads this module only when
``hatchway kms`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["kms"]

SERVICE = "TrentService"

Columns = Sequence[tuple[str, str]]

KEY_COLUMNS: Columns = [
    ("KEY ID", "KeyId"),
    ("STATE", "KeyState"),
    ("ALIASES", "Aliases"),
    ("CREATED", "CreationDate"),
    ("DELETION", "DeletionDate"),
    ("DESCRIPTION", "Description"),
]
ALIAS_COLUMNS: Columns = [
    ("ALIAS", "AliasName"),
    ("KEY ID", "TargetKeyId"),
    ("CREATED", "CreationDate"),
]

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (json: the whole response).",
)
KEY = click.argument("key", metavar="KEY")


@click.group()
def kms() -> None:
    """Keys of the key service (AWS KMS's API): they encrypt data keys, e.g. of recordings."""


@kms.command("create-key")
@click.option("--description", default="", help="What the key is for.")
@click.option("--alias", metavar="NAME", help="Also create alias/NAME for it.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="A tag (repeatable).")
@OUTPUT
@click.pass_context
def create_key(
    ctx: click.Context, description: str, alias: str | None, tags: tuple[str, ...], output: str
) -> None:
    """Create a symmetric encryption key (TrentService.CreateKey, then CreateAlias)."""
    alias_name = None
    if alias is not None:
        alias_name = alias if alias.startswith("alias/") else f"alias/{alias}"
    body: dict[str, Any] = {"Description": description}
    if tags:
        body["Tags"] = [_tag(t) for t in tags]
    api = _api(ctx)
    result = api.call("CreateKey", body, service=SERVICE)
    meta = result.get("KeyMetadata") or {}
    if alias_name is not None:
        api.call(
            "CreateAlias",
            {"AliasName": alias_name, "TargetKeyId": meta.get("KeyId", "")},
            service=SERVICE,
        )
        meta["Aliases"] = [alias_name]
    _print_key(result, output)


@kms.command("describe-key")
@KEY
@OUTPUT
@click.pass_context
def describe_key(ctx: click.Context, key: str, output: str) -> None:
    """Show one key: ARN, state, dates (TrentService.DescribeKey)."""
    api = _api(ctx)
    result = api.call("DescribeKey", {"KeyId": key}, service=SERVICE)
    meta = result.get("KeyMetadata") or {}
    if output == "table":
        aliases = _paginate(api, "ListAliases", {"KeyId": meta.get("KeyId", key)}, "Aliases")
        meta["Aliases"] = [a["AliasName"] for a in aliases["Aliases"]]
    _print_key(result, output)


@kms.command("list-keys")
@OUTPUT
@click.pass_context
def list_keys(ctx: click.Context, output: str) -> None:
    """List every key with its state and aliases (TrentService.ListKeys, DescribeKey,
    ListAliases)."""
    api = _api(ctx)
    listed = _paginate(api, "ListKeys", {}, "Keys")
    if output == "json":
        from hatchway.client.output import print_json

        print_json(listed)
        return
    aliases: dict[str, list[str]] = {}
    for entry in _paginate(api, "ListAliases", {}, "Aliases")["Aliases"]:
        aliases.setdefault(entry.get("TargetKeyId", ""), []).append(entry["AliasName"])
    rows = []
    for entry in listed["Keys"]:
        meta = api.call("DescribeKey", {"KeyId": entry["KeyId"]}, service=SERVICE)["KeyMetadata"]
        meta["Aliases"] = aliases.get(entry["KeyId"], [])
        rows.append(meta)
    from hatchway.client.output import print_table

    print_table(rows, KEY_COLUMNS)


@kms.command("enable-key")
@KEY
@click.pass_context
def enable_key(ctx: click.Context, key: str) -> None:
    """Allow the key's use again (TrentService.EnableKey)."""
    _api(ctx).call("EnableKey", {"KeyId": key}, service=SERVICE)
    click.echo(f"enabled {key}", err=True)


@kms.command("disable-key")
@KEY
@click.pass_context
def disable_key(ctx: click.Context, key: str) -> None:
    """Stop every use of the key until it is enabled: what it encrypted cannot be decrypted
    meanwhile (TrentService.DisableKey)."""
    _api(ctx).call("DisableKey", {"KeyId": key}, service=SERVICE)
    click.echo(f"disabled {key}", err=True)


@kms.command("schedule-key-deletion")
@KEY
@click.option(
    "--pending-window-in-days",
    type=click.IntRange(7, 30),
    default=30,
    show_default=True,
    help="Days before the key is deleted (and what it encrypted is lost).",
)
@OUTPUT
@click.pass_context
def schedule_key_deletion(
    ctx: click.Context, key: str, pending_window_in_days: int, output: str
) -> None:
    """Delete the key after a waiting period; until then it is unusable and the deletion can
    be cancelled (TrentService.ScheduleKeyDeletion)."""
    body = {"KeyId": key, "PendingWindowInDays": pending_window_in_days}
    result = _api(ctx).call("ScheduleKeyDeletion", body, service=SERVICE)
    if output == "json":
        from hatchway.client.output import print_json

        print_json(result)
        return
    from hatchway.client.output import iso_timestamp

    when = result.get("DeletionDate")
    shown = iso_timestamp(when) if isinstance(when, int | float) else "?"
    click.echo(f"{result.get('KeyId', key)} will be deleted at {shown}", err=True)


@kms.command("cancel-key-deletion")
@KEY
@click.pass_context
def cancel_key_deletion(ctx: click.Context, key: str) -> None:
    """Keep the key; it is then disabled (TrentService.CancelKeyDeletion)."""
    _api(ctx).call("CancelKeyDeletion", {"KeyId": key}, service=SERVICE)
    click.echo(f"deletion of {key} cancelled; the key is disabled", err=True)


@kms.command("create-alias")
@click.argument("alias_name", metavar="alias/NAME")
@KEY
@click.pass_context
def create_alias(ctx: click.Context, alias_name: str, key: str) -> None:
    """Name a key alias/NAME (TrentService.CreateAlias)."""
    name = alias_name if alias_name.startswith("alias/") else f"alias/{alias_name}"
    _api(ctx).call("CreateAlias", {"AliasName": name, "TargetKeyId": key}, service=SERVICE)
    click.echo(f"created {name}", err=True)


@kms.command("delete-alias")
@click.argument("alias_name", metavar="alias/NAME")
@click.pass_context
def delete_alias(ctx: click.Context, alias_name: str) -> None:
    """Remove an alias; its key stays (TrentService.DeleteAlias)."""
    name = alias_name if alias_name.startswith("alias/") else f"alias/{alias_name}"
    _api(ctx).call("DeleteAlias", {"AliasName": name}, service=SERVICE)
    click.echo(f"deleted {name}", err=True)


@kms.command("list-aliases")
@click.option("--key", "key", metavar="KEY", help="Only this key's aliases.")
@OUTPUT
@click.pass_context
def list_aliases(ctx: click.Context, key: str | None, output: str) -> None:
    """List aliases and their keys (TrentService.ListAliases)."""
    result = _paginate(_api(ctx), "ListAliases", {"KeyId": key} if key else {}, "Aliases")
    from hatchway.client.output import print_json, print_table

    if output == "json":
        print_json(result)
    else:
        print_table(result["Aliases"], ALIAS_COLUMNS)


# ---- helpers --------------------------------------------------------------------------------


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


def _tag(text: str) -> dict[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not K=V", param_hint="--tag")
    return {"TagKey": key, "TagValue": value}


def _paginate(api: Any, operation: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    """Every page (``Marker``/``NextMarker``/``Truncated``, KMS's paging) merged under ``key``."""
    from hatchway.errors import RemoteProtocolError

    items: list[Any] = []
    seen: set[str] = set()
    marker: str | None = None
    while True:
        page = api.call(
            operation, {**body, **({"Marker": marker} if marker else {})}, service=SERVICE
        )
        items.extend(page.get(key) or [])
        marker = page.get("NextMarker")
        if not page.get("Truncated") or not marker:
            return {key: items}
        if marker in seen:
            raise RemoteProtocolError(f"{operation}: the server repeated the marker {marker!r}")
        seen.add(marker)


def _print_key(result: dict[str, Any], output: str) -> None:
    from hatchway.client.output import print_json, print_table

    if output == "json":
        meta = dict(result.get("KeyMetadata") or {})
        meta.pop("Aliases", None)
        print_json({**result, "KeyMetadata": meta})
        return
    meta = result.get("KeyMetadata") or {}
    print_table([meta], KEY_COLUMNS)
    click.echo(f"ARN: {meta.get('Arn', '-')}")
