"""Outbound, RSA-signed WebSocket connections to the server (protocol.md §9.1, §9.3)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import Any

from hatchway.agent.state import AgentState
from hatchway.auth.agentkey import load_private_key, pss_signer
from hatchway.auth.sigv4 import sign_request_rsa
from hatchway.client.api import client_ssl_context
from hatchway.errors import AuthError, NotFound, Unavailable
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE

PING_INTERVAL = 20.0  # seconds; a dead link is noticed (and resumed) quickly (DESIGN.md §9)


class Dialer:
    """Opens signed WebSockets to the server on behalf of one node."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self._sign = pss_signer(load_private_key(state.key_path))
        self._ssl: ssl.SSLContext | None = (
            client_ssl_context(state.ca_file) if state.endpoint.startswith("https:") else None
        )
        base = state.endpoint
        self._ws_base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]

    def url(self, path_and_query: str) -> str:
        return self._ws_base + path_and_query

    async def connect(self, path_and_query: str) -> Any:
        """Dial ``path_and_query`` with a fresh signature.

        Raises:
            AuthError: the server refused our identity (deregistered, bad clock, ...).
            NotFound: the session or path no longer exists.
            Unavailable: the server could not be reached (retry later).
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        url = self.url(path_and_query)
        headers = sign_request_rsa(
            "GET",
            url,
            {},
            b"",
            node_id=self.state.node_id,
            private_key_sign=self._sign,
            region=self.state.region,
            service="ssmmessages",
            now=datetime.now(UTC),
        )
        headers.pop("Host", None)  # websockets sends the same Host itself
        try:
            return await connect(
                url,
                ssl=self._ssl,
                additional_headers=headers,
                max_size=DEFAULT_MAX_FRAME_SIZE,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_INTERVAL,
                open_timeout=15,
                close_timeout=2,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = _error_message(bytes(exc.response.body or b""))
            if status == 404:
                raise NotFound(f"{path_and_query}: {body or 'not found'}") from exc
            if status in (401, 403):
                raise AuthError(f"the server refused this node: {body or status}") from exc
            raise Unavailable(f"the server answered HTTP {status}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise AuthError(f"TLS verification failed: {exc.verify_message}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Unavailable(f"cannot reach {self.state.endpoint}: {exc}") from exc


def _error_message(body: bytes) -> str:
    """The ``message`` of a JSON error body, else the body's text (shortened)."""
    import json

    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("message"):
            return f"{data['message']} ({data.get('__type', 'error')})"
    except ValueError:
        pass
    return body.decode(errors="replace")[:200]
