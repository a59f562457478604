"""``hatchway cluster status`` and the scale-out options of ``hatchway server``.

``cluster status`` calls ``Hatchway.DescribeCluster`` (action ``hatchway:DescribeCluster``) on
whichever replica the load balancer picks: every replica knows the alive ones (they announce
themselves every second). The CLI (``hatchway.cli``) loads this module only when it is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["NATS_OPTION_NAMES", "cluster", "cluster_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: The keyword arguments ``cluster_options`` collects into one ``cluster`` dict.
NATS_OPTION_NAMES = (
    "nats_url",
    "nats_token",
    "nats_credentials",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "cluster_prefix",
)

COLUMNS = [
    ("REPLICA", "ReplicaId"),
    ("ADDRESS", "Address"),
    ("VERSION", "Version"),
    ("UP SINCE", "Started"),
    ("CONTROL CHANNELS", "ControlChannels"),
    ("SESSIONS", "Sessions"),
    ("PIPES", "Pipes"),
    ("STATE", "State"),
]


def cluster_options(command: F) -> F:
    """Add the ``--nats-*`` and ``--cluster-prefix`` options to ``hatchway server``; the
    command receives them as one ``cluster`` dict (ServerSettings' field names)."""
    path = click.Path(path_type=Path, dir_okay=False)
    options = [
        click.option(
            "--nats-url",
            metavar="URL[,URL…]",
            help="Scale-out: NATS server(s) routing between replicas (needs --database-url "
            "postgresql://…); nats://[USER:PASSWORD@]HOST:PORT or tls://….",
        ),
        click.option(
            "--nats-token", envvar="HATCHWAY_NATS_TOKEN", help="NATS token (or the env var)."
        ),
        click.option("--nats-credentials", type=path, help="NATS .creds file (JWT + nkey)."),
        click.option("--nats-tls-ca", type=path, help="CA file to verify NATS's certificate."),
        click.option("--nats-tls-cert", type=path, help="Client certificate for NATS (TLS)."),
        click.option("--nats-tls-key", type=path, help="Its key."),
        click.option(
            "--cluster-prefix",
            default="hatchway",
            show_default=True,
            help="First token of the cluster's NATS subjects (clusters sharing a NATS differ).",
        ),
    ]

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["cluster"] = {name: kwargs.pop(name) for name in NATS_OPTION_NAMES}
        return command(*args, **kwargs)

    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


@click.group()
def cluster() -> None:
    """The server replicas of a scale-out installation."""


@cluster.command("status")
@click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """The replicas that are alive, what each holds, and their version."""
    from hatchway.client.config import open_api
    from hatchway.client.output import print_json, print_table

    api = open_api(ctx.obj["config"], ctx.obj["profile"])
    result = api.call("DescribeCluster", {}, service="Hatchway")
    if output == "json":
        print_json(result)
        return
    rows = []
    for replica in result.get("Replicas", []):
        row = dict(replica)
        started = replica.get("Started")
        if isinstance(started, int | float):
            row["Started"] = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(row)
    print_table(rows, COLUMNS)
    click.echo(f"{len(rows)} replica(s) alive; mode: {result.get('Mode', '?')}", err=True)
