"""Data-channel ends carried between replicas.

When a client's or agent's data channel reaches a replica (the *edge*) other than the one that
relays its session (the *relay*), the edge pipes it there: :class:`EdgePipe` forwards every
message of the local WebSocket to the relay and back; on the relay, :class:`RemoteEnd` is that
end as a :class:`~hatchway.transport.socket.Socket`, so the gateway runs the very same logic
(tokens, acks, pause/start publication, grace) as for a local end.

Messages travel on ``<prefix>.r.<replica>.p.<pipe id>`` (addressed to the replica holding the
other side), each with a sequence number that must increase (``envelope``). Ordering is NATS's:
one publisher's messages on one subject arrive in order. Nothing here holds data back when a
side is slow: a side whose queue passes :data:`MAX_QUEUED` drops what comes next, which the
protocol's end-to-end acknowledgements resend (docs/protocol.md §6.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from hatchway.errors import ChannelClosed, HatchwayError, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode, close_reason
from hatchway.server.cluster.bus import Bus
from hatchway.server.cluster.envelope import PipeFrame, pack_pipe
from hatchway.transport.socket import Socket, TextSocket

log = logging.getLogger(__name__)

__all__ = ["MAX_QUEUED", "EdgePipe", "PipeSender", "Queue", "RemoteEnd", "Replayed"]

#: Bytes one side of a pipe queues before dropping (the ends resend what is lost).
MAX_QUEUED: Final = 16 * 1024 * 1024
#: Close code for an end that vanished without a close frame (RFC 6455's 1006).
ABNORMAL: Final = 1006

_Item = tuple[bytes, bytes]  # (kind, payload)
_NOT_ON_THE_WIRE: Final = (1005, 1006, 1015)


class PipeSender:
    """The sending half of one side of a pipe: numbered, sealed messages to the other side."""

    def __init__(self, bus: Bus, subject: str) -> None:
        self._bus = bus
        self.subject = subject
        self._seq = 0
        self._last_in = 0

    async def send(self, kind: bytes, payload: bytes) -> None:
        self._seq += 1
        await self._bus.publish(self.subject, pack_pipe(self._seq, kind, payload))

    def accept(self, seq: int) -> bool:
        """Whether an incoming message's sequence number is new (a replay is not)."""
        if seq <= self._last_in:
            return False
        self._last_in = seq
        return True


def close_payload(code: int | None, reason: str) -> bytes:
    return json.dumps({"code": code or ABNORMAL, "reason": close_reason(reason)}).encode()


