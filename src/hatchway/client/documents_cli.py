"""``hatchway documents …`` (session documents) and ``hatchway preferences …`` (the Session
Manager preferences, which are the ``inputs`` of ``SSM-SessionManagerRunShell``).

``documents`` calls AWS's document operations (CreateDocument, UpdateDocument, GetDocument, …)
with their member names; ``preferences set`` is a friendlier front end over the same document:
it reads its latest version, changes the keys given, writes a new version with UpdateDocument
and makes it the default (UpdateDocumentDefaultVersion). Output is a table, or ``--output json``
(the whole response, every page merged, timestamps as ISO 8601). The CLI (``hatchway.cli``)
loads this module only when one of the two groups runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["PREFERENCE_KEYS", "describe_preferences", "documents", "preferences"]

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
Columns = Sequence[tuple[str, str]]

DOCUMENT_COLUMNS: Columns = [
    ("NAME", "Name"),
    ("OWNER", "Owner"),
    ("VERSION", "DocumentVersion"),
    ("FORMAT", "DocumentFormat"),
    ("CREATED", "CreatedDate"),
]
VERSION_COLUMNS: Columns = [
    ("VERSION", "DocumentVersion"),
    ("DEFAULT", "IsDefaultVersion"),
    ("FORMAT", "DocumentFormat"),
    ("CREATED", "CreatedDate"),
]
DESCRIPTION_KEYS = (
    "Name", "Description", "Owner", "DocumentType", "DocumentFormat", "DocumentVersion",
    "DefaultVersion", "LatestVersion", "Status", "CreatedDate", "Hash",
)  # fmt: skip
#: The preference keys (AWS's names; ``shellProfile.linux`` for the nested ones) and their
#: JSON types: ``bool``, ``minutes`` (a whole number, or empty for the default) or ``text``.
PREFERENCE_KEYS: Mapping[str, str] = {
    "idleSessionTimeout": "minutes",
    "maxSessionDuration": "minutes",
    "runAsEnabled": "bool",
    "runAsDefaultUser": "text",
    "shellProfile.linux": "text",
    "shellProfile.windows": "text",
    "kmsKeyId": "text",
    "s3BucketName": "text",
    "s3KeyPrefix": "text",
    "s3EncryptionEnabled": "bool",
    "cloudWatchLogGroupName": "text",
    "cloudWatchEncryptionEnabled": "bool",
    "cloudWatchStreamingEnabled": "bool",
}

OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (json: the whole response).",
)
FORMAT = click.option(
    "--format",
    "document_format",
    type=click.Choice(["JSON", "YAML"], case_sensitive=False),
    help="Content format (default: YAML for a .yaml/.yml file, else JSON).",
)


@click.group()
def documents() -> None:
    """Session documents (AWS's schema): list, get, create, update, delete."""


@documents.command("list")
@click.option("--owner", help="Self (your documents), Amazon (built-in) or All.")
@click.option("--name-prefix", help="Only documents whose names start with this.")
@OUTPUT
@click.pass_context
def list_documents(
    ctx: click.Context, owner: str | None, name_prefix: str | None, output: str
) -> None:
    """The session documents, by name."""
    filters = [{"Key": "DocumentType", "Values": ["Session"]}]
    if owner:
        filters.append({"Key": "Owner", "Values": [owner]})
    if name_prefix:
        filters.append({"Key": "Name", "Values": [name_prefix]})
    result = _paginate(_api(ctx), "ListDocuments", {"Filters": filters}, "DocumentIdentifiers")
    _print(result, output, "DocumentIdentifiers", DOCUMENT_COLUMNS)


@documents.command("get")
@click.argument("name")
@click.option("--version", help="A version number, $LATEST or $DEFAULT (default).")
@click.option(
    "--format",
    "document_format",
    type=click.Choice(["JSON", "YAML"], case_sensitive=False),
    help="Convert the content to this format.",
)
@OUTPUT
@click.pass_context
def get_document(
    ctx: click.Context, name: str, version: str | None, document_format: str | None, output: str
) -> None:
    """Print a document's content (--output json: with its version and format)."""
    body: dict[str, Any] = {"Name": name}
    if version:
        body["DocumentVersion"] = version
    if document_format:
        body["DocumentFormat"] = document_format.upper()
    result = _api(ctx).call("GetDocument", body)
    if output == "json":
        from hatchway.client.output import print_json

        print_json(result)
        return
    content = str(result.get("Content", ""))
    click.echo(content if content.endswith("\n") else content + "\n", nl=False)


@documents.command("describe")
@click.argument("name")
@click.option("--version", help="A version number, $LATEST or $DEFAULT (default).")
@OUTPUT
@click.pass_context
def describe_document(ctx: click.Context, name: str, version: str | None, output: str) -> None:
    """A document's versions, hash, parameters and owner."""
    body: dict[str, Any] = {"Name": name}
    if version:
        body["DocumentVersion"] = version
    _print_description(_api(ctx).call("DescribeDocument", body), output, "Document")


@documents.command("versions")
@click.argument("name")
@OUTPUT
@click.pass_context
def list_versions(ctx: click.Context, name: str, output: str) -> None:
    """A document's versions, oldest first."""
    result = _paginate(_api(ctx), "ListDocumentVersions", {"Name": name}, "DocumentVersions")
    _print(result, output, "DocumentVersions", VERSION_COLUMNS)


@documents.command("create")
@click.argument("name")
@click.option("--content", "path", required=True, help="The document file (- for stdin).")
@FORMAT
@OUTPUT
@click.pass_context
def create_document(
    ctx: click.Context, name: str, path: str, document_format: str | None, output: str
) -> None:
    """Create a session document from a JSON or YAML file (checked by the server)."""
    content, chosen = _read_content(path, document_format)
    body = {"Name": name, "DocumentType": "Session", "Content": content, "DocumentFormat": chosen}
    result = _api(ctx).call("CreateDocument", body)
    _print_description(result, output, "DocumentDescription")


@documents.command("update")
@click.argument("name")
@click.option("--content", "path", required=True, help="The document file (- for stdin).")
@FORMAT
@click.option("--default", "make_default", is_flag=True, help="Make the new version the default.")
@OUTPUT
@click.pass_context
def update_document(
    ctx: click.Context,
    name: str,
    path: str,
    document_format: str | None,
    make_default: bool,
    output: str,
) -> None:
    """Add a version to a document (sessions run its default version)."""
    content, chosen = _read_content(path, document_format)
    api = _api(ctx)
    body = {
        "Name": name,
        "Content": content,
        "DocumentFormat": chosen,
        "DocumentVersion": "$LATEST",
    }
    result = api.call("UpdateDocument", body)
    if make_default:
        version = result["DocumentDescription"]["DocumentVersion"]
        api.call("UpdateDocumentDefaultVersion", {"Name": name, "DocumentVersion": version})
        result["DocumentDescription"]["DefaultVersion"] = version
    _print_description(result, output, "DocumentDescription")


@documents.command("set-default")
@click.argument("name")
@click.argument("version")
@click.pass_context
def set_default(ctx: click.Context, name: str, version: str) -> None:
    """Make VERSION the version sessions run."""
    _api(ctx).call("UpdateDocumentDefaultVersion", {"Name": name, "DocumentVersion": version})


@documents.command("delete")
@click.argument("name")
@click.option("--version", help="Delete only this version (not the default one).")
@click.pass_context
def delete_document(ctx: click.Context, name: str, version: str | None) -> None:
    """Delete a document with all its versions (or one version)."""
    body: dict[str, Any] = {"Name": name}
    if version:
        body["DocumentVersion"] = version
    _api(ctx).call("DeleteDocument", body)


# ---- preferences ----------------------------------------------------------------------------


@click.group()
def preferences() -> None:
    """Session Manager preferences (SSM-SessionManagerRunShell's inputs)."""


@preferences.command("get")
@OUTPUT
@click.pass_context
def get_preferences(ctx: click.Context, output: str) -> None:
    """The preferences new sessions get."""
    document = _preferences_document(_api(ctx))
    _print_preferences(document.get("inputs") or {}, output)


@preferences.command("set")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE…")
@OUTPUT
@click.pass_context
def set_preferences(ctx: click.Context, settings: tuple[str, ...], output: str) -> None:
    """Change preferences, e.g. idleSessionTimeout=15 runAsEnabled=true
    runAsDefaultUser=ops 'shellProfile.linux=cd ~; umask 027'.

    Keys: idleSessionTimeout (minutes, 1-60), maxSessionDuration (minutes, 1-1440; empty for
    none), runAsEnabled, runAsDefaultUser, shellProfile.linux, shellProfile.windows, kmsKeyId,
    s3BucketName, s3KeyPrefix, s3EncryptionEnabled, cloudWatchLogGroupName,
    cloudWatchEncryptionEnabled, cloudWatchStreamingEnabled. New sessions get them.
    """
    changes = [parse_setting(text) for text in settings]
    api = _api(ctx)
    document = _preferences_document(api)
    inputs = document.setdefault("inputs", {})
    before = json.dumps(inputs, sort_keys=True)
    for key, value in changes:
        if key.startswith("shellProfile."):
            profile = inputs.get("shellProfile")
            if not isinstance(profile, dict):
                profile = inputs["shellProfile"] = {"windows": "", "linux": ""}
            profile[key.split(".", 1)[1]] = value
        else:
            inputs[key] = value
    if json.dumps(inputs, sort_keys=True) != before:
        body = {
            "Name": PREFERENCES_DOCUMENT,
            "Content": json.dumps(document, indent=2),
            "DocumentFormat": "JSON",
            "DocumentVersion": "$LATEST",
        }
        version = api.call("UpdateDocument", body)["DocumentDescription"]["DocumentVersion"]
        api.call(
            "UpdateDocumentDefaultVersion",
            {"Name": PREFERENCES_DOCUMENT, "DocumentVersion": version},
        )
    _print_preferences(inputs, output)


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as the preference key and its JSON value.

    Raises:
        click.BadParameter: an unknown key or a value of the wrong kind.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="KEY=VALUE")
    kind = PREFERENCE_KEYS.get(key)
    if kind is None:
        raise click.BadParameter(
            f"{key!r} is not a preference; known: {', '.join(PREFERENCE_KEYS)}",
            param_hint="KEY=VALUE",
        )
    if kind == "bool":
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise click.BadParameter(f"{key} is true or false, not {value!r}", param_hint=key)
        return key, lowered == "true"
    if kind == "minutes":
        value = value.strip()
        if value and not value.isdigit():
            raise click.BadParameter(
                f"{key} is a whole number of minutes (or empty), not {value!r}", param_hint=key
            )
        return key, value
    return key, value


