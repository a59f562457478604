"""Outbound, RSA-signed WebSocket connections to the server (protocol.md §9.1, §9.3).

The agent speaks WebSocket through aiohttp, like the server: its frame parser and writer are
C-accelerated, which matters on the relay path of every keystroke (benchmarks/bench_echo.py).
The CLI uses ``websockets`` instead, which imports much faster (DESIGN.md §8).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp

from hatchway.agent.state import AgentState
from hatchway.auth.agentkey import load_private_key, pss_signer
from hatchway.auth.sigv4 import sign_request_rsa
from hatchway.errors import AuthError, NotFound, Unavailable
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from hatchway.protocol.timing import PING_INTERVAL
from hatchway.transport.apiclient import client_ssl_context

ERROR_HEADER = "X-Hatchway-Error"  # why the server refused an upgrade (server/app.py)


class Socket:
    """An open WebSocket: ``send`` binary messages, iterate over received binary messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.close_reason = ""

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                yield msg.data
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                self.close_reason = str(msg.extra or "")
            elif msg.type in (
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self) -> None:
        await self._ws.close()


class Dialer:
    """Opens signed WebSockets to the server on behalf of one node (one HTTP session)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self._sign = pss_signer(load_private_key(state.key_path))
        self._ssl: ssl.SSLContext | None = (
            client_ssl_context(state.ca_file) if state.endpoint.startswith("https:") else None
        )
        base = state.endpoint
        self._ws_base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]
        self._session: aiohttp.ClientSession | None = None

    def url(self, path_and_query: str) -> str:
        return self._ws_base + path_and_query

    async def connect(self, path_and_query: str) -> Socket:
        """Dial ``path_and_query`` with a fresh signature.

        Raises:
            AuthError: the server refused our identity (deregistered, bad clock, ...).
            NotFound: the session or path no longer exists.
            Unavailable: the server could not be reached (retry later).
        """
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
        headers.pop("Host", None)  # aiohttp sends the same Host itself
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            ws = await self._session.ws_connect(
                url,
                ssl=self._ssl if self._ssl is not None else False,
                headers=headers,
                max_msg_size=DEFAULT_MAX_FRAME_SIZE,
                heartbeat=PING_INTERVAL,
                autoping=True,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2),
            )
        except aiohttp.WSServerHandshakeError as exc:
            reason = (exc.headers.get(ERROR_HEADER) if exc.headers else None) or exc.message
            if exc.status == 404:
                raise NotFound(f"{path_and_query}: {reason}") from exc
            if exc.status in (401, 403):
                raise AuthError(f"the server refused this node: {reason}") from exc
            raise Unavailable(f"the server answered HTTP {exc.status}") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise AuthError(f"TLS verification failed: {exc.certificate_error}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot reach {self.state.endpoint}: {exc}") from exc
        return Socket(ws)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
