"""A Hatchway server and one registered, online agent on loopback, started through the CLI.

    with hatchway_cluster() as (env, node, hatchway):
        subprocess.run([hatchway, "start-session", "--target", node], env=env)

``hatchway_server(*args)`` starts the server alone (extra ``hatchway server`` arguments).

Everything (data dir, agent state, logs) lives in a temporary directory removed on exit; the
server and agent are stopped with SIGTERM (SIGKILL if they linger).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from common import free_port, stop_process, tail, wait_for


class HatchwayEnv(NamedTuple):
    env: dict[str, str]
    node: str
    hatchway: str


def hatchway_binary() -> str:
    """The console script next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "hatchway"
    if here.exists():
        return str(here)
    found = shutil.which("hatchway")
    if found is None:
        sys.stderr.write("benchmarks: the `hatchway` command is not installed\n")
        raise SystemExit(2)
    return found


class ServerEnv(NamedTuple):
    env: dict[str, str]
    endpoint: str
    ca_file: Path
    pid: int
    hatchway: str
    root: Path


def _cli(binary: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [binary, *args],
        capture_output=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"hatchway {' '.join(args)} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode()


@contextmanager
def hatchway_server(*server_args: str) -> Iterator[ServerEnv]:
    """A Hatchway server alone (TLS, loopback, its own temporary data directory)."""
    binary = hatchway_binary()
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-"))
    data_dir = root / "server"
    profile = data_dir / "admin-profile.toml"
    ca_file = data_dir / "ca.pem"
    port = free_port()
    endpoint = f"https://127.0.0.1:{port}"
    env = dict(os.environ)
    env["HATCHWAY_CONFIG"] = str(profile)
    env.pop("HATCHWAY_PROFILE", None)
    server_log = root / "server.log"

    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        with open(server_log, "ab") as out:
            server = subprocess.Popen(
                [binary, "server", "--data-dir", str(data_dir), "--listen",
                 f"127.0.0.1:{port}", *server_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )  # fmt: skip
        stack.callback(stop_process, server)

        def healthy() -> bool:
            if server.poll() is not None:
                raise RuntimeError(
                    f"hatchway server exited {server.returncode}:\n{tail(server_log)}"
                )
            if not profile.exists() or not ca_file.exists():
                return False
            ctx = ssl.create_default_context(cafile=str(ca_file))
            try:
                with urllib.request.urlopen(endpoint + "/healthz", context=ctx, timeout=2) as r:
                    return bool(json.load(r) == {"status": "ok"})
            except (OSError, ValueError):
                return False

        wait_for(healthy, 30, "the hatchway server's /healthz")
        yield ServerEnv(env, endpoint, ca_file, server.pid, binary, root)


@contextmanager
def hatchway_cluster() -> Iterator[HatchwayEnv]:
    with hatchway_server() as srv, ExitStack() as stack:
        env, binary = srv.env, srv.hatchway
        state_dir = srv.root / "agent"
        agent_log = srv.root / "agent.log"

        def cli_json(*args: str) -> Any:
            return json.loads(_cli(binary, env, *args, "--output", "json"))

        activation = cli_json("activation", "create")
        node = _cli(
            binary,
            env,
            "agent",
            "register",
            "--endpoint",
            srv.endpoint,
            "--ca-file",
            str(srv.ca_file),
            "--activation-id",
            activation["ActivationId"],
            "--activation-code",
            activation["ActivationCode"],
            "--state-dir",
            str(state_dir),
        ).strip()
        if not node.startswith("mi-"):
            raise RuntimeError(f"unexpected output from `agent register`: {node!r}")

        with open(agent_log, "ab") as out:
            agent = subprocess.Popen(
                [binary, "agent", "run", "--state-dir", str(state_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
            )
        stack.callback(stop_process, agent)

        def online() -> bool:
            if agent.poll() is not None:
                raise RuntimeError(f"hatchway agent exited {agent.returncode}:\n{tail(agent_log)}")
            nodes = cli_json("nodes")["InstanceInformationList"]
            return any(n["InstanceId"] == node and n["PingStatus"] == "Online" for n in nodes)

        wait_for(online, 30, f"{node} to be Online", interval=0.2)
        yield HatchwayEnv(env=env, node=node, hatchway=binary)


if __name__ == "__main__":
    with hatchway_cluster() as (_env, _node, _bin):
        print(f"server and agent up, {_node} online; stopped again")
