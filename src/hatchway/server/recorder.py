"""Recording one session: the gateway's frames in, an asciicast v2 spool file out.

The gateway hands every stream frame it relays to :meth:`SessionRecorder.feed`, which only
appends it to a list: no decoding, no JSON, no disk on the relay's path. A background task
(``server.recordings``) calls :meth:`SessionRecorder.flush` at least every second; the flush
runs in a worker thread and

* puts each direction's frames in sequence-number order, once each (:class:`StreamSequencer`):
  both ends re-send what is unacknowledged (docs/protocol.md §6), so the gateway sees frames
  again after a reconnect, and acknowledgements and handshake frames are stream frames too;
* turns Output payloads from the agent into ``o`` events, the client's Output (typed input)
  into ``i`` events when input recording is on, and the client's Size payloads into ``r``
  events (protocol/asciicast.py);
* appends the lines to the spool file and then writes a small state file beside it (the next
  sequence number of each direction and the length of the file it matches).

A server killed with SIGKILL thus loses at most the last second. When the session goes on after
the restart (docs/protocol.md §9.7), :meth:`SessionRecorder.resume` cuts the spool file back to the
length in the state file (or, without one, to its last whole line) and continues: frames the
ends re-send that were already written are recognised by their sequence numbers.

An encrypted recording (``Sealing``: the recording's data key and the header that carries it
wrapped) is the same stream of lines, sealed flush by flush into AES-256-GCM chunks after an
``HWREC1`` header line (``auth.sealedrecording``); lengths, the state file and the cut after a
crash then count the file's (encrypted) bytes and whole chunks.

Memory stays bounded: frames waiting for a flush are capped at :data:`MAX_BUFFERED` bytes (past
it, payloads are dropped and counted, never the relay slowed), and a sequencer holds at most
:data:`MAX_OUT_OF_ORDER` frames that arrived ahead of a gap before it gives up on the gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Generic, TypeVar

from hatchway.auth.sealedrecording import (
    MAX_HEADER,
    ChunkOpener,
    ChunkSealer,
    RecordingHeader,
)
from hatchway.auth.sealedrecording import (
    complete_length as sealed_length,
)
from hatchway.auth.sealedrecording import (
    parse_header as parse_sealed_header,
)
from hatchway.errors import InvalidCiphertext, RemoteProtocolError
from hatchway.protocol.asciicast import (
    DEFAULT_HEIGHT,
    DEFAULT_TERM,
    DEFAULT_WIDTH,
    Encoder,
    EventCode,
    Header,
    complete_length,
    parse_event,
    parse_header,
)
from hatchway.protocol.frames import FrameHeader, PayloadType
from hatchway.protocol.payloads import SizePayload

log = logging.getLogger(__name__)

__all__ = [
    "FLUSH_INTERVAL",
    "MAX_BUFFERED",
    "MAX_OUT_OF_ORDER",
    "Sealing",
    "SessionRecorder",
    "StreamSequencer",
]

#: Seconds between flushes of a recording at most (what a crash may lose).
FLUSH_INTERVAL: Final = 0.5
#: Bytes of payload a recording buffers between flushes; past it, payloads are dropped.
MAX_BUFFERED: Final = 64 * 1024 * 1024
#: Buffered bytes past which the flusher is woken early.
WAKE_AT: Final = 1024 * 1024
#: Frames a sequencer holds ahead of a missing one before it skips the gap.
MAX_OUT_OF_ORDER: Final = 4096
#: Seconds a sequencer waits for a missing frame before it skips the gap.
GAP_TIMEOUT: Final = 10.0
#: Bytes read from the end of a spool file to find its last event after a crash.
_TAIL: Final = 1024 * 1024

T = TypeVar("T")

_RECORDED_OUTPUT: Final = frozenset({PayloadType.OUTPUT, PayloadType.STDERR})


class StreamSequencer(Generic[T]):
    """Passes the items of one direction on in sequence-number order, each number once.

    ``expected`` is the next number to pass; ``None`` until the first item, which then sets
    it (a recording resumed without state starts wherever the stream is). Numbers below
    ``expected`` are duplicates (re-sends). Items ahead of a gap wait for it, at most
    ``max_pending`` of them and for ``gap_timeout`` seconds; then the gap is skipped.
    """

    def __init__(
        self,
        expected: int | None = 0,
        *,
        max_pending: int = MAX_OUT_OF_ORDER,
        gap_timeout: float = GAP_TIMEOUT,
    ) -> None:
        self.expected = expected
        self._pending: dict[int, T] = {}
        self._max_pending = max_pending
        self._gap_timeout = gap_timeout
        self._gap_since: float | None = None
        self.duplicates = 0
        self.skipped = 0

    def push(self, seq: int, item: T, now: float) -> list[T]:
        """Take frame ``seq``; returns what can now be passed on, in order."""
        if self.expected is None:
            self.expected = seq
        if seq < self.expected or seq in self._pending:
            self.duplicates += 1
            return []
        if seq != self.expected:
            self._pending[seq] = item
            if self._gap_since is None:
                self._gap_since = now
            if len(self._pending) > self._max_pending:
                return self._skip_gap()
            return []
        out = [item]
        self.expected += 1
        out.extend(self._drain())
        return out

    def expire(self, now: float) -> list[T]:
        """Skip a gap that has been waited for longer than ``gap_timeout``."""
        if self._gap_since is not None and now - self._gap_since >= self._gap_timeout:
            return self._skip_gap()
        return []

    def skip_all(self) -> list[T]:
        """Everything still held, in order, gaps skipped (the recording ends)."""
        out: list[T] = []
        while self._pending:
            out.extend(self._skip_gap())
        return out

    def _skip_gap(self) -> list[T]:
        if not self._pending:
            return []
        first = min(self._pending)
        assert self.expected is not None
        self.skipped += first - self.expected
        self.expected = first
        return self._drain()

    def _drain(self) -> list[T]:
        out: list[T] = []
        assert self.expected is not None
        while self.expected in self._pending:
            out.append(self._pending.pop(self.expected))
            self.expected += 1
        if not self._pending:
            self._gap_since = None
        return out


# One relayed frame: (wall time, to the agent?, sequence number, payload type, payload or None).
_Fed = tuple[float, bool, int, int, memoryview | None]
# What a sequencer carries: (wall time, payload type, payload or None).
_Item = tuple[float, int, memoryview | None]


@dataclass
class _State:
    """What the state file beside a spool file says (JSON)."""

    length: int = 0
    expected_out: int | None = 0
    expected_in: int | None = 0
    last_time: float = 0.0
    chunks: int | None = None
    """Sealed chunks in the first ``length`` bytes (encrypted recordings)."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "length": self.length,
                "out": self.expected_out,
                "in": self.expected_in,
                "time": self.last_time,
                "chunks": self.chunks,
            }
        ).encode()

    @classmethod
    def read(cls, path: Path) -> _State | None:
        try:
            obj = json.loads(path.read_bytes())
            state = cls(
                length=int(obj["length"]),
                expected_out=None if obj["out"] is None else int(obj["out"]),
                expected_in=None if obj["in"] is None else int(obj["in"]),
                last_time=float(obj["time"]),
                chunks=None if obj.get("chunks") is None else int(obj["chunks"]),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is not a recording state file (%s); ignoring it", path, exc)
            return None
        return state


@dataclass(frozen=True, slots=True)
class Sealing:
    """How a recording is encrypted: its header (KMS key ARN, wrapped data key) and the data
    key itself (held in memory only while the recording is written)."""

    header: RecordingHeader
    data_key: bytes = field(repr=False)


@dataclass(eq=False)
class SessionRecorder:
    """The recording of one session, written to ``path`` (the spool file).

    Create it with :meth:`create` (a new session) or :meth:`resume` (after a restart); the
    gateway calls :meth:`feed` for every stream frame it relays; the recordings service calls
    :meth:`flush` periodically and :meth:`close` once.

    Attributes:
        session_id: the recorded session (the header's title).
        path: the spool file (``0600``; its directory ``0700``).
        record_input: whether the client's keystrokes become ``i`` events.
        clock: the wall clock (event times are wall-clock seconds since the header's).
        wake: called from :meth:`feed` when a flush should come early (much buffered).
    """

    session_id: str
    path: Path
    start: int
    record_input: bool = False
    clock: Callable[[], float] = field(default=lambda: 0.0)
    wake: Callable[[], None] | None = None
    term: str = DEFAULT_TERM
    _buffer: list[_Fed] = field(default_factory=list)
    _buffered: int = 0
    dropped: int = 0
    _encoder: Encoder = field(default_factory=Encoder)
    _out: StreamSequencer[_Item] = field(default_factory=StreamSequencer)
    _in: StreamSequencer[_Item] = field(default_factory=StreamSequencer)
    _length: int = 0
    _header_written: bool = False
    _closed: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _sealer: ChunkSealer | None = None

    @classmethod
    def create(
        cls,
        session_id: str,
        path: Path,
        *,
        clock: Callable[[], float],
        record_input: bool = False,
        wake: Callable[[], None] | None = None,
        sealing: Sealing | None = None,
    ) -> SessionRecorder:
        """A new recording starting now; the spool file is created empty, or with only the
        encrypted format's header line given ``sealing`` (an old one of the same name is
        replaced)."""
        _ensure_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        line = sealing.header.to_line() if sealing is not None else b""
        try:
            _write_all(fd, line)
        finally:
            os.close(fd)
        _state_path(path).unlink(missing_ok=True)
        recorder = cls(session_id, path, int(clock()), record_input, clock, wake)
        if sealing is not None:
            recorder._sealer = ChunkSealer(sealing.data_key, line)
            recorder._length = len(line)
        return recorder

    @classmethod
    def resume(
        cls,
        session_id: str,
        path: Path,
        *,
        clock: Callable[[], float],
        record_input: bool = False,
        wake: Callable[[], None] | None = None,
        sealing: Sealing | None = None,
    ) -> SessionRecorder:
        """Continue the recording in ``path`` after a server restart (or crash).

        The file is cut back to what its state file vouches for, or else to its last whole
        line (encrypted: its last whole flush of chunks). Without a state file the sequence
        numbers are unknown: each direction starts at the first frame it sees again (what was
        already written may then repeat).
        """
        if not path.exists():
            return cls.create(
                session_id, path, clock=clock, record_input=record_input, wake=wake,
                sealing=sealing,
            )  # fmt: skip
        if sealing is not None:
            return cls._resume_sealed(session_id, path, clock, record_input, wake, sealing)
        state = _State.read(_state_path(path))
        size = path.stat().st_size
        if state is not None and state.length <= size:
            length = state.length
            expected_out, expected_in, last_time = (
                state.expected_out,
                state.expected_in,
                state.last_time,
            )
        else:
            length = _complete_length_of(path, size)
            expected_out = expected_in = None
            last_time = _last_event_time(path, length)
        if length < size:
            os.truncate(path, length)
        start = int(clock())
        if length:
            with path.open("rb") as f:
                first = f.readline()
            try:
                start = parse_header(first).timestamp
            except RemoteProtocolError:
                log.warning("%s has no valid header; starting it again", path)
                os.truncate(path, 0)
                length = 0
        recorder = cls(session_id, path, start, record_input, clock, wake)
        recorder._length = length
        recorder._header_written = length > 0
        recorder._out = StreamSequencer(expected_out)
        recorder._in = StreamSequencer(expected_in)
        recorder._encoder.restart_at(last_time)
        return recorder

    @classmethod
    def _resume_sealed(
        cls,
        session_id: str,
        path: Path,
        clock: Callable[[], float],
        record_input: bool,
        wake: Callable[[], None] | None,
        sealing: Sealing,
    ) -> SessionRecorder:
        """:meth:`resume` of an encrypted recording: cut back to the state file's length or
        the last whole flush of chunks, and decrypt what is kept to find the asciicast
        header's start and the last event's time. A file that is not this recording's (or
        fails authentication) is kept aside as ``….damaged`` and the recording starts again."""
        data = path.read_bytes()
        try:
            header, line = parse_sealed_header(data[:MAX_HEADER])
            if header.wrapped_key != sealing.header.wrapped_key:
                raise InvalidCiphertext("the header's data key is not this recording's")
            state = _State.read(_state_path(path))
            if state is not None and state.chunks is not None and state.length <= len(data):
                length, chunks = state.length, state.chunks
                expected_out, expected_in = state.expected_out, state.expected_in
            else:
                length, chunks = sealed_length(data, len(line))
                expected_out = expected_in = None
            opened = ChunkOpener(sealing.data_key, line).open(data[len(line) : length])
            if opened.chunks != chunks:
                raise InvalidCiphertext("the chunks do not match the state file")
        except InvalidCiphertext as exc:
            aside = path.with_name(path.name + ".damaged")
            log.error(
                "session %s: the encrypted recording %s cannot be continued (%s); it is kept "
                "as %s and the recording starts again",
                session_id,
                path,
                exc.message,
                aside,
            )
            os.replace(path, aside)
            return cls.create(
                session_id, path, clock=clock, record_input=record_input, wake=wake,
                sealing=sealing,
            )  # fmt: skip
        if length < len(data):
            os.truncate(path, length)
        plain = opened.plaintext
        recorder = cls(session_id, path, int(clock()), record_input, clock, wake)
        first, _, _ = plain.partition(b"\n")
        if plain:
            try:
                recorder.start = parse_header(first).timestamp
            except RemoteProtocolError:
                log.warning("%s has no valid asciicast header inside", path)
        recorder._length = length
        recorder._header_written = bool(plain)
        recorder._out = StreamSequencer(expected_out)
        recorder._in = StreamSequencer(expected_in)
        recorder._encoder.restart_at(_last_time_in(plain))
        recorder._sealer = ChunkSealer(sealing.data_key, line, chunks)
        # Finished before the crash (the final chunk is there, the row not updated): nothing
        # may follow the final chunk, so the recording takes no more writes.
        recorder._closed = opened.final
        return recorder

    # ---- the relay's side (hot path) ---------------------------------------------------------

    def feed(self, to_agent: bool, header: FrameHeader, data: bytes) -> None:
        """Take one stream frame the gateway relays (never blocks, never raises)."""
        if self._closed:
            return
        payload_type = header.payload_type
        payload: memoryview | None = None
        if to_agent:
            wanted = payload_type == PayloadType.SIZE or (
                self.record_input and payload_type == PayloadType.OUTPUT
            )
        else:
            wanted = payload_type in _RECORDED_OUTPUT
        if wanted and header.payload_size:
            if self._buffered + header.payload_size > MAX_BUFFERED:
                self.dropped += header.payload_size
            else:
                # A view, not a copy: the frame's bytes are immutable and kept until written.
                payload = memoryview(data)[len(data) - header.payload_size :]
                self._buffered += header.payload_size
        self._buffer.append((self.clock(), to_agent, header.sequence_number, payload_type, payload))
        if self._buffered >= WAKE_AT and self.wake is not None:
            self.wake()

    @property
    def pending(self) -> bool:
        """Frames wait for a flush."""
        return bool(self._buffer)

    @property
    def length(self) -> int:
        """Bytes of the spool file written so far (whole lines)."""
        return self._length

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- the flusher's side ---------------------------------------------------------------

    async def flush(self) -> None:
        """Write what was fed since the last flush (in a worker thread)."""
        async with self._lock:
            if self._closed:
                return
            batch = self._take()
            await asyncio.to_thread(self._write, batch, False)

    async def close(self, *, final: bool = True) -> int:
        """Flush and stop; ``final``: the session ended (decoders are flushed, the state file
        removed), else the server is only shutting down and the recording goes on after the
        restart. Returns the spool file's length. Idempotent."""
        async with self._lock:
            if self._closed:
                return self._length
            self._closed = True
            batch = self._take()
            await asyncio.to_thread(self._write, batch, final)
            return self._length

    def _take(self) -> list[_Fed]:
        batch, self._buffer, self._buffered = self._buffer, [], 0
        if self.dropped:
            log.warning(
                "session %s: %d bytes of output were not recorded (the recording fell behind)",
                self.session_id,
                self.dropped,
            )
            self.dropped = 0
        return batch

    def _write(self, batch: list[_Fed], final: bool) -> None:
        """Sequence, encode and append ``batch`` (runs in a worker thread, one at a time)."""
        chunks: list[bytes] = []
        now = self.clock()
        for t, to_agent, seq, payload_type, payload in batch:
            sequencer = self._in if to_agent else self._out
            for item in sequencer.push(seq, (t, payload_type, payload), now):
                self._encode(chunks, to_agent, item)
        for to_agent, sequencer in ((False, self._out), (True, self._in)):
            held = sequencer.skip_all() if final else sequencer.expire(now)
            for item in held:
                self._encode(chunks, to_agent, item)
        if final and self._header_written:
            chunks.append(self._encoder.finish(self._encoder.last_time))
        if final and not self._header_written:
            self._write_header(chunks, DEFAULT_WIDTH, DEFAULT_HEIGHT)
        data = b"".join(chunks)
        if self._sealer is not None and (data or final):
            data = self._sealer.seal(data, final=final)
        if data:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            self._length += len(data)
        state_path = _state_path(self.path)
        if final:
            state_path.unlink(missing_ok=True)
        elif data or batch:
            state = _State(
                self._length,
                self._out.expected,
                self._in.expected,
                self._encoder.last_time,
                None if self._sealer is None else self._sealer.next_index,
            )
            _replace(state_path, state.to_json())

    def _encode(self, chunks: list[bytes], to_agent: bool, item: _Item) -> None:
        t, payload_type, payload = item
        if payload is None:
            return
        rel = t - self.start
        if to_agent and payload_type == PayloadType.SIZE:
            try:
                size = SizePayload.from_json(payload.tobytes())
            except RemoteProtocolError:
                return
            if not self._header_written:
                self._write_header(chunks, size.cols, size.rows)
                return
            chunks.append(self._encoder.resize(rel, size.cols, size.rows))
            return
        if not self._header_written:
            self._write_header(chunks, DEFAULT_WIDTH, DEFAULT_HEIGHT)
        code = EventCode.INPUT if to_agent else EventCode.OUTPUT
        line = self._encoder.data(code, rel, payload)
        if line:
            chunks.append(line)

    def _write_header(self, chunks: list[bytes], width: int, height: int) -> None:
        header = Header(width, height, self.start, self.session_id, self.term)
        chunks.append(header.to_line())
        self._header_written = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _last_time_in(plain: bytes) -> float:
    """The time of the last event among whole lines of ``plain`` (0 if none)."""
    for line in reversed(plain[-_TAIL:].splitlines()):
        try:
            return parse_event(line).time
        except RemoteProtocolError:
            continue
    return 0.0


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".state")


def _replace(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` (rename; no fsync: it guards against a killed process)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _complete_length_of(path: Path, size: int) -> int:
    """The length of ``path``'s whole lines (searching back from the end)."""
    with path.open("rb") as f:
        end = size
        while end > 0:
            start = max(0, end - _TAIL)
            f.seek(start)
            chunk = f.read(end - start)
            cut = complete_length(chunk)
            if cut:
                return start + cut
            end = start
    return 0


def _last_event_time(path: Path, length: int) -> float:
    """The time of the last event in the first ``length`` bytes of ``path`` (0 if none)."""
    if length == 0:
        return 0.0
    with path.open("rb") as f:
        start = max(0, length - _TAIL)
        f.seek(start)
        lines = f.read(length - start).splitlines()
    for line in reversed(lines):
        try:
            return parse_event(line).time
        except RemoteProtocolError:
            continue
    return 0.0
