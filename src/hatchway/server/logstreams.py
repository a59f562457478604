"""Live log streams: each streamed session's output appended to its log group within a second.

Shell and interactive-command sessions whose log group is chosen (:func:`choose_log_group`:
the server's ``--log-group``, or the session document's ``cloudWatchLogGroupName`` when its
``cloudWatchStreamingEnabled`` is true) get a stream named after the session. The gateway hands
every frame of the agent's output stream to the session's :class:`StreamTap`, which only
appends it to a list (no decoding, no I/O on the relay's path). One writer task, every
:data:`WRITE_INTERVAL` seconds, takes what every tap gathered and, in a worker thread,

* puts each stream's frames in sequence-number order, once each (``recorder.StreamSequencer``:
  the ends re-send what is unacknowledged after a reconnect);
* cuts the output into events (``protocol.logsplit``: lines, text without a newline after
  :data:`~hatchway.protocol.logsplit.FLUSH_AFTER` seconds, at most 256 KiB each);

and then stores all of them in one transaction (``store.logs``), with each stream's next
sequence number, so that a stream resumed after a restart skips what it already has.

Memory is bounded and the relay never waits: output not yet taken by the writer is capped at
:data:`MAX_BUFFERED` bytes across all sessions. Past it — the database is slower than the
sessions' output — payloads are dropped and counted (a log line per turn, and the stream's
``dropped_bytes``), never the session slowed. Events whose write failed are dropped the same
way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hatchway.errors import HatchwayError, StoreError
from hatchway.protocol.frames import FrameHeader, PayloadType
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.logsplit import FLUSH_AFTER, LineSplitter
from hatchway.server.recorder import StreamSequencer
from hatchway.store.logs import StreamBatch
from hatchway.store.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "MAX_BUFFERED",
    "STREAMED_SESSION_TYPES",
    "WRITE_INTERVAL",
    "LogStreamService",
    "StreamTap",
    "choose_log_group",
]

#: Session types whose output is streamed (those whose terminal is recorded).
STREAMED_SESSION_TYPES: Final = frozenset(
    {SessionType.STANDARD_STREAM.value, SessionType.INTERACTIVE_COMMANDS.value}
)
#: Seconds between the writer's turns.
WRITE_INTERVAL: Final = 0.25
#: Output bytes held for the writer across all sessions; past it, output is dropped (counted).
MAX_BUFFERED: Final = 32 * 1024 * 1024
#: Frames one tap holds between two turns; past it, frames are dropped (counted).
MAX_FRAMES: Final = 100_000

_STREAMED_PAYLOADS: Final = frozenset({PayloadType.OUTPUT, PayloadType.STDERR})

#: Attaches a tap to the gateway's live session (``gateway.Gateway.attach_log_stream``).
Attach = Callable[[str, "StreamTap"], bool]

# One relayed frame: (wall time, sequence number, payload or None).
_Fed = tuple[float, int, memoryview | None]


def choose_log_group(server_default: str | None, preferences: Mapping[str, Any]) -> str | None:
    """The log group a new session streams to, ``None`` for none.

    ``preferences`` are the session document's ``inputs`` (AWS's Session Manager preferences):
    ``cloudWatchStreamingEnabled`` true with a ``cloudWatchLogGroupName`` picks that group;
    otherwise the server's ``--log-group`` applies.
    """
    name = preferences.get("cloudWatchLogGroupName")
    if preferences.get("cloudWatchStreamingEnabled") is True and isinstance(name, str) and name:
        return name
    return server_default


@dataclass
class _Budget:
    """Output bytes held by all taps together."""

    limit: int
    used: int = 0


@dataclass(eq=False)
class StreamTap:
    """One session's stream while it runs: fed by the gateway, drained by the writer."""

    session_id: str
    group: str
    stream_id: int
    clock: Callable[[], float]
    budget: _Budget
    sequencer: StreamSequencer[tuple[float, memoryview | None]] = field(
        default_factory=StreamSequencer
    )
    splitter: LineSplitter = field(default_factory=LineSplitter)
    ended: bool = False
    dropped: int = 0
    _buffer: list[_Fed] = field(default_factory=list)
    _buffered: int = 0

    # ---- the relay's side (hot path) ---------------------------------------------------------

    def feed(self, header: FrameHeader, data: bytes) -> None:
        """Take one frame of the agent's output stream (never blocks, never raises)."""
        if self.ended:
            return
        size = header.payload_size
        streamed = header.payload_type in _STREAMED_PAYLOADS
        if len(self._buffer) >= MAX_FRAMES:  # the writer is far behind: the frame goes too
            self.dropped += size if streamed else 0
            return
        payload: memoryview | None = None
        if streamed and size:
            if self.budget.used + size > self.budget.limit:
                self.dropped += size
            else:
                # A view, not a copy: the frame's bytes are immutable and kept until written.
                payload = memoryview(data)[len(data) - size :]
                self.budget.used += size
                self._buffered += size
        self._buffer.append((self.clock(), header.sequence_number, payload))

    # ---- the writer's side --------------------------------------------------------------------

    def take(self) -> list[_Fed]:
        batch, self._buffer = self._buffer, []
        self.budget.used -= self._buffered
        self._buffered = 0
        return batch

    def process(self, batch: list[_Fed], now: float, *, final: bool) -> StreamBatch:
        """Sequence and split ``batch`` (in a worker thread; one at a time per tap)."""
        events: list[tuple[int, str]] = []

        def add(items: list[tuple[float, memoryview | None]]) -> None:
            for t, payload in items:
                if payload is not None:
                    lines = self.splitter.feed(payload.tobytes(), t)
                    events.extend((round(line.time * 1000), line.text) for line in lines)

        for t, seq, payload in batch:
            add(self.sequencer.push(seq, (t, payload), now))
        add(self.sequencer.skip_all() if final else self.sequencer.expire(now))
        lines = self.splitter.finish(now) if final else self.splitter.poll(now)
        events.extend((round(line.time * 1000), line.text) for line in lines)
        dropped, self.dropped = self.dropped, 0
        moved = self.sequencer.expected if batch or final else None
        return StreamBatch(self.stream_id, events, moved, dropped)

    @property
    def busy(self) -> bool:
        """The writer has something to do for this tap."""
        return bool(self._buffer) or self.splitter.pending or bool(self.dropped)