def describe_preferences(applied: Mapping[str, Any]) -> str:
    """One line of what applied to a session (``sessions get``)."""
    parts = [f"idle {applied.get('IdleSessionTimeout')} min"]
    if applied.get("MaxSessionDuration") is not None:
        parts.append(f"max {applied['MaxSessionDuration']} min")
    if applied.get("RunAsEnabled"):
        parts.append(f"run as {applied.get('RunAsUser', '?')}")
    if applied.get("ShellProfile"):
        parts.append("shell profile")
    if applied.get("KmsKeyId"):
        parts.append(f"encrypted end to end with {applied['KmsKeyId']}")
    return ", ".join(parts)


# ---- helpers --------------------------------------------------------------------------------


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


def _read_content(path: str, document_format: str | None) -> tuple[str, str]:
    try:
        content = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--content") from None
    if document_format:
        return content, document_format.upper()
    return content, "YAML" if path.endswith((".yaml", ".yml")) else "JSON"


def _preferences_document(api: Any) -> dict[str, Any]:
    """The preferences document's latest version, as JSON (whatever its stored format)."""
    result = api.call(
        "GetDocument",
        {"Name": PREFERENCES_DOCUMENT, "DocumentVersion": "$LATEST", "DocumentFormat": "JSON"},
    )
    document = json.loads(result["Content"])
    if not isinstance(document, dict):
        from hatchway.errors import RemoteProtocolError

        raise RemoteProtocolError(f"{PREFERENCES_DOCUMENT} is not a JSON object")
    return document


