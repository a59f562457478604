"""A Hatchway server and one registered, online agent on loopback, started through the CLI.

    with hatchway_cluster() as (env, node, hatchway):
        subprocess.run([hatchway, "start-session", "--target", node], env=env)

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


@contextmanager
def hatchway_cluster() -> Iterator[HatchwayEnv]:
    binary = hatchway_binary()
    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-"))
    data_dir = root / "server"
    state_dir = root / "agent"
    profile = data_dir / "admin-profile.toml"
    ca_file = data_dir / "ca.pem"
    port = free_port()
    endpoint = f"https://127.0.0.1:{port}"
    env = dict(os.environ)
    env["HATCHWAY_CONFIG"] = str(profile)
    env.pop("HATCHWAY_PROFILE", None)
    server_log = root / "server.log"
    agent_log = root / "agent.log"

    def cli(*args: str) -> str:
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

    def cli_json(*args: str) -> Any:
        return json.loads(cli(*args, "--output", "json"))

    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)

        def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
                )
            stack.callback(stop_process, proc)
            return proc

        server = start(
            [binary, "server", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
            server_log,
        )

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

        activation = cli_json("activation", "create")
        node = cli(
            "agent",
            "register",
            "--endpoint",
            endpoint,
            "--ca-file",
            str(ca_file),
            "--activation-id",
            activation["ActivationId"],
            "--activation-code",
            activation["ActivationCode"],
            "--state-dir",
            str(state_dir),
        ).strip()
        if not node.startswith("mi-"):
            raise RuntimeError(f"unexpected output from `agent register`: {node!r}")

        agent = start([binary, "agent", "run", "--state-dir", str(state_dir)], agent_log)

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