class LogStreamService:
    """Owns the live streams and the writer task (see the module docstring).

    Args:
        store: the ``logs`` repository.
        log_group: the server's ``--log-group`` (``None``: only documents choose).
        clock: the wall clock (event times).
        interval: seconds between the writer's turns.
        flush_after: seconds text without a newline waits for one.
        max_buffered: output bytes held across all sessions before output is dropped.
    """

    def __init__(
        self,
        store: Store,
        log_group: str | None,
        clock: Callable[[], float],
        *,
        interval: float = WRITE_INTERVAL,
        flush_after: float = FLUSH_AFTER,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self._store = store
        self.log_group = log_group
        self._clock = clock
        self._interval = interval
        self._flush_after = flush_after
        self._budget = _Budget(max_buffered)
        self._live: dict[str, StreamTap] = {}
        self._ending: list[StreamTap] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._turn_lock = asyncio.Lock()
        self.dropped_total = 0

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="log-writer")

    async def stop(self) -> None:
        """Server shutdown: write what is held (partial lines too); streams stay open, since
        their sessions go on after the restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.turn(flush_all=True)
        self._live.clear()

    async def restore(
        self, live_ids: set[str], attach: Attach, *, only: Collection[str] | None = None
    ) -> None:
        """At start: go on with the streams of sessions that go on (from the sequence number
        each had reached), end the others. ``only``: just these sessions' streams (scale-out:
        sessions this replica took over)."""
        try:
            streams = await self._store.logs.open_streams()
        except StoreError as exc:
            log.error("cannot read the open log streams: %s", exc.message)
            return
        for stream in streams:
            if only is not None and stream.name not in only:
                continue
            tap = self._tap(stream.name, stream.group_name, stream.stream_id)
            tap.sequencer = StreamSequencer(stream.next_sequence)
            if stream.name in live_ids and attach(stream.name, tap):
                self._live[stream.name] = tap
                log.info("session %s: its log stream goes on after the restart", stream.name)
            else:
                with contextlib.suppress(StoreError):
                    await self._store.logs.end_stream(stream.stream_id, self._clock())

    # ---- sessions -----------------------------------------------------------------------------

    async def begin(
        self,
        session_id: str,
        session_type: str,
        group: str | None,
        *,
        unreadable: str | None = None,
    ) -> StreamTap | None:
        """Open the session's stream in ``group`` (created if need be), if its type is
        streamed. A failure is logged and the session runs without a stream (not refused).

        ``unreadable``: the session is encrypted end to end, so the gateway sees only
        ciphertext. Its stream is then one event saying so (the text given), closed at once,
        rather than garbage or an unexplained silence; no tap is returned.
        """
        if group is None or session_type not in STREAMED_SESSION_TYPES:
            return None
        now = self._clock()
        try:
            log_group = await self._store.logs.ensure_group(group, now)
            stream = await self._store.logs.open_stream(log_group.group_id, session_id, now)
            if unreadable is not None:
                stamp = round(now * 1000)
                await self._store.logs.append(
                    [StreamBatch(stream.stream_id, [(stamp, f"[hatchway] {unreadable}\n")])],
                    stamp,
                )
                await self._store.logs.end_stream(stream.stream_id, now)
                return None
        except HatchwayError as exc:
            log.error("session %s: cannot open its log stream in %s: %s", session_id, group, exc)
            return None
        tap = self._tap(session_id, group, stream.stream_id)
        self._live[session_id] = tap
        return tap

    async def finish(self, session_id: str) -> None:
        """The session ended: its last output is written and the stream closed by the writer's
        next turn (at once, not waiting for the interval). Idempotent."""
        tap = self._live.pop(session_id, None)
        if tap is None:
            return
        tap.ended = True
        self._ending.append(tap)
        self._wake.set()

    def let_go(self, session_id: str) -> None:
        """Scale-out: the session moved to another replica before any output; that replica
        streams it from here on (``restore`` with ``only``). The stream stays open."""
        self._live.pop(session_id, None)

    def forget_group(self, group: str) -> None:
        """The group was deleted: its live streams stop (their sessions go on unstreamed)."""
        for session_id, tap in list(self._live.items()):
            if tap.group == group:
                tap.ended = True
                tap.take()
                del self._live[session_id]

    def tap(self, session_id: str) -> StreamTap | None:
        return self._live.get(session_id)

    def _tap(self, session_id: str, group: str, stream_id: int) -> StreamTap:
        return StreamTap(
            session_id,
            group,
            stream_id,
            self._clock,
            self._budget,
            splitter=LineSplitter(flush_after=self._flush_after),
        )

    # ---- the writer ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.turn()
            except Exception:  # a task boundary: log it, keep writing
                log.exception("the log writer's turn failed")

    async def turn(self, *, flush_all: bool = False) -> int:
        """One turn of the writer: take, process and store what every tap holds; returns the
        events stored. ``flush_all``: text without a newline is written out too."""
        async with self._turn_lock:
            ending, self._ending = self._ending, []
            work = [(tap, tap.take(), False) for tap in self._live.values() if tap.busy]
            work += [(tap, tap.take(), True) for tap in ending]
            if not work:
                return 0
            now = self._clock()
            horizon = now + self._flush_after if flush_all else now
            batches = await asyncio.to_thread(_process, work, horizon)
            events = sum(len(b.events) for b in batches)
            try:
                stored = await self._store.logs.append(
                    [
                        b
                        for b in batches
                        if b.events or b.dropped_bytes or b.next_sequence is not None
                    ],
                    round(self._clock() * 1000),
                )
            except HatchwayError as exc:
                lost = sum(len(text.encode()) for b in batches for _, text in b.events)
                self.dropped_total += lost
                log.warning(
                    "log streams: %d events (%d bytes) could not be stored and are dropped: %s",
                    events,
                    lost,
                    exc.message,
                )
                stored = 0
            dropped = sum(b.dropped_bytes for b in batches)
            if dropped:
                self.dropped_total += dropped
                log.warning(
                    "log streams: %d bytes of session output were dropped (the store fell "
                    "behind): %s",
                    dropped,
                    ", ".join(sorted({t.session_id for t, _, _ in work})),
                )
            for tap in ending:
                try:
                    await self._store.logs.end_stream(tap.stream_id, self._clock())
                except StoreError as exc:
                    log.warning("session %s: cannot close its log stream: %s", tap.session_id, exc)
            return stored


def _process(work: list[tuple[StreamTap, list[_Fed], bool]], now: float) -> list[StreamBatch]:
    return [tap.process(batch, now, final=final) for tap, batch, final in work]