def _print_preferences(inputs: Mapping[str, Any], output: str) -> None:
    from hatchway.client.output import print_json, print_table

    if output == "json":
        print_json({"Preferences": dict(inputs)})
        return
    rows = []
    for key in PREFERENCE_KEYS:
        if key.startswith("shellProfile."):
            profile = inputs.get("shellProfile")
            value = profile.get(key.split(".", 1)[1], "") if isinstance(profile, dict) else ""
        else:
            value = inputs.get(key, "")
        rows.append({"Key": key, "Value": value})
    print_table(rows, [("PREFERENCE", "Key"), ("VALUE", "Value")])


def _paginate(api: Any, operation: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    """Every page (``NextToken``) merged under ``key``."""
    from hatchway.errors import RemoteProtocolError

    items: list[Any] = []
    seen: set[str] = set()
    token: str | None = None
    while True:
        request = {**body, **({"NextToken": token} if token else {})}
        page = api.call(operation, request)
        items.extend(page.get(key) or [])
        token = page.get("NextToken")
        if not token:
            return {key: items}
        if token in seen:
            raise RemoteProtocolError(f"{operation}: the server repeated the token {token!r}")
        seen.add(token)


def _print(result: dict[str, Any], output: str, key: str, columns: Columns) -> None:
    from hatchway.client.output import print_json, print_table

    if output == "json":
        print_json(result)
        return
    print_table(result.get(key) or [], columns)


def _print_description(result: dict[str, Any], output: str, key: str) -> None:
    from hatchway.client.output import print_json, print_table, render_timestamps

    if output == "json":
        print_json(result)
        return
    described = render_timestamps(result.get(key) or {})
    rows = [{"Key": k, "Value": described[k]} for k in DESCRIPTION_KEYS if k in described]
    for parameter in described.get("Parameters") or []:
        default = f" = {parameter['DefaultValue']}" if "DefaultValue" in parameter else ""
        rows.append(
            {"Key": "Parameter", "Value": f"{parameter['Name']} ({parameter['Type']}){default}"}
        )
    print_table(rows, [("FIELD", "Key"), ("VALUE", "Value")])
