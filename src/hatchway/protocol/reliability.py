"""Sequencing, acknowledgement and retransmission of one data channel (protocol.md §5).

:class:`Endpoint` is one side of a data channel, client or agent. It is sans-I/O: bytes go in
through :meth:`Endpoint.receive`, events come out, and encoded frames wait in
:meth:`Endpoint.data_to_send`. The caller owns the clock and the timer: it calls
:meth:`Endpoint.handle_timer` at :meth:`Endpoint.next_deadline`.

It interoperates with AWS's plugin and agent but avoids their bugs (docs/protocol.md):

* every expired frame is retransmitted, not only the head of the queue (§5.3), and its send time
  is updated, so it is resent once per RTO rather than every 100 ms;
* Karn's rule: a retransmitted frame yields no RTT sample, and a retransmission timeout doubles
  the RTO (capped at 1 s);
* a full send buffer is the caller's error (check :meth:`Endpoint.send_window`), never a silent
  eviction (§5.2);
* frames held back by ``pause_publication`` are all sent, in order, when publication resumes
  (§5.5), instead of trickling out through the resend scheduler.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.control import ack_for
from hatchway.protocol.events import (
    ChannelClosedEvent,
    Event,
    NoticeReceived,
    PublicationPaused,
    PublicationStarted,
    SessionStateChanged,
    StreamData,
    UnknownMessage,
)
from hatchway.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FLAG_SYN,
    FRAME_HEADER_SIZE,
    Frame,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
)
from hatchway.protocol.payloads import (
    AcknowledgeContent,
    AgentSessionState,
    ChannelClosedPayload,
    NoticePayload,
)

__all__ = [
    "CLOCK_GRANULARITY",
    "INITIAL_RTO",
    "INITIAL_RTT",
    "MAX_RTO",
    "Endpoint",
    "Role",
]

#: Timing constants shared by AWS's plugin and agent (protocol.md §5.4), in seconds.
INITIAL_RTO: Final = 0.2
INITIAL_RTT: Final = 0.1
CLOCK_GRANULARITY: Final = 0.01
MAX_RTO: Final = 1.0

# Raw byte streams may be split at any byte; every other payload type is one message.
_CHUNKED_TYPES: Final = frozenset({PayloadType.OUTPUT, PayloadType.STDERR})


class Role(Enum):
    """Which end of the data channel an :class:`Endpoint` is (protocol.md §4.1)."""

    CLIENT = "client"
    AGENT = "agent"

    @property
    def sends(self) -> MessageType:
        """The stream type this side sends."""
        if self is Role.CLIENT:
            return MessageType.INPUT_STREAM_DATA
        return MessageType.OUTPUT_STREAM_DATA

    @property
    def receives(self) -> MessageType:
        """The stream type this side accepts."""
        if self is Role.CLIENT:
            return MessageType.OUTPUT_STREAM_DATA
        return MessageType.INPUT_STREAM_DATA


@dataclass(slots=True)
class _Outgoing:
    """A sent (or held-back) stream frame awaiting its acknowledgement."""

    sequence_number: int
    wire: bytes
    last_sent: float | None = None  # None: held back by a pause, never emitted
    retransmitted: bool = False


class Endpoint:
    """One side of a data channel's reliable stream (protocol.md §5).

    Args:
        role: ``Role.CLIENT`` sends ``input_stream_data``, ``Role.AGENT`` ``output_stream_data``.
        now: the current time (Unix seconds); later calls bring their own ``now``.
        max_payload_size: chunk size for Output/StdErr data (1024 unless negotiated higher).
        send_capacity: how many frames may wait for an acknowledgement.
        send_buffer_bytes: and how many bytes of them at most (with 64 KiB payloads, 10 000
            frames would be 640 MiB held for a client that went away).
        receive_capacity: how many out-of-order frames are buffered; more are dropped unacked.
        receive_buffer_bytes: and how many payload bytes at most (a peer sending far-ahead
            1 MiB frames must not make us hold 10 000 of them).
        verify_digest: check incoming payload digests (AWS's agent does not, §3).
        max_frame_size: the largest frame accepted or produced.
        id_factory: MessageId source, injectable for tests.
    """

    def __init__(
        self,
        role: Role,
        *,
        now: float,
        max_payload_size: int = 1024,
        send_capacity: int = 10_000,
        send_buffer_bytes: int = 8 * 1024 * 1024,
        receive_capacity: int = 10_000,
        receive_buffer_bytes: int = 16 * 1024 * 1024,
        verify_digest: bool = True,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        id_factory: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        if send_capacity < 1:
            raise LocalProtocolError(f"send_capacity must be at least 1, not {send_capacity}")
        if receive_capacity < 0:
            raise LocalProtocolError(f"receive_capacity must be >= 0, not {receive_capacity}")
        if max_frame_size <= FRAME_HEADER_SIZE:
            raise LocalProtocolError(f"max_frame_size {max_frame_size} leaves no room for data")
        self._role = role
        del now  # accepted for symmetry with the other calls; nothing is timed at creation
        self._sends = role.sends
        self._receives = role.receives
        self._verify_digest = verify_digest
        self._max_frame_size = max_frame_size
        self._id_factory = id_factory
        self._send_capacity = send_capacity
        self._send_buffer_bytes = send_buffer_bytes
        self._unacked_bytes = 0
        self._receive_capacity = receive_capacity
        self._receive_buffer_bytes = receive_buffer_bytes
        self._reorder_bytes = 0
        self._max_payload_size = 0
        self.max_payload_size = max_payload_size

        # Sender. _unacked is in sequence order; _in_flight holds the emitted ones ordered by
        # last send time, so its head is always the next to expire.
        self._next_seq = 0
        self._unacked: dict[int, _Outgoing] = {}
        self._in_flight: OrderedDict[int, _Outgoing] = OrderedDict()
        self._rto = INITIAL_RTO
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._paused = False

        # Receiver. ``accepting`` False refuses new stream data (receive-side backpressure).
        self.accepting = True
        self._expected = 0
        self._reorder: dict[int, Frame] = {}

        self._outbox: list[bytes] = []  # stream frames (new and retransmitted)
        # Frames to acknowledge, with when they came; encoded only when drained, so building
        # the ack costs nothing on the way from the wire to the terminal.
        self._acks: list[tuple[Frame, float]] = []
        self._closed = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def max_payload_size(self) -> int:
        """Chunk size for Output/StdErr data; at least 1 and small enough to fit a frame."""
        return self._max_payload_size

    @max_payload_size.setter
    def max_payload_size(self, value: int) -> None:
        limit = self._max_frame_size - FRAME_HEADER_SIZE
        if not 1 <= value <= limit:
            raise LocalProtocolError(f"max_payload_size must be in [1, {limit}], not {value}")
        self._max_payload_size = value

    @property
    def paused(self) -> bool:
        """True between ``pause_publication`` and the next resume (protocol.md §5.5)."""
        return self._paused

    @property
    def unacked_count(self) -> int:
        """Frames sent or held back that the peer has not acknowledged."""
        return len(self._unacked)

    @property
    def all_acked(self) -> bool:
        """True when every frame handed to :meth:`send` has been acknowledged."""
        return not self._unacked

    @property
    def rto(self) -> float:
        """Current retransmission timeout in seconds."""
        return self._rto

    @property
    def srtt(self) -> float | None:
        """Smoothed round-trip time, or ``None`` before the first sample."""
        return self._srtt

    @property
    def expected_sequence_number(self) -> int:
        """The next sequence number the peer's stream must deliver."""
        return self._expected

    @property
    def next_sequence_number(self) -> int:
        """The sequence number the next sent frame gets."""
        return self._next_seq

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending ------------------------------------------------------------------------------

    def send_window(self) -> int:
        """How many more full-size frames :meth:`send` may queue before the buffer is full
        (by frame count and by bytes)."""
        by_count = self._send_capacity - len(self._unacked)
        room = self._send_buffer_bytes - self._unacked_bytes
        by_bytes = max(0, room) // (self._max_payload_size + FRAME_HEADER_SIZE)
        return min(by_count, by_bytes)

    def _chunks(self, payload_type: int, data: bytes) -> list[bytes]:
        if payload_type in _CHUNKED_TYPES:
            size = self._max_payload_size
            return [data[i : i + size] for i in range(0, len(data), size)]
        # JSON, flag and exit-code payloads must arrive whole (protocol.md §4.2).
        return [data]

    def send(self, payload_type: int, data: bytes, *, now: float) -> None:
        """Queue ``data`` as sequenced stream frames (protocol.md §5.1).

        Output and StdErr data are split into ``max_payload_size`` chunks; other payload types
        (handshake, size, flag, exit code) go as one frame. The agent's frame 0 carries SYN.
        Frames are emitted at once unless publication is paused.

        Raises:
            LocalProtocolError: empty data, a closed endpoint, a frame over the size limit, or
                more frames than :meth:`send_window` allows (nothing is queued then).
        """
        if self._closed:
            raise LocalProtocolError("cannot send on a closed endpoint")
        if not data:
            raise LocalProtocolError("cannot send empty data (protocol.md §3)")
        chunks = self._chunks(payload_type, bytes(data))
        window = self._send_capacity - len(self._unacked)
        if len(chunks) > window:
            raise LocalProtocolError(
                f"send buffer full: {len(chunks)} frames do not fit in a window of {window}"
            )
        pending: list[_Outgoing] = []
        for offset, chunk in enumerate(chunks):
            seq = self._next_seq + offset
            syn = self._role is Role.AGENT and seq == 0
            wire = encode_frame(
                Frame(
                    message_type=self._sends.value,
                    sequence_number=seq,
                    flags=FLAG_SYN if syn else 0,
                    message_id=self._id_factory(),
                    payload_type=payload_type,
                    payload=chunk,
                    created_date=int(now * 1000),
                )
            )
            if len(wire) > self._max_frame_size:
                raise LocalProtocolError(
                    f"a {len(wire)}-byte frame exceeds the {self._max_frame_size}-byte limit"
                )
            pending.append(_Outgoing(seq, wire))
        self._next_seq += len(pending)
        for out in pending:
            self._unacked[out.sequence_number] = out
            self._unacked_bytes += len(out.wire)
            if not self._paused:
                self._emit(out, now)

    def _emit(self, out: _Outgoing, now: float) -> None:
        if out.last_sent is not None:
            out.retransmitted = True  # Karn: no RTT sample from this frame any more
        out.last_sent = now
        self._in_flight[out.sequence_number] = out
        self._in_flight.move_to_end(out.sequence_number)
        self._outbox.append(out.wire)

    def data_to_send(self, *, acks: bool = True) -> list[bytes]:
        """Drain the encoded frames: stream frames in sequence order, then acknowledgements.

        Acks are unsequenced, so they may trail the data: a reply (an echoed keystroke) then
        overtakes the acknowledgement of what caused it on every hop. With ``acks=False`` the
        acknowledgements stay queued, so a driver can delay them briefly (delayed ACK, as TCP
        does) and let them ride along with the next data it sends.
        """
        out, self._outbox = self._outbox, []
        if acks and self._acks:
            pending, self._acks = self._acks, []
            out += [ack_for(f, now=t, message_id=self._id_factory()) for f, t in pending]
        return out

    @property
    def acks_pending(self) -> bool:
        """Whether acknowledgements are waiting in the queue."""
        return bool(self._acks)

    # -- timers -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run; ``None`` if nothing can expire."""
        if self._closed or self._paused or not self._in_flight:
            return None
        head = next(iter(self._in_flight.values()))
        assert head.last_sent is not None
        return head.last_sent + self._rto

    def handle_timer(self, now: float) -> None:
        """Retransmit every frame whose last send is at least one RTO old (protocol.md §5.3).

        Expired frames go out in sequence order with their send time updated; the RTO doubles
        once per timeout, up to 1 s.
        """
        if self._closed or self._paused:
            return
        expired: list[_Outgoing] = []
        for out in self._in_flight.values():
            assert out.last_sent is not None
            if out.last_sent + self._rto > now:
                break
            expired.append(out)
        if not expired:
            return
        self._rto = min(MAX_RTO, self._rto * 2)
        for out in sorted(expired, key=lambda o: o.sequence_number):
            self._emit(out, now)

    def retransmit_all(self, now: float) -> None:
        """After a reconnect, queue every unacknowledged frame again, in sequence order.

        A reconnect also ends any pause, as in AWS's agent (protocol.md §8.3).
        """
        if self._closed:
            return
        self._paused = False
        for out in list(self._unacked.values()):
            self._emit(out, now)

    def _resume(self, now: float) -> None:
        # protocol.md §5.5: everything held back or unacknowledged goes out, in order.
        if not self._paused:
            return
        self._paused = False
        for out in list(self._unacked.values()):
            self._emit(out, now)

    def _sample_rtt(self, sample: float) -> None:
        # Jacobson/Karels with AWS's constants (protocol.md §5.4); the first sample updates the
        # seeded estimate (RTT 100 ms, variation 0) exactly as both AWS peers do.
        if sample < 0:
            return  # the wall clock went backwards
        srtt = INITIAL_RTT if self._srtt is None else self._srtt
        self._rttvar = 0.75 * self._rttvar + 0.25 * abs(srtt - sample)
        self._srtt = 0.875 * srtt + 0.125 * sample
        self._rto = min(MAX_RTO, self._srtt + max(CLOCK_GRANULARITY, 4 * self._rttvar))

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes, *, now: float) -> list[Event]:
        """Process one wire message and return what it means.

        Stream data and acknowledges also end a pause (protocol.md §5.5). A closed endpoint
        ignores input.

        Raises:
            RemoteProtocolError: a malformed frame or payload, our own stream type coming back,
                or a negative stream sequence number.
        """
        if self._closed:
            return []
        frame = decode_frame(data, verify_digest=self._verify_digest, max_size=self._max_frame_size)
        kind = frame.message_type
        if kind == self._receives:
            self._resume(now)
            return self._on_stream(frame, now)
        if kind == self._sends:
            raise RemoteProtocolError(
                f"{self._role.value} endpoint received {kind}, which only it may send"
            )
        if kind == MessageType.ACKNOWLEDGE:
            self._on_ack(AcknowledgeContent.from_json(frame.payload), now)
            self._resume(now)  # after the ack, so the acked frame is not resent
            return []
        if kind == MessageType.CHANNEL_CLOSED:
            return [ChannelClosedEvent(ChannelClosedPayload.from_json(frame.payload))]
        if kind == MessageType.PAUSE_PUBLICATION:
            self._paused = True
            return [PublicationPaused()]
        if kind == MessageType.START_PUBLICATION:
            self._resume(now)
            return [PublicationStarted()]
        if kind == MessageType.AGENT_SESSION_STATE:
            return [SessionStateChanged(AgentSessionState.from_json(frame.payload).session_state)]
        if kind == MessageType.HATCHWAY_NOTICE:
            return [NoticeReceived(NoticePayload.from_json(frame.payload))]
        return [UnknownMessage(kind)]

    def _ack(self, frame: Frame, now: float) -> None:
        self._acks.append((frame, now))

    def _on_stream(self, frame: Frame, now: float) -> list[Event]:
        # protocol.md §5.1, receiver cases 1-3 (re-acking duplicates, as AWS's agent does).
        seq = frame.sequence_number
        if seq < 0:
            raise RemoteProtocolError(f"{frame.message_type} with negative sequence number {seq}")
        if seq < self._expected or seq in self._reorder:
            self._ack(frame, now)
            return []
        if not self.accepting:
            # Like AWS's "handler not ready" (§5.1): neither delivered nor acknowledged, so
            # the sender keeps it and retransmits; its send window fills and it stops reading.
            return []
        if seq > self._expected:
            room = self._receive_buffer_bytes - self._reorder_bytes
            if len(self._reorder) < self._receive_capacity and len(frame.payload) <= room:
                self._ack(frame, now)
                self._reorder[seq] = frame
                self._reorder_bytes += len(frame.payload)
            return []
        self._ack(frame, now)
        events: list[Event] = [StreamData(frame.payload_type, frame.payload, seq)]
        self._expected += 1
        while (buffered := self._reorder.pop(self._expected, None)) is not None:
            # Acked when it arrived; delivered now without a second ack.
            self._reorder_bytes -= len(buffered.payload)
            events.append(StreamData(buffered.payload_type, buffered.payload, self._expected))
            self._expected += 1
        return events

    def _on_ack(self, content: AcknowledgeContent, now: float) -> None:
        # Matched by sequence number only (protocol.md §5.1); unknown numbers are ignored.
        out = self._unacked.pop(content.acknowledged_sequence_number, None)
        if out is None:
            return
        self._unacked_bytes -= len(out.wire)
        self._in_flight.pop(out.sequence_number, None)
        if out.last_sent is not None and not out.retransmitted:
            self._sample_rtt(now - out.last_sent)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop sending, retransmitting and receiving. Idempotent.

        Frames already produced stay in :meth:`data_to_send` so final acks can be flushed.
        """
        self._closed = True
