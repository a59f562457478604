"""Sans-I/O smux protocol version 1, as AWS's plugin and agent speak it (docs/protocol.md §8.5).

Port-forwarding sessions in mux mode carry many TCP connections over one data channel: the
Output payload stream in each direction *is* a byte stream of `xtaci/smux`_ frames (v1.5.x with
``DefaultConfig``, so protocol version 1: no per-stream flow control, no UPD frames). The client
(the plugin, or Hatchway's client) is the smux client and opens streams; the agent is the server.

Every frame is an 8-byte little-endian header, then ``length`` bytes of data (PSH only)::

    ver (1 byte, = 1) | cmd (1 byte) | length (uint16) | stream id (uint32)

:class:`Mux` takes bytes from the peer in any chunking and returns :data:`MuxEvent` values; what
it wants sent waits in :meth:`Mux.data_to_send`. It never reads the clock: keepalive (a NOP every
:data:`~hatchway.protocol.portmode.KEEPALIVE_INTERVAL` seconds, and closing the session when
nothing arrived for the timeout) is the caller's, using :meth:`Mux.nop`.

Where it follows smux and where it is stricter (docs/protocol.md §8.5):

* a SYN for a stream id we already know, a FIN or PSH for an unknown id, and a PSH after the
  peer's FIN are dropped, as smux drops them, and counted in :attr:`Mux.dropped_frames`;
* an empty PSH is skipped, as smux skips it;
* a version other than 1, an unknown command (UPD, 4, included: it is a v2 frame), or a SYN, FIN
  or NOP whose length is not 0 raise :class:`~hatchway.errors.RemoteProtocolError`, and the mux
  is dead from then on (smux closes the session on the first two; it would misparse the third);
* a stream is half-closable: after :meth:`Mux.finish` the peer's data is still delivered until
  its own FIN. (Go's smux ``Stream.Close`` forgets the stream at once, so a Go peer drops what we
  send after *its* FIN; that is harmless, the bytes had nowhere to go.)

.. _xtaci/smux: https://github.com/xtaci/smux
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from hatchway.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_FRAME_DATA",
    "MAX_STREAM_ID",
    "VERSION",
    "Cmd",
    "Mux",
    "MuxEvent",
    "StreamData",
    "StreamFinished",
    "StreamOpened",
    "encode_frame",
]

#: smux protocol version of ``DefaultConfig`` (docs/protocol.md §8.5).
VERSION: Final = 1
#: The largest PSH payload we send: smux's ``DefaultConfig().MaxFrameSize``.
MAX_FRAME_DATA: Final = 32768
#: ver, cmd, uint16 length, uint32 stream id.
HEADER_SIZE: Final = 8
MAX_STREAM_ID: Final = 0xFFFFFFFF

_HEADER: Final = struct.Struct("<BBHI")


class Cmd(IntEnum):
    """smux v1 frame commands (docs/protocol.md §8.5)."""

    SYN = 0  # open a stream
    FIN = 1  # the sender will send no more on this stream
    PSH = 2  # data
    NOP = 3  # keepalive; stream id 0


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """Data on a stream (one PSH frame's payload, never empty)."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The peer sent FIN: it will send no more on this stream (EOF from the peer)."""

    stream_id: int


MuxEvent = StreamOpened | StreamData | StreamFinished


def encode_frame(cmd: Cmd, stream_id: int, data: bytes = b"") -> bytes:
    """One smux v1 frame: the header, then ``data`` (at most 65535 bytes, the header's limit).

    Raises:
        LocalProtocolError: the stream id or the length does not fit the header.
    """
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"smux stream id {stream_id} out of range")
    if len(data) > 0xFFFF:
        raise LocalProtocolError(f"smux frame data of {len(data)} bytes exceeds 65535")
    return _HEADER.pack(VERSION, cmd, len(data), stream_id) + data


class _Stream:
    """What a :class:`Mux` remembers of one stream: which sides have finished."""

    __slots__ = ("local_fin", "remote_fin")

    def __init__(self) -> None:
        self.local_fin = False
        self.remote_fin = False


