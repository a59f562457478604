"""The ``hatchway`` command line.

Imports are lazy: a client command must not pay for the server's dependencies (docs/design.md,
"Performance choices"). Errors become one line on stderr and a non-zero exit status;
JSON output goes alone to stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from hatchway import __version__
from hatchway.client.awsargs import AwsCommand, ListOption
from hatchway.client.cluster_cli import cluster_options
from hatchway.client.exitstatus import ExitStatus
from hatchway.errors import HatchwayError

GLOBAL_OPTIONS = ("--config", "--profile")
OUTPUT = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


class HatchwayGroup(click.Group):
    """A group whose global options may also come after the subcommand, and whose big command
    groups (``iam``) are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            [
                *super().list_commands(ctx),
                "iam",
                "audit",
                "events",
                "kms",
                "logs",
                "documents",
                "preferences",
                "cluster",
            ]
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "iam":
            from hatchway.client.iam_cli import iam

            return iam
        if cmd_name == "audit":
            from hatchway.client.audit_cli import audit

            return audit
        if cmd_name == "events":
            from hatchway.client.events_cli import events

            return events
        if cmd_name == "kms":
            from hatchway.client.kms_cli import kms

            return kms
        if cmd_name == "logs":
            from hatchway.client.logs_cli import logs

            return logs
        if cmd_name == "cluster":
            from hatchway.client.cluster_cli import cluster

            return cluster
        if cmd_name in ("documents", "preferences"):
            from hatchway.client import documents_cli

            command: click.Command = getattr(documents_cli, cmd_name)
            return command
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        hoisted: list[str] = []
        rest: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rest.extend(args[i:])
                break
            name = arg.split("=", 1)[0]
            if name in GLOBAL_OPTIONS:
                if "=" in arg:
                    hoisted.append(arg)
                elif i + 1 < len(args):
                    hoisted.extend(args[i : i + 2])
                    i += 1
                else:
                    hoisted.append(arg)
            else:
                rest.append(arg)
            i += 1
        return super().parse_args(ctx, hoisted + rest)


