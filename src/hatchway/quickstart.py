"""``hatchway up``: a server and a local agent in one process, on embedded defaults.

Running it again reuses the server's data directory and the agent's registration (kept in
``DATA_DIR/agent``). The admin profile becomes the user's ``default`` profile if the user has
none, so ``hatchway start-session`` works right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchway.errors import HatchwayError

if TYPE_CHECKING:
    from hatchway.agent.state import AgentState
    from hatchway.server.app import Running
    from hatchway.server.settings import ServerSettings

log = logging.getLogger(__name__)


def run_up(data_dir: Path, *, listen: str, run_as_default: str, config: str | None) -> None:
    from hatchway.server.settings import ServerSettings, parse_listen
    from hatchway.service import run_until_signalled, setup_logging

    host, port = parse_listen(listen)
    settings = ServerSettings(data_dir=data_dir / "server", host=host, port=port)
    setup_logging(logging.WARNING)
    os.umask(0o077)
    run_until_signalled(
        lambda stop: _up(settings, data_dir / "agent", run_as_default, config, stop)
    )


async def _up(
    settings: ServerSettings,
    agent_dir: Path,
    run_as_default: str,
    config: str | None,
    stop: asyncio.Event,
) -> None:
    from hatchway.agent.agent import Agent, AgentSettings
    from hatchway.agent.state import AgentState
    from hatchway.server.app import serve

    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    server = asyncio.get_running_loop().create_task(
        serve(settings, stop, on_ready=ready.set_result)
    )
    waiting: set[asyncio.Future[Any]] = {server, ready}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if server in done:
        server.result()  # raises the start-up error (busy port, ...)
        return
    running = ready.result()
    try:
        if (agent_dir / "registration.json").exists():
            state = AgentState.load(agent_dir)
            if state.endpoint != running.endpoint:
                state = AgentState(
                    state.state_dir, state.node_id, running.endpoint, state.region, state.ca_file
                )
                state.save()
        else:
            state = await asyncio.get_running_loop().run_in_executor(
                None, _register, running, agent_dir
            )
        profile_note = _install_profile(running.profile_path, config)
        agent = Agent(state, AgentSettings(run_as_default=run_as_default))
        agent_task = asyncio.get_running_loop().create_task(agent.run(stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent.connected.wait(), 15)
        _announce(running, state.node_id, profile_note)
        await asyncio.wait({server, agent_task}, return_when=asyncio.FIRST_COMPLETED)
        if agent_task.done() and agent_task.exception():
            stop.set()
            await server
            agent_task.result()
    finally:
        stop.set()
        await server
    print("hatchway: stopped", file=sys.stderr)


def _register(running: Running, agent_dir: Path) -> AgentState:
    from hatchway.agent.registration import register
    from hatchway.auth.sigv4 import Credentials
    from hatchway.client.config import load_profile
    from hatchway.transport.apiclient import ApiClient

    profile = load_profile(str(running.profile_path), "default")
    api = ApiClient(
        profile.endpoint,
        region=profile.region,
        credentials=Credentials(profile.access_key_id, profile.secret_access_key),
        ca_file=profile.ca_file,
    )
    activation = api.call(
        "CreateActivation",
        {
            "RegistrationLimit": 1,
            "ExpirationDate": time.time() + 600,
            "DefaultInstanceName": "local",
            "Description": "hatchway up: this machine",
            "IamRole": "",
        },
    )
    return register(
        endpoint=profile.endpoint,
        activation_id=activation["ActivationId"],
        activation_code=activation["ActivationCode"],
        state_dir=agent_dir,
        ca_file=profile.ca_file,
        region=profile.region,
    )


def _install_profile(profile_path: Path, config: str | None) -> str:
    """Add the admin profile as ``default`` to the user's config unless one exists.

    Returns the ``--config`` option the user needs ("" when the default config works).
    """
    from hatchway.auth.atomicfile import write_private_text
    from hatchway.client.config import config_path, read_profiles

    target = config_path(config)
    try:
        existing = read_profiles(target)
    except HatchwayError:
        return f" --config {profile_path}"
    admin_text = profile_path.read_text(encoding="utf-8")
    if "default" in existing:
        mine = read_profiles(profile_path).get("default")
        return "" if existing["default"] == mine else f" --config {profile_path}"
    previous = target.read_text(encoding="utf-8") if target.exists() else ""
    joined = (previous.rstrip() + "\n\n" if previous.strip() else "") + admin_text
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private_text(target, joined)
    print(f"hatchway: wrote the admin profile as 'default' in {target}", file=sys.stderr)
    return ""


def _announce(running: Running, node_id: str, config_option: str) -> None:
    print(
        f"Hatchway is up: server {running.endpoint}, node {node_id} connected.\n"
        f"CA SHA-256 fingerprint: {running.ca_fingerprint}\n"
        f"Next, in another terminal:\n\n"
        f"    hatchway{config_option} start-session --target {node_id}\n\n"
        f"Press Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
