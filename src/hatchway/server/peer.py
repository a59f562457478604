"""One side of a server WebSocket with a single writer (a lock serialises sends)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from hatchway.protocol.closecodes import CloseCode, close_reason

log = logging.getLogger(__name__)


class Peer:
    """A WebSocket the server writes to from several tasks (relay, control, termination)."""

    def __init__(self, ws: web.WebSocketResponse, label: str) -> None:
        self.ws = ws
        self.label = label
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, data: bytes) -> bool:
        """Send one binary message; False (and no exception) if the socket is gone."""
        if self.ws.closed:
            return False
        try:
            async with self._lock:
                await self.ws.send_bytes(data)
            return True
        except (ConnectionError, RuntimeError) as exc:
            log.debug("send to %s failed: %s", self.label, exc)
            return False

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close once; later calls do nothing."""
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await self.ws.close(code=code, message=close_reason(reason).encode())
