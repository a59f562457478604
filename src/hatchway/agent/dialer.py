"""Outbound, RSA-signed WebSocket connections to the server (docs/protocol.md §10.2, §3.2).

The agent's WebSockets are the CLI's (``transport/sansio_socket.py``: websockets' sans-I/O
protocol over an asyncio transport of ours), not aiohttp's: that socket can write a frame
synchronously, so PTY output leaves from the reader callback that read it, with the
acknowledgements it carries in the same TLS write, instead of from a task started for each
read (benchmarks/README.md, "Keystroke echo: what was measured"). aiohttp remains the agent's
HTTP client (the nonce, registration).

Every upgrade is signed with the node's key and carries a fresh server nonce
(``X-Hatchway-Nonce``, fetched from ``GET /v1/agent-nonce`` just before): the server takes each
nonce once, so a captured upgrade cannot be replayed.

Limits chosen here, not inherited (issue 5, "no limit of ours may be a library default"):

* **Connections**: aiohttp's connector allows 100 connections by default, which capped an
  agent at 99 sessions when its WebSockets were aiohttp's. The agent bounds its sessions
  itself (``MAX_SESSIONS_PER_NODE``, refused with a clear message); each WebSocket is a
  connection of its own, and the HTTP connector (nonces) gets no limit either (``limit=0``).
* **Dialing**: nonce plus upgrade must finish within :data:`DIAL_TIMEOUT` (aiohttp's default
  waits forever for an upgrade answer).
* **Message size**: :data:`MAX_CONTROL_MESSAGE` on the control channel, the 1 MiB frame limit on
  data channels.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.parse
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, Protocol

import aiohttp

from hatchway.agent.state import AgentState
from hatchway.auth.agentkey import load_private_key, pss_signer
from hatchway.auth.nonce import NONCE_HEADER
from hatchway.auth.sigv4 import sign_request_rsa
from hatchway.errors import AuthError, ConfigError, Conflict, NotFound, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from hatchway.transport.apiclient import ApiError, client_ssl_context
from hatchway.transport.sansio_socket import UpgradeRefused, WebSocket, connect
from hatchway.transport.socket import Socket

__all__ = ["DIAL_TIMEOUT", "ERROR_HEADER", "Dialer", "Socket", "SocketDialer"]

ERROR_HEADER: Final = "X-Hatchway-Error"  # why the server refused an upgrade (server/app.py)
#: Seconds for one dial: fetching the nonce, connecting, TLS and the upgrade.
DIAL_TIMEOUT: Final = 20.0


class SocketDialer(Protocol):
    """What the agent and its sessions dial with (tests give an in-memory one)."""

    async def connect(
        self,
        path_and_query: str,
        headers: Mapping[str, str] | None = None,
        *,
        max_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> Socket:
        """Open a signed WebSocket to ``path_and_query`` on the server.

        Raises:
            AuthError: the server refused this node's identity: stop.
            Conflict: a newer agent took over this node (HTTP 409): stop.
            NotFound: the session or path no longer exists.
            Unavailable: the server could not be reached or is busy: retry later.
        """
        ...

    async def close(self) -> None: ...


class Dialer:
    """Opens signed WebSockets to the server on behalf of one node (one HTTP session)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self._sign = pss_signer(load_private_key(state.key_path))
        self._ssl: ssl.SSLContext | None = (
            client_ssl_context(state.ca_file) if state.endpoint.startswith("https:") else None
        )
        base = state.endpoint.rstrip("/")
        self._http_base = base
        self._ws_base = "wss://" + base[8:] if base.startswith("https://") else "ws://" + base[7:]
        self._session: aiohttp.ClientSession | None = None
        self._sockets: weakref.WeakSet[WebSocket] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Dialer({self.state.node_id} at {self.state.endpoint})"

    def url(self, path_and_query: str) -> str:
        return self._ws_base + path_and_query

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def connect(
        self,
        path_and_query: str,
        headers: Mapping[str, str] | None = None,
        *,
        max_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> Socket:
        """Dial ``path_and_query`` with a fresh nonce and signature (see :class:`SocketDialer`)."""
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                nonce = await self._nonce()
                return await self._upgrade(path_and_query, nonce, headers or {}, max_size)
        except TimeoutError as exc:
            raise Unavailable(
                f"{self.state.endpoint} did not answer within {DIAL_TIMEOUT:.0f} s"
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise AuthError(f"TLS verification failed: {exc.certificate_error}") from exc
        except ConfigError as exc:  # the WebSocket's TLS verification failed
            raise AuthError(exc.message) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"cannot reach {self.state.endpoint}: {exc}") from exc

    async def _nonce(self) -> str:
        query = urllib.parse.urlencode({"node": self.state.node_id})
        async with self._http().get(
            f"{self._http_base}/v1/agent-nonce?{query}", ssl=self._ssl or False
        ) as response:
            if response.status != 200:
                _refused(response.status, response.headers, "/v1/agent-nonce")
            data: Any = await response.json(content_type=None)
        nonce = data.get("Nonce") if isinstance(data, dict) else None
        if not isinstance(nonce, str) or not nonce:
            raise Unavailable("the server sent no agent nonce")
        return nonce

    async def _upgrade(
        self, path_and_query: str, nonce: str, extra: Mapping[str, str], max_size: int
    ) -> Socket:
        url = self.url(path_and_query)
        signed = sign_request_rsa(
            "GET",
            url,
            {**extra, NONCE_HEADER: nonce},
            b"",
            node_id=self.state.node_id,
            private_key_sign=self._sign,
            region=self.state.region,
            service="ssmmessages",
            now=datetime.now(UTC),
        )
        signed.pop("Host", None)  # the WebSocket client sends the same Host itself
        label = f"server:{path_and_query.split('?', 1)[0]}"
        try:
            sock = await connect(
                url,
                self._ssl,
                headers=signed,
                label=label,
                max_size=max_size,
                open_timeout=DIAL_TIMEOUT,
            )
        except UpgradeRefused as exc:
            _refused(exc.status, exc.headers, path_and_query, exc.message)
        self._sockets.add(sock)
        return sock

    @property
    def node_id(self) -> str:
        return self.state.node_id

    async def decrypt_data_key(self, blob: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        """``TrentService.Decrypt`` as this node (signed with its key and a fresh nonce, like
        an upgrade): the plaintext of an end-to-end encrypted session's data key
        (docs/protocol.md §7.9). The server allows a node to decrypt only data keys whose
        encryption context names one of its own active sessions.

        Raises:
            ApiError: the key service's answer (``DisabledException``, ``AccessDeniedException``,
                ``InvalidCiphertextException``, …).
            Unavailable: no answer within :data:`DIAL_TIMEOUT`.
        """
        body = {
            "CiphertextBlob": base64.b64encode(blob).decode("ascii"),
            "EncryptionContext": dict(context),
            "KeyId": key_id,
        }
        data = await self._kms("Decrypt", body)
        return _b64_member(data, "Plaintext")

    async def generate_recording_key(
        self, key_id: str, context: Mapping[str, str]
    ) -> tuple[bytes, bytes, str]:
        """``TrentService.GenerateDataKey`` (AES_256) as this node for the recording of one of
        its end-to-end encrypted sessions: (plaintext, wrapped key, key ARN). The server allows
        only the context ``{"aws:ssm:SessionId": <an active session of this node>}`` under that
        session's key.

        Raises:
            ApiError, Unavailable: as :meth:`decrypt_data_key`.
        """
        body = {"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": dict(context)}
        data = await self._kms("GenerateDataKey", body)
        arn = data.get("KeyId")
        if not isinstance(arn, str) or not arn:
            raise Unavailable("the key service answered GenerateDataKey without a KeyId")
        return _b64_member(data, "Plaintext"), _b64_member(data, "CiphertextBlob"), arn

    async def upload_recording(self, session_id: str, data: bytes, part_size: int) -> None:
        """Send a session's sealed recording to the server, ``part_size`` bytes a request
        (``POST /v1/agent-recording/<session id>?offset=N[&final=1]``, each signed with a
        fresh nonce). A part the server already has is acknowledged again, so a retry after a
        lost answer is harmless.

        Raises:
            ApiError: the server refused it (not this node's session, not encrypted, …).
            Unavailable: no answer.
        """
        offset = 0
        while True:
            part = data[offset : offset + part_size]
            final = offset + len(part) >= len(data)
            query = urllib.parse.urlencode({"offset": offset, **({"final": 1} if final else {})})
            path = f"/v1/agent-recording/{urllib.parse.quote(session_id)}?{query}"
            headers = {"Content-Type": "application/octet-stream"}
            await self._signed_post(path, headers, part, service="ssmmessages")
            offset += len(part)
            if final:
                return

    async def _kms(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"TrentService.{operation}",
        }
        return await self._signed_post("/", headers, json.dumps(body).encode(), service="kms")

    async def _signed_post(
        self, path: str, headers: Mapping[str, str], body: bytes, *, service: str
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` signed as this node with a fresh nonce; the JSON answer.

        Raises:
            ApiError: an error answer (its AWS error type as ``code``).
            Unavailable: no answer within :data:`DIAL_TIMEOUT`, or not JSON.
        """
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                nonce = await self._nonce()
                url = f"{self._http_base}{path}"
                signed = sign_request_rsa(
                    "POST",
                    url,
                    {**headers, NONCE_HEADER: nonce},
                    body,
                    node_id=self.state.node_id,
                    private_key_sign=self._sign,
                    region=self.state.region,
                    service=service,
                    now=datetime.now(UTC),
                )
                signed.pop("Host", None)
                async with self._http().post(
                    url, data=body, headers=signed, ssl=self._ssl or False
                ) as response:
                    data: Any = await response.json(content_type=None)
                    status = response.status
        except TimeoutError as exc:
            waited = f"{DIAL_TIMEOUT:.0f} s"
            raise Unavailable(f"the server did not answer within {waited}") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Unavailable(f"cannot reach {self.state.endpoint}: {exc}") from exc
        if not isinstance(data, dict):
            raise Unavailable(f"the server answered HTTP {status} without JSON")
        if status != 200:
            code = str(data.get("__type") or "InternalServerError").rpartition("#")[2]
            raise ApiError(code, str(data.get("message") or f"HTTP {status}"), status)
        return data

    async def close(self) -> None:
        """Close every WebSocket this dialer opened that is still open, then the HTTP client.

        An upgraded connection no longer belongs to the HTTP client's pool, so closing the
        client alone would leave it to the garbage collector.
        """
        open_sockets = [sock for sock in self._sockets if not sock.closed]
        if open_sockets:
            await asyncio.gather(*(sock.close(CloseCode.GOING_AWAY) for sock in open_sockets))
        self._sockets.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _refused(
    status: int, headers: Mapping[str, str] | None, what: str, fallback: str = ""
) -> NoReturn:
    """Raise the error that a refused request's HTTP status means for the agent."""
    reason = (headers.get(ERROR_HEADER) if headers else None) or fallback or f"HTTP {status}"
    if status == 404:
        raise NotFound(f"{what}: {reason}")
    if status in (401, 403):
        raise AuthError(f"the server refused this node: {reason}")
    if status == 409:
        raise Conflict(reason)
    raise Unavailable(f"the server answered HTTP {status} to {what}")


def _b64_member(data: Mapping[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(str(data[name]), validate=True)
    except (KeyError, ValueError) as exc:
        raise Unavailable(f"the key service answered without {name}") from exc
