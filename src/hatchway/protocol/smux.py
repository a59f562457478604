"""Sans-I/O smux, protocol version 1 as AWS's plugin and agent speak it, and version 2 with
per-stream credit between Hatchway's own ends (docs/protocol.md §8.5, §7.6).

Port-forwarding sessions in mux mode carry many TCP connections over one data channel: the
Output payload stream in each direction *is* a byte stream of `xtaci/smux`_ frames (v1.5.x with
``DefaultConfig``, so protocol version 1: no per-stream flow control, no UPD frames). The client
(the plugin, or Hatchway's client) is the smux client and opens streams; the agent is the server.

Every frame is an 8-byte little-endian header, then ``length`` bytes of data (PSH and UPD)::

    ver (1 byte) | cmd (1 byte) | length (uint16) | stream id (uint32)

**Version 2** (``Mux(window=N)``, only when both ends negotiated ``StreamWindow`` in the
handshake, docs/protocol.md §7.6) is smux v2's wire format: the same frames with ver 2, plus UPD
(cmd 4) whose 8 data bytes are ``consumed`` and ``window`` (uint32 each, little-endian). Each
end may have at most the peer's ``window`` bytes of a stream's data unconsumed by the peer:
``sent - consumed`` (mod 2³²) stays below it. What :meth:`Mux.send` is given beyond that waits
in the stream's backlog, and leaves when an UPD grants credit (:class:`StreamWritable` then
tells the caller the backlog is empty again). The receiver reports what its application took
with :meth:`Mux.consumed`; an UPD leaves once half a window was taken since the last one.

:class:`Mux` takes bytes from the peer in any chunking and returns :data:`MuxEvent` values; what
it wants sent waits in :meth:`Mux.data_to_send`. It never reads the clock: keepalive (a NOP every
:data:`~hatchway.protocol.portmode.KEEPALIVE_INTERVAL` seconds, and closing the session when
nothing arrived for the timeout) is the caller's, using :meth:`Mux.nop`.

Where it follows smux and where it is stricter (docs/protocol.md §8.5):

* a SYN for a stream id we already know, a FIN or PSH for an unknown id, and a PSH after the
  peer's FIN are dropped, as smux drops them, and counted in :attr:`Mux.dropped_frames`;
* an empty PSH is skipped, as smux skips it;
* a version other than the mux's, an unknown command (UPD, 4, included in version 1), an UPD
  whose length is not 8, or a SYN, FIN or NOP whose length is not 0 raise
  :class:`~hatchway.errors.RemoteProtocolError`, and the mux is dead from then on (smux closes
  the session on the first two; it would misparse the others);
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
    "StreamWritable",
    "encode_frame",
]

#: smux protocol version of ``DefaultConfig`` (docs/protocol.md §8.5).
VERSION: Final = 1
#: smux protocol version with per-stream credit (UPD frames), Hatchway's ends only.
VERSION_2: Final = 2
#: The largest PSH payload we send: smux's ``DefaultConfig().MaxFrameSize``.
MAX_FRAME_DATA: Final = 32768
#: ver, cmd, uint16 length, uint32 stream id.
HEADER_SIZE: Final = 8
MAX_STREAM_ID: Final = 0xFFFFFFFF

_HEADER: Final = struct.Struct("<BBHI")
_UPDATE: Final = struct.Struct("<II")
_MOD: Final = 1 << 32


class Cmd(IntEnum):
    """smux v1 frame commands (docs/protocol.md §8.5)."""

    SYN = 0  # open a stream
    FIN = 1  # the sender will send no more on this stream
    PSH = 2  # data
    NOP = 3  # keepalive; stream id 0
    UPD = 4  # version 2 only: consumed and window of a stream (8 data bytes)


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


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """Version 2: the peer granted credit and the stream's backlog left; send more."""

    stream_id: int


MuxEvent = StreamOpened | StreamData | StreamFinished | StreamWritable


def encode_frame(cmd: Cmd, stream_id: int, data: bytes = b"", *, version: int = VERSION) -> bytes:
    """One smux frame: the header, then ``data`` (at most 65535 bytes, the header's limit).

    Raises:
        LocalProtocolError: the stream id or the length does not fit the header.
    """
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"smux stream id {stream_id} out of range")
    if len(data) > 0xFFFF:
        raise LocalProtocolError(f"smux frame data of {len(data)} bytes exceeds 65535")
    return _HEADER.pack(version, cmd, len(data), stream_id) + data