class Mux:
    """One end of an smux v1 session, sans-I/O.

    Args:
        client: True for the end that opens streams with odd ids (3, 5, 7, …: smux's counter
            starts at 1 and adds 2 before each use); False for the server, whose ids would be
            even (2, 4, …). AWS's plugin is the client, its agent the server
            (docs/protocol.md §8.5).

    Attributes:
        dropped_frames: frames from the peer dropped as smux drops them (see the module
            docstring); a diagnostic, never an error.
    """

    def __init__(self, *, client: bool) -> None:
        self._next_id = 1 if client else 0
        self._streams: dict[int, _Stream] = {}
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._dead: RemoteProtocolError | None = None
        self.dropped_frames = 0

    # -- outgoing ----------------------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a stream: queue its SYN and return its id.

        Raises:
            LocalProtocolError: the 32-bit id space is used up (smux's ``ErrGoAway``).
        """
        stream_id = self._next_id + 2
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("smux stream ids are used up; open a new session")
        self._next_id = stream_id
        self._streams[stream_id] = _Stream()
        self._queue(Cmd.SYN, stream_id)
        return stream_id

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` on a stream as PSH frames of at most :data:`MAX_FRAME_DATA` bytes.

        Empty data queues nothing. Raises:
            LocalProtocolError: the stream is unknown or we already finished it.
        """
        self._writable(stream_id)
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME_DATA):
            self._queue(Cmd.PSH, stream_id, view[start : start + MAX_FRAME_DATA])

    def finish(self, stream_id: int) -> None:
        """Queue FIN on a stream: we will send no more. Finishing twice is a no-op.

        Raises:
            LocalProtocolError: the stream is unknown.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"smux stream {stream_id} is not open")
        if stream.local_fin:
            return
        stream.local_fin = True
        self._queue(Cmd.FIN, stream_id)

    def nop(self) -> None:
        """Queue a keepalive (NOP on stream 0, as smux sends it)."""
        self._queue(Cmd.NOP, 0)

    def data_to_send(self) -> bytes:
        """Drain and return the bytes queued for the peer."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def pending(self) -> int:
        """How many queued bytes :meth:`data_to_send` has not drained yet."""
        return len(self._outbox)

    # -- state -------------------------------------------------------------------------------

    def is_open(self, stream_id: int) -> bool:
        """True while the stream is known and not finished by both sides."""
        stream = self._streams.get(stream_id)
        return stream is not None and not (stream.local_fin and stream.remote_fin)

    def can_send(self, stream_id: int) -> bool:
        """True while the stream is known and we have not finished it."""
        stream = self._streams.get(stream_id)
        return stream is not None and not stream.local_fin

    def forget(self, stream_id: int) -> None:
        """Drop a stream's state (after both sides finished, or to abandon it).

        Frames the peer sends on it afterwards are dropped and counted; a later SYN with the same
        id opens a new stream, as in smux.
        """
        self._streams.pop(stream_id, None)

    # -- incoming ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[MuxEvent]:
        """Take bytes from the peer, in any chunking, and return what they completed.

        Raises:
            RemoteProtocolError: a frame broke smux v1 (docs/protocol.md §8.5); the mux is dead
                and every later call raises the same error.
        """
        if self._dead is not None:
            raise self._dead
        inbox = self._inbox
        inbox += data
        events: list[MuxEvent] = []
        offset = 0
        end = len(inbox)
        try:
            while end - offset >= HEADER_SIZE:
                version, cmd, length, stream_id = _HEADER.unpack_from(inbox, offset)
                if version != VERSION:
                    raise RemoteProtocolError(f"smux frame version {version}, expected {VERSION}")
                if cmd == Cmd.PSH:
                    if end - offset - HEADER_SIZE < length:
                        break  # wait for the rest of the payload
                    start = offset + HEADER_SIZE
                    offset = start + length
                    if length:
                        self._on_data(stream_id, bytes(inbox[start:offset]), events)
                    continue
                if cmd > Cmd.NOP:
                    raise RemoteProtocolError(f"smux command {cmd} is not a v1 command")
                if length:
                    raise RemoteProtocolError(
                        f"smux {Cmd(cmd).name} frame with a length of {length}"
                    )
                offset += HEADER_SIZE
                if cmd == Cmd.SYN:
                    self._on_syn(stream_id, events)
                elif cmd == Cmd.FIN:
                    self._on_fin(stream_id, events)
                # NOP: keepalive only, nothing to report.
        except RemoteProtocolError as exc:
            self._dead = exc
            raise
        finally:
            del inbox[:offset]
        return events

    def _on_syn(self, stream_id: int, events: list[MuxEvent]) -> None:
        if stream_id in self._streams:
            self.dropped_frames += 1  # smux ignores a SYN for a stream it has
            return
        self._streams[stream_id] = _Stream()
        events.append(StreamOpened(stream_id))

    def _on_fin(self, stream_id: int, events: list[MuxEvent]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            self.dropped_frames += 1
            return
        stream.remote_fin = True
        events.append(StreamFinished(stream_id))

    def _on_data(self, stream_id: int, data: bytes, events: list[MuxEvent]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            self.dropped_frames += 1  # smux drops data for a missing or closed stream
            return
        events.append(StreamData(stream_id, data))

    # -- helpers -----------------------------------------------------------------------------

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"smux stream {stream_id} is not open")
        if stream.local_fin:
            raise LocalProtocolError(f"smux stream {stream_id} was already finished")
        return stream

    def _queue(self, cmd: Cmd, stream_id: int, data: bytes | memoryview = b"") -> None:
        self._outbox += _HEADER.pack(VERSION, cmd, len(data), stream_id)
        self._outbox += data
