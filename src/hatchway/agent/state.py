"""The agent's state directory: its node id, server endpoint, pinned CA and private key."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from hatchway.auth.atomicfile import ensure_private_dir, write_private_text
from hatchway.errors import ConfigError

REGISTRATION_FILE = "registration.json"
KEY_FILE = "private-key.pem"
CA_FILE = "ca.pem"


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