@click.group(cls=HatchwayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", metavar="FILE", help="Client config file (TOML).")
@click.option("--profile", "profile", metavar="NAME", help="Profile in the config file.")
@click.version_option(__version__, prog_name="hatchway")
@click.pass_context
def cli(ctx: click.Context, config: str | None, profile: str | None) -> None:
    """Hatchway: reach your nodes through a server they dial out to."""
    ctx.obj = {"config": config, "profile": profile}


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


def _emit(data: dict[str, Any], output: str, columns: list[tuple[str, str]], key: str) -> None:
    from hatchway.client.output import print_json, print_table

    if output == "json":
        print_json(data)
    else:
        print_table(data.get(key, []), columns)


def _fail(message: str, status: int = ExitStatus.ERROR) -> NoReturn:
    click.echo(f"hatchway: {message}", err=True)
    sys.exit(status)


# ---- server ---------------------------------------------------------------------------------


@cli.command()
@click.option("--data-dir", required=True, type=click.Path(path_type=Path), help="State dir.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT.")
@click.option("--no-tls", is_flag=True, help="Plain HTTP (loopback addresses only).")
@click.option("--public-url", help="Base URL clients use (StreamUrl); default: request Host.")
@click.option("--tls-san", multiple=True, help="Extra name or IP for the server certificate.")
@click.option("--master-key-file", type=click.Path(path_type=Path), help="Master key path.")
@click.option(
    "--database-url",
    help="postgresql://USER@HOST/DB to share state between replicas "
    "(default: SQLite in --data-dir).",
)
@click.option("--region", default="local", show_default=True, help="SigV4 region.")
@click.option(
    "--disconnect-grace",
    type=click.FloatRange(1, 86400),
    default=120,
    show_default=True,
    help="Seconds a session waits for a vanished client or agent to come back.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(16),
    help="Open connections at most [default: the file descriptor limit minus 10%].",
)
@click.option(
    "--max-connections-per-source",
    type=click.IntRange(1),
    help="Open connections at most from one address (IPv6: one /64) "
    "[default: a quarter of --max-connections, at least 1024].",
)
@click.option(
    "--activation-lock-after",
    type=click.IntRange(1, 1_000_000),
    default=20,
    show_default=True,
    help="Wrong activation codes after which an activation is locked.",
)
@click.option(
    "--recordings",
    metavar="local|s3://BUCKET[/PREFIX]",
    help="Where session recordings go [default: local, DATA-DIR/recordings].",
)
@click.option("--recordings-endpoint-url", metavar="URL", help="S3-compatible endpoint.")
@click.option("--recordings-region", metavar="REGION", help="The object store's region.")
@click.option("--record-input", is_flag=True, help="Also record what users type (i events).")
@click.option(
    "--recordings-kms-key",
    metavar="KEY",
    help="Encrypt recordings at rest with this KMS key (id, ARN or alias/NAME).",
)
@click.option("--log-group", metavar="NAME", help="Log group sessions stream their output to.")
@click.option(
    "--recordings-retention-days",
    type=click.IntRange(0, 100_000),
    help="Delete recordings of sessions that ended longer ago [default: keep].",
)
@click.option(
    "--logs-retention-days",
    type=click.IntRange(0, 100_000),
    help="Delete log events older than this (a group's own policy wins) [default: keep].",
)
@click.option(
    "--audit-retention-days",
    type=click.IntRange(1, 100_000),
    help="Delete audit records older than this; the chain stays verifiable [default: keep].",
)
@click.option(
    "--retention-interval",
    type=click.FloatRange(1, 86400),
    default=3600,
    show_default=True,
    help="Seconds between runs of the retention job.",
)
@click.option(
    "--console-idle-timeout",
    type=click.FloatRange(10, 7 * 86400),
    default=1800,
    show_default=True,
    help="Seconds of no use after which a console sign-in ends.",
)
@click.option(
    "--console-lifetime",
    type=click.FloatRange(60, 30 * 86400),
    default=43200,
    show_default=True,
    help="Seconds after which a console sign-in ends, used or not.",
)
@click.option(
    "--console-resume-window",
    type=click.FloatRange(1, 86400),
    default=120,
    show_default=True,
    help="Seconds a console terminal waits for its page to come back before ending the session.",
)
@click.option(
    "--preference-minute",
    type=click.FloatRange(min=0.05, max=60.0),
    default=60.0,
    hidden=True,
    envvar="HATCHWAY_TEST_PREFERENCE_SECONDS",
    help="Tests only: seconds per minute of idleSessionTimeout and maxSessionDuration.",
)
@cluster_options
def server(
    data_dir: Path,
    listen: str,
    no_tls: bool,
    public_url: str | None,
    tls_san: tuple[str, ...],
    master_key_file: Path | None,
    database_url: str | None,
    region: str,
    disconnect_grace: float,
    max_connections: int | None,
    max_connections_per_source: int | None,
    activation_lock_after: int,
    recordings: str | None,
    recordings_endpoint_url: str | None,
    recordings_region: str | None,
    record_input: bool,
    recordings_kms_key: str | None,
    log_group: str | None,
    recordings_retention_days: int | None,
    logs_retention_days: int | None,
    audit_retention_days: int | None,
    retention_interval: float,
    console_idle_timeout: float,
    console_lifetime: float,
    console_resume_window: float,
    preference_minute: float,
    cluster: dict[str, Any],
) -> None:
    """Run the Hatchway server on embedded defaults (SQLite, local files), or as one replica
    of several (--database-url postgresql://… --nats-url nats://…)."""
    from hatchway.server.recordingstorage import parse_recordings_option
    from hatchway.server.settings import ServerSettings, is_loopback, parse_listen
    from hatchway.service import run_server

    parse_recordings_option(recordings)  # a bad value is one line now, not at start-up
    if log_group is not None:
        from hatchway.server.logs import check_group_name

        check_group_name(log_group, what="--log-group")
    host, port = parse_listen(listen)
    if no_tls and not is_loopback(host):
        _fail("--no-tls is only allowed on a loopback listen address")
    settings = ServerSettings(
        data_dir=data_dir.expanduser().resolve(),
        host=host,
        port=port,
        tls=not no_tls,
        public_url=public_url,
        tls_sans=tls_san,
        master_key_file=master_key_file,
        database_url=database_url,
        region=region,
        disconnect_grace=disconnect_grace,
        max_connections=max_connections,
        max_connections_per_source=max_connections_per_source,
        activation_lock_after=activation_lock_after,
        recordings=recordings,
        recordings_endpoint_url=recordings_endpoint_url,
        recordings_region=recordings_region,
        record_input=record_input,
        recordings_kms_key=recordings_kms_key,
        log_group=log_group,
        recordings_retention_days=recordings_retention_days,
        logs_retention_days=logs_retention_days,
        audit_retention_days=audit_retention_days,
        retention_interval=retention_interval,
        console_idle_timeout=console_idle_timeout,
        console_lifetime=console_lifetime,
        console_resume_window=console_resume_window,
        preference_minute=preference_minute,
        **cluster,
    )
    run_server(settings)


# ---- activations ----------------------------------------------------------------------------


@cli.group()
def activation() -> None:
    """Create, list and delete activations (how nodes register)."""


def _parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90m, 24h or 7d") from None


@activation.command("create")
@click.option("--registration-limit", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--expires-in", default="24h", show_default=True, help="e.g. 90m, 24h, 30d.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag for registered nodes.")
@click.option("--default-instance-name", default="", help="Name given to registered nodes.")
@click.option("--description", default="")
@OUTPUT
@click.pass_context
def activation_create(
    ctx: click.Context,
    registration_limit: int,
    expires_in: str,
    tags: tuple[str, ...],
    default_instance_name: str,
    description: str,
    output: str,
) -> None:
    """Create an activation; prints its id and code."""
    import time

    seconds = _parse_duration(expires_in)
    if not 0 < seconds <= 30 * 86400:
        raise click.BadParameter("must be more than 0 and at most 30d", param_hint="--expires-in")
    tag_list = []
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{tag!r} is not K=V", param_hint="--tag")
        tag_list.append({"Key": key, "Value": value})
    body: dict[str, Any] = {
        "RegistrationLimit": registration_limit,
        "ExpirationDate": time.time() + seconds,
        "DefaultInstanceName": default_instance_name,
        "Description": description,
        "IamRole": "",
    }
    if tag_list:
        body["Tags"] = tag_list
    result = _api(ctx).call("CreateActivation", body)
    if output == "json":
        from hatchway.client.output import print_json

        print_json(result)
    else:
        click.echo(f"ActivationId:   {result['ActivationId']}")
        click.echo(f"ActivationCode: {result['ActivationCode']}")


@activation.command("list")
@OUTPUT
@click.pass_context
def activation_list(ctx: click.Context, output: str) -> None:
    """List activations."""
    api = _api(ctx)
    result = _paginate(api, "DescribeActivations", {}, "ActivationList")
    _emit(
        result,
        output,
        [
            ("ACTIVATION ID", "ActivationId"),
            ("NAME", "DefaultInstanceName"),
            ("USED", "RegistrationsCount"),
            ("LIMIT", "RegistrationLimit"),
            ("EXPIRES", "ExpirationDate"),
            ("EXPIRED", "Expired"),
            ("FAILED", "FailedAttempts"),
            ("LOCKED", "Locked"),
            ("TAGS", "Tags"),
        ],
        "ActivationList",
    )


@activation.command("delete")
@click.argument("activation_id")
@click.pass_context
def activation_delete(ctx: click.Context, activation_id: str) -> None:
    """Delete an activation (registered nodes stay)."""
    _api(ctx).call("DeleteActivation", {"ActivationId": activation_id})
    click.echo(f"deleted activation {activation_id}", err=True)


def _paginate(api: Any, operation: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    items: list[Any] = []
    token = None
    while True:
        page = api.call(operation, {**body, **({"NextToken": token} if token else {})})
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return {key: items}


# ---- agent ----------------------------------------------------------------------------------


@cli.group()
def agent() -> None:
    """Register this node and run its agent."""


@agent.command("register")
@click.option("--endpoint", required=True, help="Server URL, e.g. https://server:8443.")
@click.option("--ca-file", type=click.Path(path_type=Path), help="The server's CA certificate.")
@click.option("--ca-fingerprint", help="SHA-256 of the server's CA (hex, colons optional).")
@click.option("--activation-id", required=True)
@click.option("--activation-code", required=True)
@click.option("--state-dir", required=True, type=click.Path(path_type=Path))
@click.option("--region", default="local", show_default=True)
def agent_register(
    endpoint: str,
    ca_file: Path | None,
    ca_fingerprint: str | None,
    activation_id: str,
    activation_code: str,
    state_dir: Path,
    region: str,
) -> None:
    """Register this node with an activation; prints the node id."""
    from hatchway.agent.registration import register

    if endpoint.startswith("https:") and (ca_file is None) == (ca_fingerprint is None):
        _fail("give exactly one of --ca-file or --ca-fingerprint")
    state = register(
        endpoint=endpoint,
        activation_id=activation_id,
        activation_code=activation_code,
        state_dir=state_dir.expanduser().resolve(),
        ca_file=ca_file.expanduser().resolve() if ca_file else None,
        ca_fingerprint=ca_fingerprint,
        region=region,
    )
    click.echo(state.node_id)


@agent.command("run")
@click.option("--state-dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--run-as-default",
    default="hatchway-user",
    show_default=True,
    help="User for sessions when the agent runs as root.",
)
def agent_run(state_dir: Path, run_as_default: str) -> None:
    """Keep this node connected to the server and run its sessions."""
    from hatchway.service import run_agent

    run_agent(state_dir.expanduser().resolve(), run_as_default)


# ---- nodes and sessions ---------------------------------------------------------------------

NODE_COLUMNS = [
    ("NODE ID", "InstanceId"),
    ("NAME", "Name"),
    ("STATUS", "PingStatus"),
    ("COMPUTER", "ComputerName"),
    ("IP", "IPAddress"),
    ("PLATFORM", "PlatformName"),
    ("AGENT", "AgentVersion"),
    ("LAST PING", "LastPingDateTime"),
    ("TAGS", "Tags"),
]
SESSION_COLUMNS = [
    ("SESSION ID", "SessionId"),
    ("TARGET", "Target"),
    ("STATUS", "Status"),
    ("STARTED", "StartDate"),
    ("ENDED", "EndDate"),
    ("OWNER", "Owner"),
    ("REASON", "Reason"),
]


@cli.group(invoke_without_command=True)
@OUTPUT
@click.option(
    "--page-size",
    type=click.IntRange(5, 50),
    default=50,
    show_default=True,
    help="Nodes per DescribeInstanceInformation page (MaxResults); all pages are listed.",
)
@click.pass_context
def nodes(ctx: click.Context, output: str, page_size: int) -> None:
    """List managed nodes (DescribeInstanceInformation), every page over one connection."""
    if ctx.invoked_subcommand is None:
        with _api(ctx) as api:
            result = _paginate(
                api,
                "DescribeInstanceInformation",
                {"MaxResults": page_size},
                "InstanceInformationList",
            )
        _emit(result, output, NODE_COLUMNS, "InstanceInformationList")


@nodes.command("deregister")
@click.argument("node_id")
@click.pass_context
def nodes_deregister(ctx: click.Context, node_id: str) -> None:
    """Deregister a node: its agent is disconnected at once and cannot come back."""
    _api(ctx).call("DeregisterManagedInstance", {"InstanceId": node_id})
    click.echo(f"deregistered {node_id}", err=True)


@nodes.command("tag", cls=AwsCommand)
@click.argument("node_id")
@click.option(
    "--tags",
    cls=ListOption,
    required=True,
    metavar="Key=K,Value=V",
    help="Tags to add or replace (also K=V), several allowed.",
)
@click.pass_context
def nodes_tag(ctx: click.Context, node_id: str, tags: tuple[str, ...]) -> None:
    """Add or replace tags of a node (AddTagsToResource)."""
    from hatchway.client.awsargs import parse_tags

    body = {"ResourceType": "ManagedInstance", "ResourceId": node_id, "Tags": parse_tags(tags)}
    _api(ctx).call("AddTagsToResource", body)
    click.echo(f"tagged {node_id}", err=True)


@nodes.command("untag", cls=AwsCommand)
@click.argument("node_id")
@click.option("--tag-keys", cls=ListOption, required=True, metavar="KEY", help="Several allowed.")
@click.pass_context
def nodes_untag(ctx: click.Context, node_id: str, tag_keys: tuple[str, ...]) -> None:
    """Remove tags from a node (RemoveTagsFromResource)."""
    body = {"ResourceType": "ManagedInstance", "ResourceId": node_id, "TagKeys": list(tag_keys)}
    _api(ctx).call("RemoveTagsFromResource", body)
    click.echo(f"untagged {node_id}", err=True)


@nodes.command("tags")
@click.argument("node_id")
@OUTPUT
@click.pass_context
def nodes_tags(ctx: click.Context, node_id: str, output: str) -> None:
    """List a node's tags (ListTagsForResource)."""
    body = {"ResourceType": "ManagedInstance", "ResourceId": node_id}
    result = _api(ctx).call("ListTagsForResource", body)
    _emit(result, output, [("KEY", "Key"), ("VALUE", "Value")], "TagList")


@cli.group(invoke_without_command=True)
@click.option(
    "--state", type=click.Choice(["Active", "History"]), default="Active", show_default=True
)
@OUTPUT
@click.pass_context
def sessions(ctx: click.Context, state: str, output: str) -> None:
    """List sessions (DescribeSessions)."""
    if ctx.invoked_subcommand is None:
        result = _paginate(_api(ctx), "DescribeSessions", {"State": state}, "Sessions")
        _emit(result, output, SESSION_COLUMNS, "Sessions")


@sessions.command("get")
@click.argument("session_id")
@OUTPUT
@click.pass_context
def sessions_get(ctx: click.Context, session_id: str, output: str) -> None:
    """One session in full, active or past: status, times, exit code, and the connections a
    port-forward or SSH session carried."""
    api = _api(ctx)
    found: list[Any] = []
    for state in ("Active", "History"):
        filters = [{"key": "SessionId", "value": session_id}]
        found = api.call("DescribeSessions", {"State": state, "Filters": filters})["Sessions"]
        if found:
            break
    if not found:
        _fail(f"no session {session_id}")
    result = {"Sessions": found}
    if output == "json":
        from hatchway.client.output import print_json

        print_json(result)
        return
    from hatchway.client.output import print_table, render_timestamps

    session = render_timestamps(found[0])
    details = [
        {"Key": key, "Value": session.get(key)}
        for key in (
            "SessionId", "Target", "Status", "Owner", "DocumentName", "StartDate", "EndDate",
            "Reason", "Details", "ExitCode",
        )
        if session.get(key) is not None
    ]  # fmt: skip
    if isinstance(recording := session.get("Recording"), dict):
        shown = f"{recording.get('State')}, {recording.get('Size')} bytes"
        if recording.get("Reason"):  # e.g. not recorded: encrypted end to end
            shown = f"{recording.get('State')}: {recording.get('Reason')}"
        details.append({"Key": "Recording", "Value": shown})
    if isinstance(applied := session.get("Preferences"), dict):  # what applied at its start
        from hatchway.client.documents_cli import describe_preferences

        details.append({"Key": "Preferences", "Value": describe_preferences(applied)})
    print_table(details, [("FIELD", "Key"), ("VALUE", "Value")])
    connections = session.get("Connections") or []
    if connections:
        click.echo("")
        print_table(
            connections,
            [
                ("DESTINATION", "Destination"),
                ("OPENED", "OpenedDate"),
                ("CLOSED", "ClosedDate"),
                ("BYTES IN", "BytesIn"),
                ("BYTES OUT", "BytesOut"),
                ("ERROR", "Error"),
            ],
        )


@sessions.command("get-recording")
@click.argument("session_id")
@click.option("-o", "--output-file", "output", required=True, metavar="FILE", help="- for stdout.")
@click.pass_context
def sessions_get_recording(ctx: click.Context, session_id: str, output: str) -> None:
    """Download a session's recording (asciicast v2), byte for byte."""
    from hatchway.client.recordings_cli import download

    download(_api(ctx), session_id, output)


@sessions.command("play")
@click.argument("session_id")
@click.option("--speed", type=click.FloatRange(0.01, 1000), default=1.0, show_default=True)
@click.option(
    "--idle-limit",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="Longest pause replayed, in seconds (0: no limit).",
)
@click.pass_context
def sessions_play(ctx: click.Context, session_id: str, speed: float, idle_limit: float) -> None:
    """Replay a session's recording in this terminal with its original timing."""
    from hatchway.client.recordings_cli import chunks, play

    play(chunks(_api(ctx), session_id), sys.stdout.buffer, speed=speed,
         idle_limit=idle_limit or None)  # fmt: skip


def _run_session(api: Any, body: dict[str, Any], handler: Any) -> NoReturn:
    """StartSession with ``body``, run ``handler`` over it and exit with its status.

    A session ended here (a time-out, Ctrl-C) is also terminated through the API, in case
    the agent did not act on our Flag TerminateSession.
    """
    from hatchway import eventloop
    from hatchway.client.session import ClientSession

    session = ClientSession.from_start(
        api, api.call("StartSession", body), handler, target=body["Target"]
    )
    status = eventloop.run(session.run())
    if session.terminated_here:
        import contextlib

        with contextlib.suppress(HatchwayError):  # the session has ended anyway
            api.call("TerminateSession", {"SessionId": session.session_id})
    # The session is over and the terminal restored: skip interpreter teardown (~20 ms of
    # module and object finalisation), as a C client would simply exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _session_body(target: str, reason: str | None, document: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"Target": target}
    if reason:
        body["Reason"] = reason
    if document:
        body["DocumentName"] = document
    return body


@cli.command("start-session")
@click.option("--target", required=True, help="Node id (mi-...).")
@click.option("--reason", help="Why (recorded with the session).")
@click.option(
    "--document-name",
    "--document",
    "document_name",
    help="Session document (default SSM-SessionManagerRunShell).",
)
@click.option(
    "--parameters",
    metavar="K=V[,K=V...]|JSON",
    help='Document parameters: key=value[,key=value...] or JSON like \'{"k":["v"]}\'.',
)
@click.pass_context
def start_session(
    ctx: click.Context,
    target: str,
    reason: str | None,
    document_name: str | None,
    parameters: str | None,
) -> None:
    """Start a session on a node: a shell, or what the document says (a command, a port
    forward, stdio for SSH)."""
    from hatchway.client.documents import DocumentHandler, parse_parameters

    body = _session_body(target, reason, document_name)
    if parameters is not None:
        try:
            body["Parameters"] = parse_parameters(parameters)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--parameters") from None
    api = _api(ctx)
    if document_name is None:
        from hatchway.client.shell import ShellHandler

        _run_session(api, body, ShellHandler())
    _run_session(api, body, DocumentHandler())


@cli.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--target", required=True, help="Node id (mi-...).")
@click.option("--reason", help="Why (recorded with the session).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds after which the session is terminated (exit status 124).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    target: str,
    reason: str | None,
    timeout: float | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND on a node without a terminal: its stdout, stderr and exit status are
    yours, stdin is forwarded (put `--` before the command)."""
    import shlex

    from hatchway.client.command import CommandHandler, stdin_or_none

    body = _session_body(target, reason, "AWS-StartNonInteractiveCommand")
    body["Parameters"] = {"command": [shlex.join(command)]}
    _run_session(_api(ctx), body, CommandHandler(stdin_fd=stdin_or_none(0), timeout=timeout))


@cli.command("ssh-proxy")
@click.option("--target", required=True, help="Node id (mi-...).")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--reason", help="Why (recorded with the session).")
@click.pass_context
def ssh_proxy(ctx: click.Context, target: str, port: int, reason: str | None) -> None:
    """Connect stdin and stdout to a TCP port on a node (AWS-StartSSHSession), e.g. as
    ssh's ProxyCommand: `ssh -o ProxyCommand='hatchway ssh-proxy --target %h' user@mi-...`."""
    from hatchway.client.stdio import StdioHandler

    body = _session_body(target, reason, "AWS-StartSSHSession")
    body["Parameters"] = {"portNumber": [str(port)]}
    _run_session(_api(ctx), body, StdioHandler())


@cli.command("port-forward")
@click.option("--target", required=True, help="Node id (mi-...).")
@click.option("--remote-port", type=click.IntRange(1, 65535), required=True)
@click.option("--remote-host", help="Host to reach from the node [default: the node itself].")
@click.option(
    "--local-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="0 picks a free port.",
)
@click.option("--local-address", default="127.0.0.1", show_default=True)
@click.option("--reason", help="Why (recorded with the session).")
@click.pass_context
def port_forward(
    ctx: click.Context,
    target: str,
    remote_port: int,
    remote_host: str | None,
    local_port: int,
    local_address: str,
    reason: str | None,
) -> None:
    """Forward a local TCP port to a port on a node (or a host it reaches); prints
    `Listening on ADDRESS:PORT` once listening. Any number of connections; Ctrl-C ends."""
    from hatchway.client.portforward import PortForwardHandler

    parameters = {"portNumber": [str(remote_port)], "localPortNumber": [str(local_port)]}
    document = "AWS-StartPortForwardingSession"
    if remote_host:
        document = "AWS-StartPortForwardingSessionToRemoteHost"
        parameters["host"] = [remote_host]
    body = _session_body(target, reason, document)
    body["Parameters"] = parameters
    handler = PortForwardHandler(
        local_address=local_address,
        local_port=local_port,
        destination=f"{remote_host or 'localhost'}:{remote_port}",
    )
    _run_session(_api(ctx), body, handler)


@cli.command("terminate-session")
@click.argument("session_id")
@click.pass_context
def terminate_session(ctx: click.Context, session_id: str) -> None:
    """End a session: both ends see it close."""
    _api(ctx).call("TerminateSession", {"SessionId": session_id})
    click.echo(f"terminated {session_id}", err=True)


# ---- client configuration ---------------------------------------------------------------


@cli.command()
# The global --profile is hoisted to the group (HatchwayGroup), so its value is read from
# ctx.obj; declared here too so that `configure --help` shows it.
@click.option("--profile", "_profile", metavar="NAME", help="The profile to write [default].")
@click.option("--endpoint", help="Server URL, e.g. https://server:8443.")
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The server's CA certificate (stored as an absolute path).",
)
@click.option("--access-key-id", help="Your access key id.")
@click.option(
    "--secret-access-key",
    help="Its secret. Default: asked for (or read from stdin when piped) if --access-key-id "
    "is given or the profile has none yet.",
)
@click.option("--region", help="SigV4 region [default: local].")
@click.pass_context
def configure(
    ctx: click.Context,
    _profile: str | None,
    endpoint: str | None,
    ca_file: Path | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
) -> None:
    """Write or update a profile in the client config file (mode 0600).

    Options not given keep the profile's current values; other profiles stay as they are.
    """
    import urllib.parse

    from hatchway.client.config import (
        PROFILE_KEYS,
        config_path,
        profile_name,
        read_profiles,
        save_profile,
    )
    from hatchway.client.secretprompt import read_secret

    path = config_path(ctx.obj["config"])
    name = profile_name(ctx.obj["profile"])
    current = read_profiles(path).get(name)
    existing = current if isinstance(current, dict) else {}
    values: dict[str, str] = {}
    if endpoint is not None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise click.BadParameter("must be an http(s) URL", param_hint="--endpoint")
        values["endpoint"] = endpoint
    if ca_file is not None:
        ca = ca_file.expanduser().resolve()
        if not ca.is_file():
            raise click.BadParameter(f"{ca} is not a file", param_hint="--ca-file")
        values["ca_file"] = str(ca)
    if region:
        values["region"] = region
    elif not existing.get("region"):
        values["region"] = "local"
    if access_key_id:
        values["access_key_id"] = access_key_id
    merged = {**existing, **values}
    missing = [
        f"--{k.replace('_', '-')}" for k in ("endpoint", "access_key_id") if not merged.get(k)
    ]
    if missing:
        raise click.UsageError(f"profile {name!r} is new or incomplete: give {', '.join(missing)}")
    if secret_access_key is None and (access_key_id or not existing.get("secret_access_key")):
        secret_access_key = read_secret("Secret access key", confirm=False)
    if secret_access_key is not None:
        values["secret_access_key"] = secret_access_key
    save_profile(path, name, {k: values[k] for k in PROFILE_KEYS if k in values})
    click.echo(f"wrote profile {name} to {path}", err=True)


# ---- up -------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="Default ~/.local/share/hatchway."
)
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT.")
@click.option("--run-as-default", default="hatchway-user", show_default=True)
@click.pass_context
def up(ctx: click.Context, data_dir: Path | None, listen: str, run_as_default: str) -> None:
    """Quickstart: server + local agent on this machine, ready for start-session."""
    from hatchway.quickstart import run_up

    if data_dir is None:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        data_dir = Path(base) / "hatchway"
    run_up(
        data_dir.expanduser().resolve(),
        listen=listen,
        run_as_default=run_as_default,
        config=ctx.obj["config"],
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, never a traceback.

    ``HATCHWAY_DEBUG=1`` adds the traceback of an unexpected error, for bug reports.
    """
    try:
        cli.main(args=argv, prog_name="hatchway", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", ExitStatus.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except HatchwayError as exc:
        code = getattr(exc, "code", "")
        prefix = f"{code}: " if code and exc.__class__.__name__ == "ApiError" else ""
        _fail(prefix + _one_line(exc.message))
    except KeyboardInterrupt:
        _fail("interrupted", ExitStatus.INTERRUPTED)
    except BrokenPipeError:
        sys.exit(ExitStatus.ERROR)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(_one_line(f"{exc.strerror or exc}{where}"))
    except Exception as exc:  # the last line of defence: never a traceback to a user
        if os.environ.get("HATCHWAY_DEBUG"):
            import traceback

            traceback.print_exc()
        _fail(_one_line(f"unexpected error ({type(exc).__name__}): {exc}"))


def _one_line(text: str) -> str:
    """``text`` on one line, without control characters, cut to a readable length."""
    from hatchway.client.output import escape_controls

    flat = escape_controls(" ".join(text.split()))
    return flat if len(flat) <= 500 else flat[:499] + "…"


if __name__ == "__main__":
    main()
