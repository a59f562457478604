"""``hatchway iam …``: users, groups, access keys and policies, spelled like ``aws iam``.

Each command calls one ``Hatchway.<Operation>`` with IAM's member names and prints the response
as ``--output json`` (the whole response, as the ``aws`` CLI prints it: all pages of a listing
merged, policy documents as JSON objects, timestamps as ISO 8601) or ``--output table``. Most
commands are declared in one table (:data:`OPERATIONS`) and built from it, the way the ``aws``
CLI builds its commands from the service model; the few that print something special are
written out below it.

The CLI (``hatchway.cli``) loads this module only when ``hatchway iam`` is run.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click

from hatchway.client.awsargs import AwsCommand, ListOption, load_param, parse_context, parse_tags
from hatchway.errors import RemoteProtocolError

__all__ = ["OPERATIONS", "iam", "paginate"]

SERVICE = "Hatchway"

Columns = Sequence[tuple[str, str]]

USER_COLUMNS: Columns = [
    ("USER NAME", "UserName"),
    ("USER ID", "UserId"),
    ("ARN", "Arn"),
    ("CREATED", "CreateDate"),
    ("PASSWORD LAST USED", "PasswordLastUsed"),
    ("TAGS", "Tags"),
]
GROUP_COLUMNS: Columns = [
    ("GROUP NAME", "GroupName"),
    ("GROUP ID", "GroupId"),
    ("ARN", "Arn"),
    ("CREATED", "CreateDate"),
]
KEY_COLUMNS: Columns = [
    ("USER NAME", "UserName"),
    ("ACCESS KEY ID", "AccessKeyId"),
    ("STATUS", "Status"),
    ("CREATED", "CreateDate"),
    ("LAST USED", "LastUsedDate"),
]
NEW_KEY_COLUMNS: Columns = [
    ("USER NAME", "UserName"),
    ("ACCESS KEY ID", "AccessKeyId"),
    ("STATUS", "Status"),
    ("SECRET ACCESS KEY", "SecretAccessKey"),
    ("CREATED", "CreateDate"),
]
POLICY_COLUMNS: Columns = [
    ("POLICY NAME", "PolicyName"),
    ("ARN", "Arn"),
    ("DEFAULT VERSION", "DefaultVersionId"),
    ("ATTACHMENTS", "AttachmentCount"),
    ("UPDATED", "UpdateDate"),
    ("DESCRIPTION", "Description"),
]
VERSION_COLUMNS: Columns = [
    ("VERSION", "VersionId"),
    ("DEFAULT", "IsDefaultVersion"),
    ("CREATED", "CreateDate"),
]
ATTACHED_COLUMNS: Columns = [("POLICY NAME", "PolicyName"), ("POLICY ARN", "PolicyArn")]
TAG_COLUMNS: Columns = [("KEY", "Key"), ("VALUE", "Value")]
SIMULATION_COLUMNS: Columns = [
    ("DECISION", "EvalDecision"),
    ("ACTION", "EvalActionName"),
    ("RESOURCE", "EvalResourceName"),
    ("EXPLANATION", "Explanation"),
]

#: Members holding a policy document: a JSON string on the wire (URL-encoded in IAM's XML),
#: printed as a JSON object, as the ``aws`` CLI prints them.
DOCUMENT_MEMBERS = frozenset({"Document", "PolicyDocument"})

_OUTPUT_ARGS: dict[str, Any] = {
    "type": click.Choice(["table", "json"]),
    "default": "table",
    "show_default": True,
    "help": "Output format (json: the whole response).",
}
OUTPUT = click.option("--output", **_OUTPUT_ARGS)


class IamGroup(click.Group):
    """``hatchway iam``: its commands accept list values after one flag, like ``aws iam``."""

    command_class = AwsCommand


@click.group(cls=IamGroup)
def iam() -> None:
    """Users, groups, access keys and policies (flags as in `aws iam`)."""


# ---- the declared operations ----------------------------------------------------------------

ArgKind = Literal["text", "tags", "keys", "document", "flag", "choice"]


@dataclass(frozen=True)
class Arg:
    """One command-line flag and the request member it fills."""

    flag: str  # "--user-name"
    member: str  # "UserName"
    kind: ArgKind = "text"
    required: bool = True
    help: str = ""
    choices: tuple[str, ...] = ()

    def option(self) -> click.Option:
        name = self.flag[2:].replace("-", "_")
        if self.kind in ("tags", "keys"):
            metavar = "Key=K,Value=V" if self.kind == "tags" else "KEY"
            return ListOption(
                [self.flag, name], required=self.required, metavar=metavar, help=self.help
            )
        if self.kind == "flag":
            return click.Option(
                [f"{self.flag}/--no-{self.flag[2:]}", name], default=None, help=self.help
            )
        if self.kind == "choice":
            return click.Option(
                [self.flag, name],
                type=click.Choice(self.choices),
                required=self.required,
                help=self.help,
            )
        document = "JSON|file://PATH" if self.kind == "document" else None
        return click.Option(
            [self.flag, name], required=self.required, metavar=document, help=self.help
        )

    def value(self, raw: Any) -> Any:
        """The member's value from the option's, or None to leave the member out."""
        if raw is None or raw == ():
            return None
        if self.kind == "tags":
            return parse_tags(raw, self.flag)
        if self.kind == "keys":
            return list(raw)
        if self.kind == "document":
            return load_param(raw, self.flag)
        return raw


@dataclass(frozen=True)
class Table:
    """Print ``response[key]`` (a list, or one entity) as a table; ``paginate`` a listing."""

    key: str
    columns: Columns
    paginate: bool = False


@dataclass(frozen=True)
class Names:
    """Print ``response[key]``, a list of names, one per row; all pages."""

    key: str
    header: str


@dataclass(frozen=True)
class Done:
    """An operation that answers ``{}``: say what was done on stderr (formatted with the
    request's members)."""

    message: str


Show = Table | Names | Done


@dataclass(frozen=True)
class Operation:
    """One ``hatchway iam`` command: its name, the operation it calls and how it prints."""

    command: str
    operation: str
    summary: str
    args: tuple[Arg, ...]
    show: Show


USER = Arg("--user-name", "UserName")
USER_OPTIONAL = Arg(
    "--user-name", "UserName", required=False, help="Default: the user signing the request."
)
GROUP = Arg("--group-name", "GroupName")
POLICY_ARN = Arg("--policy-arn", "PolicyArn")
POLICY_NAME = Arg("--policy-name", "PolicyName")
DOCUMENT = Arg(
    "--policy-document", "PolicyDocument", "document", help="JSON, or file://PATH to read it from."
)
PATH = Arg("--path", "Path", required=False, help="IAM path (default /).")
ACCESS_KEY = Arg("--access-key-id", "AccessKeyId")
TAGS = Arg("--tags", "Tags", "tags", help="Key=K,Value=V (or K=V), several allowed.")

OPERATIONS: tuple[Operation, ...] = (
    # users
    Operation(
        "create-user",
        "CreateUser",
        "Create a user.",
        (USER, PATH, Arg("--tags", "Tags", "tags", required=False, help=TAGS.help)),
        Table("User", USER_COLUMNS),
    ),
    Operation(
        "delete-user",
        "DeleteUser",
        "Delete a user (it must have no access keys, groups or policies left).",
        (USER,),
        Done("deleted user {UserName}"),
    ),
    Operation(
        "get-user",
        "GetUser",
        "Show a user (its ARN too).",
        (USER_OPTIONAL,),
        Table("User", USER_COLUMNS),
    ),
    Operation(
        "list-users", "ListUsers", "List users.", (), Table("Users", USER_COLUMNS, paginate=True)
    ),
    Operation(
        "tag-user",
        "TagUser",
        "Add or replace tags of a user.",
        (USER, TAGS),
        Done("tagged user {UserName}"),
    ),
    Operation(
        "untag-user",
        "UntagUser",
        "Remove tags from a user.",
        (USER, Arg("--tag-keys", "TagKeys", "keys", help="Tag keys, several allowed.")),
        Done("untagged user {UserName}"),
    ),
    Operation(
        "list-user-tags",
        "ListUserTags",
        "List a user's tags.",
        (USER,),
        Table("Tags", TAG_COLUMNS, paginate=True),
    ),
    Operation(
        "delete-login-profile",
        "DeleteLoginProfile",
        "Remove a user's password.",
        (USER,),
        Done("removed the password of user {UserName}"),
    ),
    # groups
    Operation(
        "create-group",
        "CreateGroup",
        "Create a group.",
        (GROUP, PATH),
        Table("Group", GROUP_COLUMNS),
    ),
    Operation(
        "delete-group",
        "DeleteGroup",
        "Delete a group (it must have no members or policies left).",
        (GROUP,),
        Done("deleted group {GroupName}"),
    ),
    Operation(
        "list-groups",
        "ListGroups",
        "List groups.",
        (),
        Table("Groups", GROUP_COLUMNS, paginate=True),
    ),
    Operation(
        "add-user-to-group",
        "AddUserToGroup",
        "Add a user to a group.",
        (GROUP, USER),
        Done("added user {UserName} to group {GroupName}"),
    ),
    Operation(
        "remove-user-from-group",
        "RemoveUserFromGroup",
        "Remove a user from a group.",
        (GROUP, USER),
        Done("removed user {UserName} from group {GroupName}"),
    ),
    Operation(
        "list-groups-for-user",
        "ListGroupsForUser",
        "List the groups a user is in.",
        (USER,),
        Table("Groups", GROUP_COLUMNS, paginate=True),
    ),
    # access keys
    Operation(
        "update-access-key",
        "UpdateAccessKey",
        "Activate or deactivate an access key (an inactive key is refused at once).",
        (
            ACCESS_KEY,
            Arg("--status", "Status", "choice", choices=("Active", "Inactive")),
            USER_OPTIONAL,
        ),
        Done("access key {AccessKeyId} is now {Status}"),
    ),
    Operation(
        "delete-access-key",
        "DeleteAccessKey",
        "Delete an access key.",
        (ACCESS_KEY, USER_OPTIONAL),
        Done("deleted access key {AccessKeyId}"),
    ),
    Operation(
        "list-access-keys",
        "ListAccessKeys",
        "List a user's access keys (never their secrets).",
        (USER_OPTIONAL,),
        Table("AccessKeyMetadata", KEY_COLUMNS, paginate=True),
    ),
    # managed policies
    Operation(
        "create-policy",
        "CreatePolicy",
        "Create a managed policy (version v1).",
        (POLICY_NAME, DOCUMENT, Arg("--description", "Description", required=False), PATH),
        Table("Policy", POLICY_COLUMNS),
    ),
    Operation(
        "delete-policy",
        "DeletePolicy",
        "Delete a managed policy (it must be detached everywhere first).",
        (POLICY_ARN,),
        Done("deleted policy {PolicyArn}"),
    ),
    Operation(
        "get-policy",
        "GetPolicy",
        "Show a managed policy.",
        (POLICY_ARN,),
        Table("Policy", POLICY_COLUMNS),
    ),
    Operation(
        "list-policies",
        "ListPolicies",
        "List managed policies (built-in ones are the AWS scope).",
        (
            Arg(
                "--scope",
                "Scope",
                "choice",
                required=False,
                choices=("All", "AWS", "Local"),
                help="All (default), AWS (built-in) or Local.",
            ),
            Arg(
                "--only-attached",
                "OnlyAttached",
                "flag",
                help="Only policies attached to a user or group.",
            ),
        ),
        Table("Policies", POLICY_COLUMNS, paginate=True),
    ),
    Operation(
        "create-policy-version",
        "CreatePolicyVersion",
        "Add a version to a managed policy (5 at most).",
        (
            POLICY_ARN,
            DOCUMENT,
            Arg("--set-as-default", "SetAsDefault", "flag", help="Make it the default version."),
        ),
        Table("PolicyVersion", VERSION_COLUMNS),
    ),
    Operation(
        "list-policy-versions",
        "ListPolicyVersions",
        "List the versions of a managed policy.",
        (POLICY_ARN,),
        Table("Versions", VERSION_COLUMNS, paginate=True),
    ),
    Operation(
        "set-default-policy-version",
        "SetDefaultPolicyVersion",
        "Make a version the one in force.",
        (POLICY_ARN, Arg("--version-id", "VersionId")),
        Done("{VersionId} is now the default version of {PolicyArn}"),
    ),
    Operation(
        "delete-policy-version",
        "DeletePolicyVersion",
        "Delete a version that is not the default.",
        (POLICY_ARN, Arg("--version-id", "VersionId")),
        Done("deleted version {VersionId} of {PolicyArn}"),
    ),
    # attachments
    Operation(
        "attach-user-policy",
        "AttachUserPolicy",
        "Attach a managed policy to a user.",
        (USER, POLICY_ARN),
        Done("attached {PolicyArn} to user {UserName}"),
    ),
    Operation(
        "detach-user-policy",
        "DetachUserPolicy",
        "Detach a managed policy from a user.",
        (USER, POLICY_ARN),
        Done("detached {PolicyArn} from user {UserName}"),
    ),
    Operation(
        "attach-group-policy",
        "AttachGroupPolicy",
        "Attach a managed policy to a group.",
        (GROUP, POLICY_ARN),
        Done("attached {PolicyArn} to group {GroupName}"),
    ),
    Operation(
        "detach-group-policy",
        "DetachGroupPolicy",
        "Detach a managed policy from a group.",
        (GROUP, POLICY_ARN),
        Done("detached {PolicyArn} from group {GroupName}"),
    ),
    Operation(
        "list-attached-user-policies",
        "ListAttachedUserPolicies",
        "List the managed policies attached to a user.",
        (USER,),
        Table("AttachedPolicies", ATTACHED_COLUMNS, paginate=True),
    ),
    Operation(
        "list-attached-group-policies",
        "ListAttachedGroupPolicies",
        "List the managed policies attached to a group.",
        (GROUP,),
        Table("AttachedPolicies", ATTACHED_COLUMNS, paginate=True),
    ),
    # inline policies
    Operation(
        "put-user-policy",
        "PutUserPolicy",
        "Create or replace a user's inline policy.",
        (USER, POLICY_NAME, DOCUMENT),
        Done("put inline policy {PolicyName} of user {UserName}"),
    ),
    Operation(
        "put-group-policy",
        "PutGroupPolicy",
        "Create or replace a group's inline policy.",
        (GROUP, POLICY_NAME, DOCUMENT),
        Done("put inline policy {PolicyName} of group {GroupName}"),
    ),
    Operation(
        "delete-user-policy",
        "DeleteUserPolicy",
        "Delete a user's inline policy.",
        (USER, POLICY_NAME),
        Done("deleted inline policy {PolicyName} of user {UserName}"),
    ),
    Operation(
        "delete-group-policy",
        "DeleteGroupPolicy",
        "Delete a group's inline policy.",
        (GROUP, POLICY_NAME),
        Done("deleted inline policy {PolicyName} of group {GroupName}"),
    ),
    Operation(
        "list-user-policies",
        "ListUserPolicies",
        "List the names of a user's inline policies.",
        (USER,),
        Names("PolicyNames", "POLICY NAME"),
    ),
    Operation(
        "list-group-policies",
        "ListGroupPolicies",
        "List the names of a group's inline policies.",
        (GROUP,),
        Names("PolicyNames", "POLICY NAME"),
    ),
)


def _command(op: Operation) -> click.Command:
    options = [arg.option() for arg in op.args]

    @click.pass_context
    def callback(ctx: click.Context, output: str, **raw: Any) -> None:
        body: dict[str, Any] = {}
        for arg, option in zip(op.args, options, strict=True):
            value = arg.value(raw[str(option.name)])
            if value is not None:
                body[arg.member] = value
        api = _api(ctx)
        show = op.show
        if isinstance(show, Table):
            if show.paginate:
                result = paginate(api, op.operation, body, show.key)
            else:
                result = api.call(op.operation, body, service=SERVICE)
            _print(result, output, lambda: _print_table(result.get(show.key), show.columns))
        elif isinstance(show, Names):
            result = paginate(api, op.operation, body, show.key)
            rows = [{"Name": name} for name in result.get(show.key, [])]
            _print(result, output, lambda: _print_table(rows, [(show.header, "Name")]))
        else:
            result = api.call(op.operation, body, service=SERVICE)
            _print(result, output, lambda: None)
            click.echo(show.message.format_map(body), err=True)

    command = AwsCommand(
        op.command,
        callback=callback,
        params=[*options, _output_option()],
        help=f"{op.summary}\n\nCalls {SERVICE}.{op.operation}.",
        short_help=op.summary,
    )
    return command


def _output_option() -> click.Option:
    return click.Option(["--output"], **_OUTPUT_ARGS)


for _op in OPERATIONS:
    iam.add_command(_command(_op))


# ---- commands that print something special --------------------------------------------------


@iam.command("set-password", short_help="Set a user's password.")
@click.option("--user-name", required=True)
@click.option(
    "--password",
    help="The new password (at least 12 characters). Default: asked for twice on a terminal, "
    "else read as one line from stdin. A password on the command line is visible to other "
    "local users (process list, shell history): prefer the prompt or a pipe.",
)
@OUTPUT
@click.pass_context
def set_password(ctx: click.Context, user_name: str, password: str | None, output: str) -> None:
    """Set a user's password (Hatchway.SetPassword); never echoed."""
    if password is None:
        from hatchway.client.secretprompt import read_secret

        password = read_secret("New password", confirm=True)
    result = _api(ctx).call(
        "SetPassword", {"UserName": user_name, "Password": password}, service=SERVICE
    )
    _print(result, output, lambda: None)
    click.echo(f"password set for user {user_name}", err=True)


@iam.command("create-access-key", short_help="Create an access key.")
@click.option("--user-name", help="Default: the user signing the request.")
@OUTPUT
@click.pass_context
def create_access_key(ctx: click.Context, user_name: str | None, output: str) -> None:
    """Create an access key (2 per user at most); its secret is shown only now."""
    body = {"UserName": user_name} if user_name else {}
    result = _api(ctx).call("CreateAccessKey", body, service=SERVICE)
    _print(result, output, lambda: _print_table(result.get("AccessKey"), NEW_KEY_COLUMNS))
    if output == "table":
        click.echo(
            "The secret access key is shown only now and cannot be retrieved later: store it "
            "(e.g. `hatchway configure --profile NAME --access-key-id ID`).",
            err=True,
        )


@iam.command("get-access-key-last-used")
@click.option("--access-key-id", required=True)
@OUTPUT
@click.pass_context
def get_access_key_last_used(ctx: click.Context, access_key_id: str, output: str) -> None:
    """When and where an access key was last used."""
    result = _api(ctx).call("GetAccessKeyLastUsed", {"AccessKeyId": access_key_id}, service=SERVICE)
    row = {"UserName": result.get("UserName"), **(result.get("AccessKeyLastUsed") or {})}
    columns = [
        ("USER NAME", "UserName"),
        ("LAST USED", "LastUsedDate"),
        ("SERVICE", "ServiceName"),
        ("REGION", "Region"),
    ]
    _print(result, output, lambda: _print_table(row, columns))


@iam.command("get-group")
@click.option("--group-name", required=True)
@OUTPUT
@click.pass_context
def get_group(ctx: click.Context, group_name: str, output: str) -> None:
    """Show a group and its members."""
    result = paginate(_api(ctx), "GetGroup", {"GroupName": group_name}, "Users")

    def table() -> None:
        _print_table(result.get("Group"), GROUP_COLUMNS)
        click.echo()
        _print_table(result.get("Users"), USER_COLUMNS[:4])

    _print(result, output, table)


@iam.command("get-policy-version", short_help="Show a version of a managed policy.")
@click.option("--policy-arn", required=True)
@click.option("--version-id", required=True)
@OUTPUT
@click.pass_context
def get_policy_version(ctx: click.Context, policy_arn: str, version_id: str, output: str) -> None:
    """Show one version of a managed policy, with its document."""
    result = _api(ctx).call(
        "GetPolicyVersion", {"PolicyArn": policy_arn, "VersionId": version_id}, service=SERVICE
    )
    version = result.get("PolicyVersion") or {}
    _print(result, output, lambda: _print_document(version, VERSION_COLUMNS, "Document"))


def _inline_getter(kind: Literal["user", "group"]) -> click.Command:
    member = "UserName" if kind == "user" else "GroupName"
    operation = "GetUserPolicy" if kind == "user" else "GetGroupPolicy"

    @click.pass_context
    def callback(ctx: click.Context, output: str, **raw: str) -> None:
        body = {member: raw[f"{kind}_name"], "PolicyName": raw["policy_name"]}
        result = _api(ctx).call(operation, body, service=SERVICE)
        columns = [(f"{kind.upper()} NAME", member), ("POLICY NAME", "PolicyName")]
        _print(result, output, lambda: _print_document(result, columns, "PolicyDocument"))

    return AwsCommand(
        f"get-{kind}-policy",
        callback=callback,
        params=[
            click.Option([f"--{kind}-name"], required=True),
            click.Option(["--policy-name"], required=True),
            _output_option(),
        ],
        help=f"Show a {kind}'s inline policy.",
    )


iam.add_command(_inline_getter("user"))
iam.add_command(_inline_getter("group"))


@iam.command("simulate", short_help="Simulate a user's access to actions.")
@click.option("--user", required=True, help="User name or ARN.")
@click.option("--action", "actions", cls=ListOption, required=True, metavar="ACTION")
@click.option(
    "--resource",
    "resources",
    cls=ListOption,
    metavar="ARN|NODE-ID|DOCUMENT-NAME",
    help="A bare node id or document name is expanded to its ARN by the server. Default: *.",
)
@click.option("--context", "context", cls=ListOption, metavar="KEY=VALUE", help="Condition key.")
@OUTPUT
@click.pass_context
def simulate(
    ctx: click.Context,
    user: str,
    actions: tuple[str, ...],
    resources: tuple[str, ...],
    context: tuple[str, ...],
    output: str,
) -> None:
    """Would USER be allowed ACTION on RESOURCE? Prints each decision and what decided it.

    Calls Hatchway.SimulatePrincipalPolicy. The exit status is 0 whatever the decisions (it
    says the simulation ran): read the DECISION column, or EvalDecision in JSON.
    """
    api = _api(ctx)
    if not user.startswith("arn:"):  # a user name: IAM's operation takes the user's ARN
        user = api.call("GetUser", {"UserName": user}, service="Hatchway")["User"]["Arn"]
    body: dict[str, Any] = {"PolicySourceArn": user, "ActionNames": list(actions)}
    if resources:
        body["ResourceArns"] = list(resources)
    if context:
        body["ContextEntries"] = parse_context(context)
    result = paginate(api, "SimulatePrincipalPolicy", body, "EvaluationResults")
    _print(
        result,
        output,
        lambda: _print_table(result.get("EvaluationResults"), SIMULATION_COLUMNS),
    )


# ---- helpers --------------------------------------------------------------------------------


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


def paginate(api: Any, operation: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    """Every page of an IAM listing (``Marker``/``IsTruncated``) as one response: the first
    page's other members with all items under ``key``, without the paging members (as the
    ``aws`` CLI prints a listing).

    Raises:
        RemoteProtocolError: the server sent the same marker twice (it would never end).
    """
    first: dict[str, Any] | None = None
    items: list[Any] = []
    seen: set[str] = set()
    request = dict(body)
    while True:
        page = api.call(operation, request, service=SERVICE)
        first = first if first is not None else page
        items.extend(page.get(key) or [])
        marker = page.get("Marker")
        if not page.get("IsTruncated") or not marker:
            break
        if marker in seen:
            raise RemoteProtocolError(f"{operation}: the server repeated the marker {marker!r}")
        seen.add(marker)
        request = {**body, "Marker": marker}
    result = {k: v for k, v in first.items() if k not in ("IsTruncated", "Marker")}
    result[key] = items
    return result


def _print(result: dict[str, Any], output: str, table: Callable[[], None]) -> None:
    """JSON: the whole response (nothing for an empty one, as the ``aws`` CLI); else ``table``."""
    from hatchway.client.output import print_json

    if output == "json":
        if result:
            print_json(decode_documents(result))
    else:
        table()


def _print_table(rows: Any, columns: Columns) -> None:
    from hatchway.client.output import print_table

    if isinstance(rows, dict):
        rows = [rows]
    print_table(rows or [], columns)


def _print_document(entity: dict[str, Any], columns: Columns, member: str) -> None:
    from hatchway.client.output import escape_controls

    _print_table(entity, columns)
    document = decode_documents({member: entity.get(member)})[member]
    text = json.dumps(document, indent=4) if not isinstance(document, str) else document
    click.echo()
    for line in text.splitlines():
        click.echo(escape_controls(line))


def decode_documents(data: Any) -> Any:
    """Copy of ``data`` with policy documents (JSON strings, URL-encoded or not) as objects."""
    if isinstance(data, dict):
        return {
            k: _document(v) if k in DOCUMENT_MEMBERS else decode_documents(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [decode_documents(v) for v in data]
    return data


def _document(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = urllib.parse.unquote(value) if value.lstrip().startswith("%") else value
    try:
        return json.loads(text)
    except ValueError:
        return value
