"""Registering a node with an activation (docs/protocol.md §10.1).

The agent makes an RSA-2048 key pair, keeps the private key in its state directory (0600) and
sends the public key with the activation id and code; the server answers with the node id.
The activation code is never stored and never needed again.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatchway.agent.state import CA_FILE, KEY_FILE, AgentState
from hatchway.auth.agentkey import generate_private_key, public_key_b64, save_private_key
from hatchway.auth.atomicfile import ensure_private_dir
from hatchway.auth.pinning import fetch_and_pin_ca, normalize_fingerprint
from hatchway.errors import ConfigError, RemoteProtocolError
from hatchway.transport.apiclient import ApiClient, ApiError
from hatchway.transport.backoff import Backoff

THROTTLED_PATIENCE = 120.0
"""Seconds a registration keeps retrying while the server answers ``ThrottlingException``."""


def register(
    *,
    endpoint: str,
    activation_id: str,
    activation_code: str,
    state_dir: Path,
    ca_file: Path | None = None,
    ca_fingerprint: str | None = None,
    region: str = "local",
    sleep: Callable[[float], None] = time.sleep,
) -> AgentState:
    """Register this node and write its state directory; returns the new state.

    A server that is busy checking other registrations answers ``ThrottlingException``; the
    call is then repeated with jittered back-off for up to :data:`THROTTLED_PATIENCE` seconds,
    as boto3 does, so registering many nodes at once just takes longer.
    """
    if (ca_file is None) == (ca_fingerprint is None) and endpoint.startswith("https:"):
        raise ConfigError("give exactly one of --ca-file or --ca-fingerprint")
    ensure_private_dir(state_dir, what="state directory")
    if (state_dir / "registration.json").exists():
        raise ConfigError(f"{state_dir} already holds a registration; use a new --state-dir")
    pinned = state_dir / CA_FILE
    if ca_fingerprint is not None:
        fetch_and_pin_ca(endpoint, normalize_fingerprint(ca_fingerprint), pinned)
    elif ca_file is not None:
        if not ca_file.is_file():
            raise ConfigError(f"CA file {ca_file} does not exist")
        shutil.copyfile(ca_file, pinned)
    key = generate_private_key()
    client = ApiClient(
        endpoint, region=region, credentials=None, ca_file=pinned if pinned.exists() else None
    )
    body = {
        "ActivationId": activation_id,
        "ActivationCode": activation_code,
        "PublicKey": public_key_b64(key),
        "PublicKeyType": "Rsa",
        "Fingerprint": str(uuid.uuid4()),
    }
    with client:
        response = _call_patiently(client, body, sleep)
    node_id = response.get("InstanceId")
    if not isinstance(node_id, str) or not node_id.startswith("mi-"):
        raise RemoteProtocolError(f"the server returned no node id: {response!r}")
    save_private_key(state_dir / KEY_FILE, key)
    state = AgentState(
        state_dir=state_dir,
        node_id=node_id,
        endpoint=endpoint.rstrip("/"),
        region=str(response.get("Region") or region),
        ca_file=pinned if pinned.exists() else None,
    )
    state.save()
    return state


def _call_patiently(
    client: ApiClient, body: dict[str, Any], sleep: Callable[[float], None]
) -> dict[str, Any]:
    backoff = Backoff(initial=1.0, maximum=15.0)
    waited = 0.0
    while True:
        try:
            return client.call("RegisterManagedInstance", body)
        except ApiError as exc:
            if exc.code != "ThrottlingException" or waited >= THROTTLED_PATIENCE:
                raise
            delay = backoff.next_delay()
            sleep(delay)
            waited += delay
