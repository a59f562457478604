"""A console terminal's browser WebSocket carried between replicas.

A console terminal (``server.console.bridge``) lives in the replica that started its session
(the session's relay). The browser's WebSocket (its first one, a reload, a reconnection) may
reach any replica behind the balancer: that replica (the edge) accepts it and pipes its
messages, text and binary, to the terminal's replica, where :class:`RemoteBrowser` stands in for
the browser's WebSocket (the few calls ``Terminal.serve_browser`` makes). Same subjects, seals
and sequence numbers as data-channel pipes (``pipes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from hatchway.errors import HatchwayError, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.server.cluster.envelope import PipeFrame
from hatchway.server.cluster.pipes import PipeSender, Queue, close_payload, parse_close

__all__ = ["BrowserEdge", "RemoteBrowser"]


class RemoteBrowser:
    """On the terminal's replica: a browser connected to another replica."""

    def __init__(self, sender: PipeSender, edge: str) -> None:
        self.edge = edge
        self._sender = sender
        self._in = Queue(f"console pipe from {edge}")
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def incoming(self, seq: int, kind: bytes, payload: bytes) -> None:
        if not self._sender.accept(seq) or self._closed:
            return
        if kind == PipeFrame.CLOSE:
            self._closed = True
            self._in.end()
            return
        self._in.put((kind, payload))

    def edge_gone(self) -> None:
        if not self._closed:
            self._closed = True
            self._in.end()

    async def __aiter__(self) -> AsyncIterator[WSMessage]:
        while True:
            item = await self._in.get()
            if item is None:
                return
            kind, payload = item
            if kind == PipeFrame.TEXT:
                yield WSMessage(WSMsgType.TEXT, payload.decode("utf-8", "replace"), None)
            else:
                yield WSMessage(WSMsgType.BINARY, payload, None)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(PipeFrame.DATA, data)

    async def send_json(self, message: Any) -> None:
        await self._send(PipeFrame.TEXT, json.dumps(message).encode())

    async def close(self, *, code: int = CloseCode.NORMAL, message: bytes = b"") -> bool:
        if self._closed:
            return False
        self._closed = True
        self._in.end()
        with contextlib.suppress(HatchwayError):
            reason = message.decode("utf-8", "replace")
            await self._sender.send(PipeFrame.CLOSE, close_payload(code, reason))
        return True

    async def _send(self, kind: bytes, payload: bytes) -> None:
        if self._closed:
            raise ConnectionError("the browser went away")
        try:
            await self._sender.send(kind, payload)
        except HatchwayError as exc:
            raise ConnectionError(exc.message) from exc


class BrowserEdge:
    """On the replica the browser reached: carries its WebSocket to the terminal's replica."""

    def __init__(self, sender: PipeSender, relay: str) -> None:
        self.sender = sender
        self.relay = relay
        self.sock: Any = None  # the browser's WebSocket, once accepted
        self._out = Queue(f"console pipe to {relay}")

    def incoming(self, seq: int, kind: bytes, payload: bytes) -> None:
        if self.sender.accept(seq):
            self._out.put((kind, payload))

    def relay_gone(self) -> None:
        payload = close_payload(CloseCode.GOING_AWAY, "the terminal's server went away")
        self._out.put((PipeFrame.CLOSE, payload))

    async def run(self, ws: web.WebSocketResponse) -> None:
        self.sock = ws
        writer = asyncio.get_running_loop().create_task(self._write(ws))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self.sender.send(PipeFrame.DATA, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self.sender.send(PipeFrame.TEXT, msg.data.encode())
        except HatchwayError:
            await ws.close(code=CloseCode.GOING_AWAY, message=b"lost the terminal's server")
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            with contextlib.suppress(HatchwayError):
                await self.sender.send(PipeFrame.CLOSE, close_payload(ws.close_code, ""))

    async def _write(self, ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                item = await self._out.get()
                if item is None:
                    return
                kind, payload = item
                if kind == PipeFrame.CLOSE:
                    try:
                        code, reason = parse_close(payload)
                    except RemoteProtocolError:
                        code, reason = CloseCode.GOING_AWAY, ""
                    await ws.close(code=code, message=reason.encode())
                    return
                if kind == PipeFrame.TEXT:
                    await ws.send_str(payload.decode("utf-8", "replace"))
                else:
                    await ws.send_bytes(payload)
