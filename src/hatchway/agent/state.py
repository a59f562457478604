"""The agent's state directory: its node id, server endpoint, pinned CA and private key, and
the generation of the agent process that uses it.

Two agents started on one state directory would share one node identity. The newer one wins,
always (docs/protocol.md §10.3): every ``agent run`` takes the next *generation* number, under
an exclusive lock on the directory, and names it in its control-channel upgrade; the server
refuses lower generations, and an older agent that sees a newer generation in the directory
stops on its own.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from hatchway.auth.atomicfile import ensure_private_dir, exclusive_lock, write_private_text
from hatchway.errors import ConfigError

REGISTRATION_FILE = "registration.json"
KEY_FILE = "private-key.pem"
CA_FILE = "ca.pem"
GENERATION_FILE = "generation.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True, slots=True)
class Generation:
    """Which agent process owns the state directory: the ``number``-th ``agent run``."""

    number: int
    pid: int


def read_generation(state_dir: Path) -> Generation | None:
    """The newest generation recorded in ``state_dir``, or None before the first ``agent run``.

    Raises:
        ConfigError: the file exists but is damaged.
    """
    path = state_dir / GENERATION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Generation(number=int(data["generation"]), pid=int(data["pid"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged: {exc}") from exc


def claim_generation(state_dir: Path, pid: int | None = None) -> Generation:
    """Take the next generation for this process (an ``agent run`` start); atomic under a lock,
    so two agents starting at once get different numbers and the later one the higher.

    Raises:
        ConfigError: the directory cannot be locked or the file is damaged.
    """
    with exclusive_lock(state_dir, LOCK_FILE):
        current = read_generation(state_dir)
        mine = Generation(
            (current.number if current else 0) + 1, os.getpid() if pid is None else pid
        )
        data = {"generation": mine.number, "pid": mine.pid}
        try:
            write_private_text(state_dir / GENERATION_FILE, json.dumps(data) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {state_dir / GENERATION_FILE}: {exc}") from exc
        return mine


@dataclass(frozen=True)
class AgentState:
    """What registration leaves behind; ``agent run`` needs nothing else."""

    state_dir: Path
    node_id: str
    endpoint: str
    region: str
    ca_file: Path | None

    @property
    def key_path(self) -> Path:
        return self.state_dir / KEY_FILE

    def save(self) -> None:
        data = {
            "node_id": self.node_id,
            "endpoint": self.endpoint,
            "region": self.region,
            "ca_file": str(self.ca_file) if self.ca_file else None,
        }
        write_private_text(self.state_dir / REGISTRATION_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> AgentState:
        path = state_dir / REGISTRATION_FILE
        if state_dir.exists():
            ensure_private_dir(state_dir, what="state directory")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            endpoint = str(data["endpoint"])
            url = urllib.parse.urlsplit(endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
            _ = url.port  # urllib checks the port's range only when asked (ValueError)
            return cls(
                state_dir=state_dir,
                node_id=str(data["node_id"]),
                endpoint=endpoint,
                region=str(data.get("region") or "local"),
                ca_file=Path(data["ca_file"]) if data.get("ca_file") else None,
            )
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{state_dir} holds no registration: run `hatchway agent register` first"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is damaged: {exc}") from exc
