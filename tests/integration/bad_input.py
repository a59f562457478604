"""What the bad-input tests (``test_bad_*.py``) share.

Each of those tests does one bad thing through the real CLI (or, for the data channel, through a
real WebSocket), checks how it was refused, and then checks that the shared node is still Online
and that a normal piped shell session through the CLI still prints ``ok-2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hatchway.client.config import load_profile
from hatchway.client.session import ClientSession
from hatchway.protocol.frames import peek_header
from hatchway.protocol.payloads import OpenDataChannelInput
from hatchway.transport.apiclient import ApiClient
from tests.integration.cluster import Cluster

MiB = 1024 * 1024
OK_INPUT = b"echo ok-$((1+1))\nexit\n"
JSON_TYPE = "application/x-amz-json-1.1"
CLOSE_POLICY = 1008
CLOSE_BAD_DATA = 1007
CLOSE_TOO_BIG = 1009
T = TypeVar("T")


# ---- helpers ------------------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single ``hatchway: ...`` line a failed command printed (asserting that shape)."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, f"expected a failure, got: {result.stdout!r} {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("hatchway: "), lines[0]
    return lines[0]


def assert_undisturbed(cluster: Cluster, node: str) -> None:
    """The shared node is still Online and a normal piped shell still works."""
    assert cluster.node_status(node) == "Online"
    result = cluster.cli("start-session", "--target", node, input=OK_INPUT, check=False)
    assert b"ok-2" in result.stdout, result.stderr.decode(errors="replace")
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def api_client(cluster: Cluster) -> ApiClient:
    """The CLI's own API client, signed with the admin profile."""
    return cluster.api()


def write_profile(cluster: Cluster, path: Path, **overrides: str) -> Path:
    """A copy of the admin profile with some fields replaced."""
    p = load_profile(str(cluster.profile), "default")
    table = {
        "endpoint": p.endpoint,
        "ca_file": str(p.ca_file),
        "region": p.region,
        "access_key_id": p.access_key_id,
        "secret_access_key": p.secret_access_key,
        **overrides,
    }
    path.write_text(
        "[profiles.default]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    )
    return path


def activation_info(cluster: Cluster, activation_id: str) -> dict[str, Any]:
    listed = api_client(cluster).call(
        "DescribeActivations",
        {"Filters": [{"FilterKey": "ActivationIds", "FilterValues": [activation_id]}]},
    )["ActivationList"]
    assert len(listed) == 1, listed
    return listed[0]


def nodes_of(cluster: Cluster, activation_id: str) -> list[str]:
    data = cluster.cli_json("nodes")
    return [
        n["InstanceId"]
        for n in data["InstanceInformationList"]
        if n["ActivationId"] == activation_id
    ]


def sessions_on(cluster: Cluster, target: str) -> list[dict[str, Any]]:
    return [
        s
        for state in ("Active", "History")
        for s in cluster.sessions(state)
        if s["Target"] == target
    ]


def register_args(cluster: Cluster, aid: str, code: str, state: Path, *trust: str) -> list[str]:
    trust = trust or ("--ca-file", str(cluster.ca_file))
    return [
        "agent", "register", "--endpoint", cluster.endpoint, *trust,
        "--activation-id", aid, "--activation-code", code, "--state-dir", str(state),
    ]  # fmt: skip


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    async def bounded() -> T:
        before = _open_sockets()
        try:
            async with asyncio.timeout(timeout):
                return await make()
        finally:
            await _closing_sockets_closed(before)

    return asyncio.run(bounded())


def _open_sockets() -> set[str]:
    """This process's open sockets ("socket:[inode]"), from /proc/self/fd."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (or the listing's own fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found


async def _closing_sockets_closed(before: set[str], timeout: float = 2.0) -> None:
    """Wait (bounded) until the sockets opened since ``before`` are closed.

    aiohttp (the agent's Dialer) closes a TLS connection without waiting for the TLS shutdown
    to finish (aio-libs/aiohttp#1925): if the event loop ended first, the socket would be left
    to the garbage collector, a ResourceWarning (an error here) in whichever test runs then.
    A socket still open after ``timeout`` is a real leak and is left for that warning to report.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while _open_sockets() - before and loop.time() < end:
        await asyncio.sleep(0.01)


def client_ssl(cluster: Cluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cluster.ca_file))


def open_message(token: str) -> str:
    return (
        OpenDataChannelInput(
            token_value=token,
            request_id=str(uuid.uuid4()),
            client_id=str(uuid.uuid4()),
            client_version="1.2.0.0",
        )
        .to_json()
        .decode()
    )


async def dial(url: str, ctx: ssl.SSLContext | None) -> ClientConnection:
    return await connect(url, ssl=ctx, max_size=None, compression=None, close_timeout=5)


def closed_as(ws: ClientConnection) -> tuple[int | None, str]:
    """The close code and reason the server sent (1006 and "" if it sent none)."""
    return ws.close_code, ws.close_reason or ""


async def drain(ws: ClientConnection) -> list[str | bytes]:
    """Everything the server sends until it closes the connection."""
    got: list[str | bytes] = []
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            got.append(message)
    return got


async def open_accepted(ws: ClientConnection, token: str) -> bytes:
    """Send the OpenDataChannelInput and wait for the server's first frame (proof of joining)."""
    await ws.send(open_message(token))
    first = await ws.recv()
    assert isinstance(first, bytes), first
    peek_header(first)  # a well-formed frame
    return first


def run_shell(api: ApiClient, start: dict[str, Any]) -> tuple[int, bytes]:
    """Drive a session's data channel with the CLI's own client, stdin a pipe, stdout a file."""
    r, w = os.pipe()
    os.write(w, OK_INPUT)
    os.close(w)
    try:
        with tempfile.TemporaryFile() as out:
            session = ClientSession.from_start(api, start, stdin_fd=r, stdout_fd=out.fileno())
            status = run_async(session.run)
            out.seek(0)
            return status, out.read()
    finally:
        os.close(r)


def terminate(api: ApiClient, session_id: str) -> None:
    api.call("TerminateSession", {"SessionId": session_id})


@contextlib.contextmanager
def started_session(cluster: Cluster, node: str) -> Iterator[tuple[ApiClient, dict[str, Any]]]:
    api = api_client(cluster)
    start = api.call("StartSession", {"Target": node})
    try:
        yield api, start
    finally:
        terminate(api, start["SessionId"])


def ca_fingerprint(cluster: Cluster) -> str:
    der = ssl.PEM_cert_to_DER_cert(cluster.ca_file.read_text())
    return hashlib.sha256(der).hexdigest()


def other_ca_file(directory: Path) -> Path:
    from hatchway.server.certificates import ensure_tls_identity

    return ensure_tls_identity(directory).ca_cert_path


def healthz(cluster: Cluster) -> Any:
    with urllib.request.urlopen(
        cluster.endpoint + "/healthz", context=client_ssl(cluster), timeout=10
    ) as r:
        return json.load(r)
