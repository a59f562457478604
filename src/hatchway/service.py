"""Running the long-lived processes (server, agent) with logging and clean signal handling."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from hatchway import eventloop
from hatchway.server.settings import ServerSettings


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGTERM and SIGINT set ``stop`` so it can close cleanly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    eventloop.run(runner())


def run_server(settings: ServerSettings) -> None:
    from hatchway.server.listening import open_listeners

    setup_logging()
    os.umask(0o077)  # the database, keys and logs are the server's alone
    # Bind before the ~1 s of imports and set-up below: during a restart, re-dialling clients
    # and agents then wait in the accept queue instead of being refused.
    listeners = open_listeners(settings.host, settings.port)
    from hatchway.server.app import print_banner, serve

    run_until_signalled(
        lambda stop: serve(settings, stop, on_ready=print_banner, listeners=listeners)
    )


def run_agent(state_dir: Path, run_as_default: str) -> None:
    from hatchway.agent.agent import Agent, AgentSettings
    from hatchway.agent.state import AgentState

    setup_logging()
    state = AgentState.load(state_dir)

    async def main(stop: asyncio.Event) -> None:
        await Agent(state, AgentSettings(run_as_default=run_as_default)).run(stop)

    run_until_signalled(main)