class _Stream:
    """What a :class:`Mux` remembers of one stream: which sides have finished, and (version 2)
    the credit both ways."""

    __slots__ = (
        "backlog",
        "consumed",
        "discarding",
        "fin_waiting",
        "local_fin",
        "peer_consumed",
        "peer_window",
        "received",
        "remote_fin",
        "reported",
        "sent",
    )

    def __init__(self, window: int) -> None:
        self.local_fin = False  # we finished (our FIN may still wait behind the backlog)
        self.remote_fin = False
        self.fin_waiting = False  # FIN queued behind backlog data
        self.discarding = False  # abandoned: the peer's data is taken and dropped
        self.backlog = bytearray()  # data beyond the peer's credit
        self.sent = 0  # data bytes sent (PSH), mod 2**32
        self.peer_consumed = 0  # the peer's latest UPD
        self.peer_window = window
        self.received = 0  # data bytes the peer sent us, mod 2**32
        self.consumed = 0  # data bytes our application took, mod 2**32
        self.reported = 0  # ``consumed`` in our latest UPD

    def credit(self) -> int:
        return self.peer_window - (self.sent - self.peer_consumed) % _MOD


class Mux:
    """One end of an smux session (version 1, or 2 with per-stream credit), sans-I/O.

    Args:
        client: True for the end that opens streams with odd ids (3, 5, 7, …: smux's counter
            starts at 1 and adds 2 before each use); False for the server, whose ids would be
            even (2, 4, …). AWS's plugin is the client, its agent the server
            (docs/protocol.md §8.5).
        window: 0 for version 1 (AWS's ends); otherwise version 2 with this per-stream
            receive window in bytes, as negotiated in the handshake (docs/protocol.md §7.6).

    Attributes:
        dropped_frames: frames from the peer dropped as smux drops them (see the module
            docstring); a diagnostic, never an error.
    """

    def __init__(self, *, client: bool, window: int = 0) -> None:
        if not 0 <= window < _MOD // 2:
            raise LocalProtocolError(f"smux stream window {window} out of range")
        #: Version 2 (per-stream credit) when ``window`` > 0: what each side may have of a
        #: stream's data unconsumed by the other.
        self.window = window
        self.version = VERSION_2 if window else VERSION
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
        self._streams[stream_id] = _Stream(self.window)
        self._queue(Cmd.SYN, stream_id)
        return stream_id

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` on a stream as PSH frames of at most :data:`MAX_FRAME_DATA` bytes;
        in version 2 only as far as the peer's credit goes, the rest waits in the stream's
        backlog (:meth:`backlog`).

        Empty data queues nothing. Raises:
            LocalProtocolError: the stream is unknown or we already finished it.
        """
        stream = self._writable(stream_id)
        if not self.window:
            self._queue_data(stream_id, data)
            return
        stream.backlog += data
        self._release(stream_id, stream)

    def backlog(self, stream_id: int) -> int:
        """Version 2: bytes of the stream waiting for the peer's credit (0 for an unknown one)."""
        stream = self._streams.get(stream_id)
        return len(stream.backlog) if stream is not None else 0

    def consumed(self, stream_id: int, total: int) -> None:
        """Version 2: our application has taken ``total`` bytes of the stream's data so far (a
        running count; only its growth matters). Queues an UPD once half a window was taken
        since the last one. No-op in version 1 or for an unknown stream."""
        stream = self._streams.get(stream_id)
        if not self.window or stream is None:
            return
        stream.consumed = total % _MOD
        if (stream.consumed - stream.reported) % _MOD >= self.window // 2:
            stream.reported = stream.consumed
            self._queue(Cmd.UPD, stream_id, _UPDATE.pack(stream.consumed, self.window))

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
        if stream.backlog:
            stream.fin_waiting = True  # after the data the peer has no credit for yet
        else:
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
        """True while the stream is known and not finished by both sides (our FIN sent)."""
        stream = self._streams.get(stream_id)
        return stream is not None and not self._done(stream)

    def abandon(self, stream_id: int) -> None:
        """Our side of the stream is gone (its connection closed or failed): finish it (the
        backlog still leaves first), take and drop whatever the peer still sends on it, granting
        credit for it in version 2 so the peer is never stuck, and forget the stream once both
        sides finished. Unknown streams are ignored."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.discarding = True
        self.finish(stream_id)
        self.consumed(stream_id, stream.received)
        self._forget_if_done(stream_id, stream)

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
                if version != self.version:
                    raise RemoteProtocolError(
                        f"smux frame version {version}, expected {self.version}"
                    )
                if cmd == Cmd.PSH:
                    if end - offset - HEADER_SIZE < length:
                        break  # wait for the rest of the payload
                    start = offset + HEADER_SIZE
                    offset = start + length
                    if length:
                        self._on_data(stream_id, bytes(inbox[start:offset]), events)
                    continue
                if cmd == Cmd.UPD and self.window:
                    if length != _UPDATE.size:
                        raise RemoteProtocolError(f"smux UPD frame with a length of {length}")
                    if end - offset - HEADER_SIZE < length:
                        break
                    start = offset + HEADER_SIZE
                    offset = start + length
                    consumed, window = _UPDATE.unpack_from(inbox, start)
                    self._on_update(stream_id, consumed, window, events)
                    continue
                if cmd > Cmd.NOP:
                    raise RemoteProtocolError(
                        f"smux command {cmd} is not a v{self.version} command"
                    )
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
        self._streams[stream_id] = _Stream(self.window)
        events.append(StreamOpened(stream_id))

    def _on_fin(self, stream_id: int, events: list[MuxEvent]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            self.dropped_frames += 1
            return
        stream.remote_fin = True
        if stream.discarding:
            self._forget_if_done(stream_id, stream)
        else:
            events.append(StreamFinished(stream_id))

    def _on_data(self, stream_id: int, data: bytes, events: list[MuxEvent]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            self.dropped_frames += 1  # smux drops data for a missing or closed stream
            return
        stream.received = (stream.received + len(data)) % _MOD
        if stream.discarding:
            self.consumed(stream_id, stream.received)
        else:
            events.append(StreamData(stream_id, data))

    def _on_update(
        self, stream_id: int, consumed: int, window: int, events: list[MuxEvent]
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            self.dropped_frames += 1  # smux ignores an UPD for a stream it does not have
            return
        if (stream.sent - consumed) % _MOD > (stream.sent - stream.peer_consumed) % _MOD:
            # Credit for bytes we never sent, or an older report than we have: ignore it.
            self.dropped_frames += 1
            return
        stream.peer_consumed = consumed
        stream.peer_window = window
        if stream.backlog:
            self._release(stream_id, stream)
            if stream.discarding:
                self._forget_if_done(stream_id, stream)
            elif not stream.backlog:
                events.append(StreamWritable(stream_id))

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _done(stream: _Stream) -> bool:
        return stream.local_fin and stream.remote_fin and not stream.fin_waiting

    def _forget_if_done(self, stream_id: int, stream: _Stream) -> None:
        if self._done(stream):
            self.forget(stream_id)

    def _release(self, stream_id: int, stream: _Stream) -> None:
        """Send as much of the stream's backlog as the peer's credit allows (then its FIN)."""
        take = min(len(stream.backlog), stream.credit())
        if take > 0:
            with memoryview(stream.backlog) as view:
                self._queue_data(stream_id, view[:take])
            del stream.backlog[:take]
            stream.sent = (stream.sent + take) % _MOD
        if stream.fin_waiting and not stream.backlog:
            stream.fin_waiting = False
            self._queue(Cmd.FIN, stream_id)

    def _queue_data(self, stream_id: int, data: bytes | memoryview) -> None:
        with memoryview(data) as view:
            for start in range(0, len(view), MAX_FRAME_DATA):
                self._queue(Cmd.PSH, stream_id, view[start : start + MAX_FRAME_DATA])

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"smux stream {stream_id} is not open")
        if stream.local_fin:
            raise LocalProtocolError(f"smux stream {stream_id} was already finished")
        return stream

    def _queue(self, cmd: Cmd, stream_id: int, data: bytes | memoryview = b"") -> None:
        self._outbox += _HEADER.pack(self.version, cmd, len(data), stream_id)
        self._outbox += data