def parse_close(payload: bytes) -> tuple[int, str]:
    try:
        data = json.loads(payload)
        code, reason = int(data["code"]), str(data.get("reason", ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteProtocolError("bad pipe close") from exc
    return code, reason


class Queue:
    """An unbounded-in-count, bounded-in-bytes queue of pipe items; ``None`` ends it."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._q: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._bytes = 0
        self._dropped = 0

    def put(self, item: _Item) -> None:
        if item[0] != PipeFrame.CLOSE and self._bytes + len(item[1]) > MAX_QUEUED:
            self._dropped += 1
            if self._dropped in (1, 100, 10_000):
                log.warning("%s: fell behind; %d message(s) dropped", self._label, self._dropped)
            return
        self._bytes += len(item[1])
        self._q.put_nowait(item)

    def end(self) -> None:
        self._q.put_nowait(None)

    async def get(self) -> _Item | None:
        item = await self._q.get()
        if item is not None:
            self._bytes -= len(item[1])
        return item


class RemoteEnd(TextSocket):
    """On the relay: a client's or agent's end that is connected to another replica."""

    def __init__(self, sender: PipeSender, label: str, edge: str, first_text: str | None = None):
        self.label = label
        self.edge = edge
        self._sender = sender
        self._in = Queue(label)
        self._closed = False
        self._code: int | None = None
        self._reason = ""
        if first_text is not None:
            self._in.put((PipeFrame.TEXT, first_text.encode()))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._code

    @property
    def close_reason(self) -> str:
        return self._reason

    def incoming(self, seq: int, kind: bytes, payload: bytes) -> None:
        """A message from the edge (called by the replica's pipe subscription, in order)."""
        if not self._sender.accept(seq) or self._closed:
            return
        if kind == PipeFrame.CLOSE:
            try:
                self._code, self._reason = parse_close(payload)
            except RemoteProtocolError:
                self._code, self._reason = ABNORMAL, ""
            self._closed = True
            self._in.end()
            return
        self._in.put((kind, payload))

    def edge_gone(self) -> None:
        """The edge replica is gone: this end went with it."""
        if not self._closed:
            self._closed = True
            self._code, self._reason = ABNORMAL, "the replica holding this end is gone"
            self._in.end()

    async def send(self, data: bytes) -> bool:
        if self._closed:
            return False
        try:
            await self._sender.send(PipeFrame.DATA, data)
        except HatchwayError:
            return False
        return True

    def send_now(self, frames: Sequence[bytes]) -> bool:
        return False

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        while True:
            item = await self._in.get()
            if item is None:
                return
            if item[0] == PipeFrame.DATA:
                yield item[1]

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        async for message in self:
            handler(message)

    async def receive_text(self) -> str:
        item = await self._in.get()
        if item is None:
            raise ChannelClosed("the end closed")
        if item[0] != PipeFrame.TEXT:
            raise RemoteProtocolError("expected a text message")
        return item[1].decode("utf-8", "replace")

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._code, self._reason = code, reason
        self._in.end()
        with contextlib.suppress(HatchwayError):
            await self._sender.send(PipeFrame.CLOSE, close_payload(code, reason))

    def abort(self) -> None:
        if not self._closed:
            asyncio.get_running_loop().create_task(self.close(ABNORMAL, "aborted"))


class EdgePipe:
    """On the edge: carries a local WebSocket to the session's relay and back.

    Registered before the relay is asked to open the pipe (the relay may answer at once, e.g.
    with ``pause_publication``); what arrives before :meth:`run` waits in its queue.
    """

    def __init__(self, sender: PipeSender, relay: str) -> None:
        self.sender = sender
        self.relay = relay
        self.sock: Socket | None = None
        self._out = Queue(f"pipe to {relay}")

    def incoming(self, seq: int, kind: bytes, payload: bytes) -> None:
        if self.sender.accept(seq):
            self._out.put((kind, payload))

    def relay_gone(self) -> None:
        """The relay is gone: the end re-dials (through the load balancer) and resumes."""
        payload = close_payload(
            CloseCode.GOING_AWAY, "the server relaying this session went away; reconnect"
        )
        self._out.put((PipeFrame.CLOSE, payload))

    async def run(self, sock: Socket) -> None:
        """Carry messages both ways until either side closes."""
        self.sock = sock
        writer = asyncio.get_running_loop().create_task(self._write(sock))
        try:
            async for data in sock:
                try:
                    await self.sender.send(PipeFrame.DATA, data)
                except HatchwayError:
                    await sock.close(
                        CloseCode.GOING_AWAY, "lost the way to the session's relay; reconnect"
                    )
                    break
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            with contextlib.suppress(HatchwayError):
                await self.sender.send(
                    PipeFrame.CLOSE, close_payload(sock.close_code, sock.close_reason)
                )

    async def _write(self, sock: Socket) -> None:
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
                if code in _NOT_ON_THE_WIRE:  # RFC 6455 §7.4.1: never sent in a close frame
                    code = CloseCode.GOING_AWAY
                await sock.close(code, reason)
                return
            if kind == PipeFrame.DATA and not await sock.send(payload):
                return


class Replayed(TextSocket):
    """A client's local WebSocket whose first message was already read (to be piped), served
    here after all (its session moved here meanwhile): that message is given again first."""

    def __init__(self, sock: TextSocket, first: str) -> None:
        self._sock = sock
        self._first: str | None = first
        self.label = sock.label

    @property
    def closed(self) -> bool:
        return self._sock.closed

    @property
    def close_code(self) -> int | None:
        return self._sock.close_code

    @property
    def close_reason(self) -> str:
        return self._sock.close_reason

    async def receive_text(self) -> str:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._sock.receive_text()

    async def send(self, data: bytes) -> bool:
        return await self._sock.send(data)

    def send_now(self, frames: Sequence[bytes]) -> bool:
        return self._sock.send_now(frames)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._sock.__aiter__()

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        await self._sock.deliver(handler)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        await self._sock.close(code, reason)

    def abort(self) -> None:
        self._sock.abort()
