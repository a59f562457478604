"""Sequencing, acknowledgement and retransmission of one data channel (docs/protocol.md §6).

:class:`Endpoint` is one side of a data channel, client or agent. It is sans-I/O: bytes go in
through :meth:`Endpoint.receive`, events come out, and encoded frames wait in
:meth:`Endpoint.data_to_send`. The caller owns the clocks and the timer: every method's ``now``
is a *monotonic* time (``time.monotonic()``) used only for timers and RTT samples, the
``wall_clock`` given to the constructor (``time.time``) only stamps CreatedDate, and the caller
runs :meth:`Endpoint.handle_timer` at :meth:`Endpoint.next_deadline`.

It interoperates with AWS's plugin and agent but differs where they misbehave (docs/protocol.md
§6.6 has the full table):

* **The WebSocket is trusted, the timer is a safety net.** While the connection is up, TCP
  delivers every frame in order; a frame goes unacknowledged only when the receiver refused it
  ("handler not ready", or our agent's ``accepting = False``), when a full out-of-order buffer
  dropped it, or when it was lost with a connection (or at the gateway while an end was away).
  So the RTO has a floor of :data:`MIN_RTO` (1 s, as TCP's RFC 6298) and a cap of
  :data:`MAX_RTO`; AWS's 10 ms granularity made any pause above ~15 ms on a loaded host fire a
  storm of resends.
* **One resend per expiry, with back-off.** A frame is overdue when its latest send is one RTO
  old. On expiry only the lowest-numbered overdue frame (the one an in-order receiver waits for)
  goes out again, the RTO doubles (capped) and the next expiry is one RTO away. Karn's rule: no
  RTT sample from a frame that was ever re-sent.
* **Ack clocking.** Every send of a frame carries a MessageId of its own, and acks echo it
  (docs/protocol.md §6.2; both AWS peers match frames by sequence number only), so an ack says which
  send arrived. When a *resend* is acknowledged, the receiver takes frames again (it had
  refused them), and the next overdue frame goes out at once, one per such ack: a receiver that
  refused input and then caught up is refilled at one frame per round trip, not one per RTO.
  An ack of the first send after a resend only means the path is slow, and clocks out nothing.
* **Path changes re-send everything.** ``start_publication`` (the gateway sends it to both ends
  whenever an end (re)joins) and :meth:`Endpoint.retransmit_all` (the driver's own reconnect)
  mean the path to the peer changed: every unacknowledged frame is sent again at once, in
  sequence order, whether or not the endpoint was paused. Frames held back by
  ``pause_publication`` are likewise all sent when publication resumes (§6.7), instead of
  trickling out through the resend scheduler.
* **A full send buffer is the caller's error** (check :meth:`Endpoint.send_window`), never a
  silent eviction (§6.4): :meth:`Endpoint.send` raises when the frames would exceed the frame
  count or the byte budget.

Cumulative acknowledgements (``cumulative_acks``, for AWS's plugin)
-------------------------------------------------------------------
AWS's plugin drops a duplicate (seq < expected) *without* acknowledging it (docs/protocol.md
§6.3). If its ack of frame M was lost with a connection, M is resent and dropped forever. When
the peer is AWS's plugin (the Hatchway extension was not negotiated) the endpoint therefore
infers acknowledgements. Every emission (send) of a stream frame gets the next number of a
counter; each unacknowledged frame remembers the number and MessageId of each of its emissions,
and the *path* (see above) of its first one. When an ack for frame N arrives, every
unacknowledged frame M with M < N is acknowledged too (without an RTT sample) if

1. M's latest emission precedes the emission of N that the ack names by its MessageId (N's
   *first* emission if the MessageId is not one we sent), and
2. M was first emitted on an earlier path than the current one.

Why this is safe:

(a) One path (a WebSocket through the gateway) delivers in order, and the plugin takes frames
    in order: a frame that arrives is delivered, buffered (and acked) or dropped as a duplicate;
    it is refused only before its session handler is registered at the very start.
(b) Every path change is signalled *before* any ack that travelled the new path: the gateway
    sends ``start_publication`` to this end before it relays anything from the peer's new
    connection, and our own reconnect calls :meth:`Endpoint.retransmit_all` before reading.
    At that signal every unacknowledged frame is emitted again, which moves its latest emission
    past every frame emitted earlier.

So by (b), when condition 1 holds, M's latest emission and the acknowledged emission of N
happened on the current path, M's first; the ack proves that emission of N arrived, so by (a) M
arrived before it and the plugin has it. Condition 2 excludes the one case (a) leaves open: a
frame refused while the plugin's handler was not ready, while later frames were buffered and
acked. A duplicate can only be unacknowledged if its ack was lost, and acks are only lost with a
path change (or at the gateway while the peer was away, which ends in one), so no real duplicate
is excluded.

Two more rules bound what inference cannot settle, in ``cumulative_acks`` mode only:

* a frame that satisfies condition 2, was re-sent :data:`MAX_IGNORED_RESENDS` times (by the
  timer or ack-clocked) on the current path and is still unacknowledged although the peer has
  acknowledged something since its latest emission is treated as delivered (this happens when
  the round trip exceeds the RTO, so condition 1 never holds);
* :attr:`Endpoint.stalled_on_duplicates` tells a session that waits at exit that every
  unacknowledged frame looks like such a duplicate, so it can wait a few seconds instead of
  minutes.

With our own client (Hatchway mode, the default) duplicates are re-acknowledged, acks are
matched one by one, and no frame is ever given up.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.control import ack_for, control_frame
from hatchway.protocol.encryption import PayloadCipher
from hatchway.protocol.events import (
    ChannelClosedEvent,
    Event,
    Notice,
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
    with_message_id,
)
from hatchway.protocol.payloads import (
    AcknowledgeContent,
    AgentSessionState,
    ChannelClosedPayload,
    NoticePayload,
)

__all__ = [
    "INITIAL_RTO",
    "INITIAL_RTT",
    "MAX_IGNORED_RESENDS",
    "MAX_RTO",
    "MIN_RTO",
    "Endpoint",
    "Role",
]

#: Floor of the retransmission timeout, in seconds (RFC 6298 §2.4). The timer only covers
#: refusals and frames lost with a connection; TCP handles everything else.
MIN_RTO: Final = 1.0
#: Cap of the retransmission timeout, back-off included.
MAX_RTO: Final = 4.0
#: RTO before the first RTT sample.
INITIAL_RTO: Final = MIN_RTO
#: Seed of the smoothed RTT, as in AWS's plugin and agent (docs/protocol.md §6.5).
INITIAL_RTT: Final = 0.1
#: Resends on one path (timer or ack-clocked) after which a frame the plugin keeps ignoring
#: counts as delivered.
MAX_IGNORED_RESENDS: Final = 5

# Raw byte streams may be split at any byte; every other payload type is one message.
_CHUNKED_TYPES: Final = frozenset({PayloadType.OUTPUT, PayloadType.STDERR})


#: Payload of the pause/start_publication frames an end sends its peer for flow control
#: (docs/protocol.md §6.7); the gateway's own carry ``{}``.
FLOW_CONTROL_PAYLOAD: Final = b'{"HatchwayFlowControl":true}'


class Role(Enum):
    """Which end of the data channel an :class:`Endpoint` is (docs/protocol.md §5.1)."""

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
    wire: bytes  # as last sent: every send gets a MessageId of its own
    message_id: uuid.UUID  # the one in ``wire``
    # (MessageId, emission number) of every send, oldest first; empty: held back by a pause.
    sends: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    first_path: int = 0  # the path of the first send
    last_sent: float | None = None  # monotonic time of the latest send
    path_resends: int = 0  # timer and ack-clocked resends since the last path change

    @property
    def first_emission(self) -> int | None:
        return self.sends[0][1] if self.sends else None

    @property
    def last_emission(self) -> int | None:
        return self.sends[-1][1] if self.sends else None

    @property
    def retransmitted(self) -> bool:
        """Sent more than once (Karn's rule: no RTT sample any more)."""
        return len(self.sends) > 1

    def emission_acked(self, content: AcknowledgeContent) -> int | None:
        """The emission ``content`` acknowledges, by the MessageId it echoes; None if unknown."""
        try:
            message_id = uuid.UUID(content.acknowledged_message_id)
        except ValueError:
            return None
        for sent_id, emission in self.sends:
            if sent_id == message_id:
                return emission
        return None


class Endpoint:
    """One side of a data channel's reliable stream (docs/protocol.md §6).

    Args:
        role: ``Role.CLIENT`` sends ``input_stream_data``, ``Role.AGENT`` ``output_stream_data``.
        wall_clock: the wall clock (Unix seconds, e.g. ``time.time``), read only to stamp
            CreatedDate on frames and acks. Every method's ``now`` is a monotonic time instead.
        max_payload_size: chunk size for Output/StdErr data (1024 unless negotiated higher).
        send_capacity: how many frames may wait for an acknowledgement.
        send_buffer_bytes: and how many bytes of them (headers included) at most: with 64 KiB
            payloads, 10 000 frames would be 640 MiB held for a client that went away.
        receive_capacity: how many out-of-order frames are buffered; more are dropped unacked.
        receive_buffer_bytes: and how many payload bytes at most (a peer sending far-ahead
            1 MiB frames must not make us hold 10 000 of them).
        verify_digest: check incoming payload digests (AWS's agent does not, docs/protocol.md §4.4).
        max_frame_size: the largest frame accepted or produced, header included.
        cumulative_acks: the peer is AWS's plugin, which drops duplicates without an ack: infer
            acknowledgements and bound resends (see the module docstring). Also settable later,
            once the handshake has said who the peer is.
        id_factory: MessageId source, injectable for tests.
    """

    def __init__(
        self,
        role: Role,
        *,
        wall_clock: Callable[[], float],
        max_payload_size: int = 1024,
        send_capacity: int = 10_000,
        send_buffer_bytes: int = 8 * 1024 * 1024,
        receive_capacity: int = 10_000,
        receive_buffer_bytes: int = 16 * 1024 * 1024,
        verify_digest: bool = True,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        cumulative_acks: bool = False,
        id_factory: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        if send_capacity < 1:
            raise LocalProtocolError(f"send_capacity must be at least 1, not {send_capacity}")
        if receive_capacity < 0:
            raise LocalProtocolError(f"receive_capacity must be >= 0, not {receive_capacity}")
        if max_frame_size <= FRAME_HEADER_SIZE:
            raise LocalProtocolError(f"max_frame_size {max_frame_size} leaves no room for data")
        self._role = role
        self._wall_clock = wall_clock
        self._sends = role.sends
        self._receives = role.receives
        self._verify_digest = verify_digest
        #: Stream frames carry (and incoming ones are checked for) a SHA-256 PayloadDigest;
        #: False once both Hatchway ends agreed to go without (docs/protocol.md §7.6).
        self.payload_digest = True
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
        #: The peer drops duplicates without an ack (AWS's plugin): infer acks, bound resends.
        self.cumulative_acks = cumulative_acks
        #: End-to-end encryption (docs/protocol.md §7.9): once set, payloads of
        #: ``sealed_types`` are sealed chunk by chunk as :meth:`send` queues them (each frame's
        #: payload is ``nonce ‖ ciphertext ‖ tag``). Opening what arrives is the session's.
        self.cipher: PayloadCipher | None = None
        self.sealed_types: frozenset[int] = frozenset()

        # Sender. _unacked is in sequence order; _in_flight holds the emitted ones ordered by
        # last send time, so its head is always the next to expire.
        self._next_seq = 0
        self._unacked: dict[int, _Outgoing] = {}
        self._in_flight: OrderedDict[int, _Outgoing] = OrderedDict()
        self._rto = INITIAL_RTO
        self._quiet_until: float | None = None  # one timer resend per RTO, back-off included
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._paused = False
        self._emissions = 0  # emission counter; every stream frame sent takes the next number
        self._path = 0  # path changes so far
        self._path_start = 0  # the emission counter at the latest path change
        self._ack_mark = 0  # the emission counter when the latest acknowledge arrived
        self._retransmissions = 0

        # Receiver. ``accepting`` False refuses new stream data (receive-side backpressure).
        self._accepting = True
        #: Between Hatchway's own ends: tell the sender when we refuse and when we take data
        #: again (pause/start publication), instead of leaving it to its retransmission timer.
        self.flow_control = False
        self._refused = False  # stream data refused since the last start_publication we sent
        self._pause_sent = False  # we paused the peer and owe it a start_publication
        self._held = False  # paused by the peer's flow control: only start_publication resumes
        self._expected = 0
        self._reorder: dict[int, Frame] = {}

        self._outbox: list[bytes] = []  # stream frames (new and retransmitted)
        # Frames to acknowledge, encoded only when drained, so building the ack costs nothing
        # on the way from the wire to the terminal.
        self._acks: list[Frame] = []
        self._closed = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether new stream data is taken (False: refused and not acknowledged, so the
        sender keeps it; docs/protocol.md §6.3)."""
        return self._accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        """With :attr:`flow_control` (a Hatchway peer), refusing sends the peer
        ``pause_publication`` and taking data again after a refusal sends
        ``start_publication``, on which the peer sends everything unacknowledged at once
        (docs/protocol.md §6.7) instead of after its retransmission time-out (≥ 1 s)."""
        if value == self._accepting:
            return
        self._accepting = value
        if not self.flow_control or self._closed:
            return
        if not value:
            kind = MessageType.PAUSE_PUBLICATION
            self._pause_sent = True
        elif self._pause_sent or self._refused:
            self._pause_sent = self._refused = False
            kind = MessageType.START_PUBLICATION
        else:
            return
        self._outbox.append(control_frame(kind, FLOW_CONTROL_PAYLOAD, now=self._wall_clock()))

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
        """True between ``pause_publication`` and the next resume (docs/protocol.md §6.7)."""
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
    def stalled_on_duplicates(self) -> bool:
        """True when waiting longer is unlikely to bring the missing acknowledgements.

        Only in ``cumulative_acks`` mode, and only when frames are unacknowledged and every one
        of them (1) was first sent on an earlier path, (2) has been sent again on the current
        path, and (3) the peer has acknowledged something since that latest send. AWS's plugin
        then most likely holds them already and drops them as duplicates. A session waiting at
        exit for the last acknowledgements may stop waiting a few seconds after this turns
        true, instead of waiting for a peer that will never answer. False while paused.
        """
        if not self.cumulative_acks or not self._unacked or self._paused:
            return False
        for out in self._unacked.values():
            if out.last_emission is None or out.first_path == self._path:
                return False
            if out.last_emission <= self._path_start or out.last_emission > self._ack_mark:
                return False
        return True

    @property
    def rto(self) -> float:
        """Current retransmission timeout in seconds, back-off included."""
        return self._rto

    @property
    def srtt(self) -> float | None:
        """Smoothed round-trip time, or ``None`` before the first sample."""
        return self._srtt

    @property
    def retransmissions(self) -> int:
        """Stream frames sent again so far (timer, ack clocking, resume and path changes)."""
        return self._retransmissions

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
        # JSON, flag and exit-code payloads must arrive whole (docs/protocol.md §5.3).
        return [data]

    def send(self, payload_type: int, data: bytes, *, now: float) -> None:
        """Queue ``data`` as sequenced stream frames (docs/protocol.md §6.1).

        Output and StdErr data are split into ``max_payload_size`` chunks; other payload types
        (handshake, size, flag, exit code) go as one frame. The agent's frame 0 carries SYN.
        Frames are emitted at once unless publication is paused.

        Raises:
            LocalProtocolError: empty data, a closed endpoint, a frame over the size limit, or
                frames that do not fit in the send buffer, by count (``send_capacity``) or by
                bytes (``send_buffer_bytes``); nothing is queued then.
        """
        if self._closed:
            raise LocalProtocolError("cannot send on a closed endpoint")
        if not data:
            raise LocalProtocolError("cannot send empty data (docs/protocol.md §4.2)")
        chunks = self._chunks(payload_type, bytes(data))
        window = self._send_capacity - len(self._unacked)
        if len(chunks) > window:
            raise LocalProtocolError(
                f"send buffer full: {len(chunks)} frames do not fit in a window of {window}"
            )
        created_date = int(self._wall_clock() * 1000)
        if self.cipher is not None and payload_type in self.sealed_types:
            chunks = [self.cipher.seal(chunk) for chunk in chunks]
        pending: list[_Outgoing] = []
        for offset, chunk in enumerate(chunks):
            seq = self._next_seq + offset
            syn = self._role is Role.AGENT and seq == 0
            wire = encode_frame(
                Frame(
                    message_type=self._sends.value,
                    sequence_number=seq,
                    flags=FLAG_SYN if syn else 0,
                    message_id=(message_id := self._id_factory()),
                    payload_type=payload_type,
                    payload=chunk,
                    created_date=created_date,
                ),
                digest=self.payload_digest,
            )
            if len(wire) > self._max_frame_size:
                raise LocalProtocolError(
                    f"a {len(wire)}-byte frame exceeds the {self._max_frame_size}-byte limit"
                )
            pending.append(_Outgoing(seq, wire, message_id))
        size = sum(len(out.wire) for out in pending)
        room = self._send_buffer_bytes - self._unacked_bytes
        if size > room:
            raise LocalProtocolError(
                f"send buffer full: {size} bytes do not fit in the {max(0, room)} bytes left"
            )
        self._next_seq += len(pending)
        self._unacked_bytes += size
        for out in pending:
            self._unacked[out.sequence_number] = out
            if not self._paused:
                self._emit(out, now)

    def _emit(self, out: _Outgoing, now: float) -> None:
        self._emissions += 1
        if not out.sends:
            out.first_path = self._path
        else:
            # A MessageId of its own, so that the ack (which echoes it, docs/protocol.md §6.2) says
            # which send arrived. Both AWS peers and ours match frames by sequence number only.
            out.message_id = self._id_factory()
            out.wire = with_message_id(out.wire, out.message_id)
            self._retransmissions += 1
        out.sends.append((out.message_id, self._emissions))
        out.last_sent = now
        self._in_flight[out.sequence_number] = out
        self._in_flight.move_to_end(out.sequence_number)
        self._outbox.append(out.wire)

    def data_to_send(self, *, acks: bool = True) -> list[bytes]:
        """Drain the encoded frames: stream frames in sequence order, then acknowledgements.

        Acks are unsequenced, so they may trail the data: a reply (an echoed keystroke) then
        overtakes the acknowledgement of what caused it on every hop. With ``acks=False`` the
        acknowledgements stay queued, so a driver can delay them briefly (delayed ACK, as TCP
        does) and let them ride along with the next data it sends. Acks are stamped with the
        wall clock when drained.
        """
        out, self._outbox = self._outbox, []
        if acks and self._acks:
            pending, self._acks = self._acks, []
            wall = self._wall_clock()
            out += [ack_for(f, now=wall, message_id=self._id_factory()) for f in pending]
        return out

    @property
    def acks_pending(self) -> bool:
        """Whether acknowledgements are waiting in the queue."""
        return bool(self._acks)

    # -- timers -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run (monotonic); ``None`` if nothing can expire.

        That is when the frame sent longest ago is one RTO old, but never sooner than one
        (backed-off) RTO after the previous timer resend.
        """
        if self._closed or self._paused or not self._in_flight:
            return None
        head = next(iter(self._in_flight.values()))
        assert head.last_sent is not None
        due = head.last_sent + self._rto
        return due if self._quiet_until is None else max(due, self._quiet_until)

    def handle_timer(self, now: float) -> None:
        """Resend one overdue frame, the lowest-numbered, then back off (docs/protocol.md §6.6).

        A frame is overdue when its latest send is at least one RTO old. Only one goes out per
        expiry (AWS's peers also resend only the head, but the plugin forgets to update its
        send time); the RTO then doubles, up to :data:`MAX_RTO`, and the next expiry is one RTO
        away whatever else is overdue: a receiver that refuses input or a path that is slow
        gets one frame per RTO, not all of them. The lowest-numbered frame is the one a
        receiver that delivers in order waits for. In ``cumulative_acks`` mode a frame the peer
        keeps ignoring is given up instead (see the module docstring). Calling this early is
        harmless.
        """
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return
        out = self._lowest_overdue(now)
        assert out is not None  # at least the frame sent longest ago
        if self._ignored_duplicate(out):
            self._forget(out)
            return
        self._rto = min(MAX_RTO, self._rto * 2)
        self._quiet_until = now + self._rto
        self._resend(out, now)

    def _lowest_overdue(self, now: float) -> _Outgoing | None:
        head = next(iter(self._in_flight.values()), None)
        if head is None or head.last_sent is None or head.last_sent + self._rto > now:
            return None  # the frame sent longest ago is not overdue: none is
        for out in self._unacked.values():  # in sequence order
            if out.last_sent is not None and out.last_sent + self._rto <= now:
                return out
        return None

    def _resend(self, out: _Outgoing, now: float) -> None:
        out.path_resends += 1
        self._emit(out, now)

    def _ignored_duplicate(self, out: _Outgoing) -> bool:
        """Whether AWS's plugin has most likely dropped ``out`` as a duplicate, again and again."""
        return (
            self.cumulative_acks
            and out.first_path < self._path
            and out.path_resends >= MAX_IGNORED_RESENDS
            and out.last_emission is not None
            and out.last_emission <= self._ack_mark
        )

    def retransmit_all(self, now: float) -> None:
        """After a reconnect, send every unacknowledged frame again, in sequence order.

        A path change (see the module docstring); it also ends any pause, as in AWS's agent
        (docs/protocol.md §6.7).
        """
        if self._closed:
            return
        self._path_changed(now)

    def _path_changed(self, now: float) -> None:
        # Everything unacknowledged goes out again on the new path, in order: frames lost with
        # the old connection, and (for inferred acks) so that no frame's latest emission
        # precedes one made on the new path.
        self._paused = False
        self._path += 1
        self._path_start = self._emissions
        self._rto = self._computed_rto()  # the back-off was about the old path
        self._quiet_until = None
        for out in self._unacked.values():
            out.path_resends = 0
        for out in list(self._unacked.values()):
            self._emit(out, now)

    def _resume(self, now: float) -> None:
        # docs/protocol.md §6.7: everything held back or unacknowledged goes out, in order.
        if not self._paused or self._held:
            return
        self._paused = False
        for out in list(self._unacked.values()):
            self._emit(out, now)

    def _computed_rto(self) -> float:
        if self._srtt is None:
            return INITIAL_RTO
        return min(MAX_RTO, max(MIN_RTO, self._srtt + 4 * self._rttvar))

    def _sample_rtt(self, sample: float) -> None:
        # Jacobson/Karels with AWS's constants and seeds (docs/protocol.md §6.5): the first sample
        # updates the seeded estimate (RTT 100 ms, variation 0) exactly as both AWS peers do.
        # Only the RTO's bounds differ: a floor of MIN_RTO instead of a 10 ms granularity.
        if sample < 0:
            return  # a caller passed a clock that is not monotonic
        srtt = INITIAL_RTT if self._srtt is None else self._srtt
        self._rttvar = 0.75 * self._rttvar + 0.25 * abs(srtt - sample)
        self._srtt = 0.875 * srtt + 0.125 * sample
        self._rto = self._computed_rto()

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes, *, now: float) -> list[Event]:
        """Process one wire message and return what it means.

        ``start_publication`` is a path change (all unacknowledged frames are sent again);
        stream data and acknowledges end a pause too (docs/protocol.md §6.7). A closed endpoint
        ignores input.

        Raises:
            RemoteProtocolError: a malformed frame or payload, our own stream type coming back,
                or a negative stream sequence number.
        """
        if self._closed:
            return []
        frame = decode_frame(
            data,
            verify_digest=self._verify_digest and self.payload_digest,
            max_size=self._max_frame_size,
        )
        kind = frame.message_type
        if kind == self._receives:
            self._resume(now)
            return self._on_stream(frame)
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
            # The peer itself (not the gateway) asks us to hold until its start_publication:
            # acknowledgements still on their way must not end this pause.
            self._held = frame.payload == FLOW_CONTROL_PAYLOAD
            return [PublicationPaused()]
        if kind == MessageType.START_PUBLICATION:
            self._held = False
            self._path_changed(now)
            return [PublicationStarted()]
        if kind == MessageType.AGENT_SESSION_STATE:
            return [SessionStateChanged(AgentSessionState.from_json(frame.payload).session_state)]
        if kind == MessageType.HATCHWAY_NOTICE:
            return [Notice(NoticePayload.from_json(frame.payload))]
        return [UnknownMessage(kind)]

    def _on_stream(self, frame: Frame) -> list[Event]:
        # docs/protocol.md §6.3, the receiver table (re-acking duplicates, as AWS's agent does).
        seq = frame.sequence_number
        if seq < 0:
            raise RemoteProtocolError(f"{frame.message_type} with negative sequence number {seq}")
        if seq < self._expected or seq in self._reorder:
            self._acks.append(frame)
            return []
        if not self._accepting:
            # Like AWS's "handler not ready" (§6.3): neither delivered nor acknowledged, so
            # the sender keeps it and retransmits; its send window fills and it stops reading.
            self._refused = True
            return []
        if seq > self._expected:
            room = self._receive_buffer_bytes - self._reorder_bytes
            if len(self._reorder) < self._receive_capacity and len(frame.payload) <= room:
                self._acks.append(frame)
                self._reorder[seq] = frame
                self._reorder_bytes += len(frame.payload)
            return []
        self._acks.append(frame)
        events: list[Event] = [StreamData(frame.payload_type, frame.payload, seq)]
        self._expected += 1
        while (buffered := self._reorder.pop(self._expected, None)) is not None:
            # Acked when it arrived; delivered now without a second ack.
            self._reorder_bytes -= len(buffered.payload)
            events.append(StreamData(buffered.payload_type, buffered.payload, self._expected))
            self._expected += 1
        return events

    def _on_ack(self, content: AcknowledgeContent, now: float) -> None:
        # Matched by sequence number only (docs/protocol.md §6.2); unknown numbers are ignored.
        self._ack_mark = self._emissions
        out = self._unacked.get(content.acknowledged_sequence_number)
        if out is None:
            return
        self._forget(out)
        if out.last_sent is not None and not out.retransmitted:
            self._sample_rtt(now - out.last_sent)
        # Which send arrived; for an ack naming a MessageId we never sent, assume the first.
        arrived = out.emission_acked(content)
        if self.cumulative_acks:
            self._infer_acks(out, arrived if arrived is not None else out.first_emission)
        if arrived is not None and arrived != out.first_emission and not self._paused:
            self._clock_out(now)

    def _infer_acks(self, acked: _Outgoing, arrived: int | None) -> None:
        """Acknowledge the earlier frames that emission ``arrived`` of ``acked`` proves arrived
        too (module docstring)."""
        if arrived is None:
            return  # acknowledged before we ever sent it: proves nothing
        proven = [
            out
            for out in self._unacked_below(acked.sequence_number)
            if out.last_emission is not None
            and out.last_emission < arrived
            and out.first_path < self._path
        ]
        for out in proven:
            self._forget(out)

    def _unacked_below(self, seq: int) -> list[_Outgoing]:
        below: list[_Outgoing] = []
        for out in self._unacked.values():  # in sequence order
            if out.sequence_number >= seq:
                break
            below.append(out)
        return below

    def _clock_out(self, now: float) -> None:
        # A resend was answered: the receiver takes frames again (it had refused them), so the
        # next overdue frame need not wait for its own timeout; one per ack, no back-off. An ack
        # of the first send after a resend only means the path is slow: nothing more goes out
        # then, or on a path slower than the RTO every ack would clock out another resend.
        out = self._lowest_overdue(now)
        if out is not None:
            self._resend(out, now)

    def _forget(self, out: _Outgoing) -> None:
        del self._unacked[out.sequence_number]
        self._unacked_bytes -= len(out.wire)
        self._in_flight.pop(out.sequence_number, None)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop sending, retransmitting and receiving. Idempotent.

        Frames already produced stay in :meth:`data_to_send` so final acks can be flushed.
        """
        self._closed = True
