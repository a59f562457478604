"""Session recordings: which sessions are recorded, the flusher and uploader tasks, and
``Hatchway.GetSessionRecording``.

Shell (``Standard_Stream``) and interactive-command sessions are recorded by the gateway (the
node cannot touch the recording). :meth:`RecordingService.begin` makes a
:class:`~hatchway.server.recorder.SessionRecorder` and its row when the session starts; the
gateway feeds it; :meth:`RecordingService.finish` closes it when the session ends. One
background task flushes every live recording at least every :data:`FLUSH_INTERVAL` seconds
(earlier when one has buffered a lot); another uploads finished recordings bound for S3,
retrying with exponential back-off. A recording whose upload failed stays ``PendingUpload``
with its spool file, and is retried until it succeeds, also after a restart: never dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from hatchway.errors import HatchwayError, InvalidNextToken, NotFound, StoreError
from hatchway.protocol.handshake import SessionType
from hatchway.server.recorder import FLUSH_INTERVAL, SessionRecorder
from hatchway.server.recordingstorage import RecordingStorages
from hatchway.server.settings import ServerSettings
from hatchway.store.recordings import Recording, RecordingState, Storage
from hatchway.store.store import Store

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK", "MAX_CHUNK", "RECORDED_SESSION_TYPES", "RecordingService"]

#: Session types whose terminal is recorded.
RECORDED_SESSION_TYPES: Final = frozenset(
    {SessionType.STANDARD_STREAM.value, SessionType.INTERACTIVE_COMMANDS.value}
)
#: Bytes of a recording one GetSessionRecording answers with, by default and at most.
DEFAULT_CHUNK: Final = 512 * 1024
MAX_CHUNK: Final = 1024 * 1024
#: Upload retries: the first after this many seconds, doubling up to the maximum.
RETRY_INITIAL: Final = 2.0
RETRY_MAX: Final = 300.0

#: Attaches a recorder to the gateway's live session (``gateway.LiveSession.recorder``).
Attach = Callable[[str, SessionRecorder], bool]


class RecordingService:
    """Owns the live recorders and the finished recordings' uploads.

    Args:
        store: the ``recordings`` rows.
        settings: ``record_input``.
        clock: the wall clock (event times, row timestamps).
        storages: where recordings go and are read from.
        flush_interval, retry_initial, retry_max: timings (tests shorten them).
    """

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        storages: RecordingStorages,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self.storages = storages
        self._flush_interval = flush_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._live: dict[str, SessionRecorder] = {}
        self._wake_flusher = asyncio.Event()
        self._wake_uploader = asyncio.Event()
        #: Recordings waiting for their upload: session id → (attempts, next try, monotonic).
        self._uploads: dict[str, tuple[int, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher and the uploader (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flusher(), name="recordings-flusher"),
            loop.create_task(self._uploader(), name="recordings-uploader"),
        ]

    async def stop(self) -> None:
        """Server shutdown: stop the tasks, write out every live recording (they go on after
        the restart, with their sessions)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        recorders, self._live = list(self._live.values()), {}
        for recorder in recorders:
            try:
                await recorder.close(final=False)
            except OSError as exc:
                log.warning("session %s: cannot write its recording: %s", recorder.session_id, exc)

    async def restore(self, live_ids: set[str], attach: Attach) -> None:
        """At start: go on with the recordings of sessions that go on (``live_ids``), finish
        those whose session ended meanwhile, and queue the uploads still pending."""
        for row in await self._store.recordings.in_state(RecordingState.RECORDING, limit=100_000):
            recorder = await asyncio.to_thread(
                SessionRecorder.resume,
                row.session_id,
                Path(row.spool_path),
                clock=self._clock,
                record_input=self._settings.record_input,
                wake=self._wake_flusher.set,
            )
            if row.session_id in live_ids and attach(row.session_id, recorder):
                self._live[row.session_id] = recorder
                log.info("session %s: its recording goes on after the restart", row.session_id)
            else:
                self._live[row.session_id] = recorder
                await self.finish(row.session_id)
        for row in await self._store.recordings.in_state(
            RecordingState.PENDING_UPLOAD, limit=100_000
        ):
            self._queue_upload(row.session_id)

    # ---- sessions ---------------------------------------------------------------------------

    async def begin(self, session_id: str, session_type: str) -> SessionRecorder | None:
        """Start recording a new session, if its type is recorded. A failure to create the
        recording is logged and the session runs unrecorded (it is not refused)."""
        if session_type not in RECORDED_SESSION_TYPES:
            return None
        destination = self.storages.destination()
        spool = self.storages.spool_path(session_id)
        now = self._clock()
        try:
            recorder = await asyncio.to_thread(
                SessionRecorder.create,
                session_id,
                spool,
                clock=self._clock,
                record_input=self._settings.record_input,
                wake=self._wake_flusher.set,
            )
            await self._store.recordings.create(
                Recording(
                    session_id=session_id,
                    storage=destination.storage,
                    location=destination.location(session_id, spool),
                    spool_path=str(spool),
                    state=RecordingState.RECORDING,
                    size=0,
                    started_at=now,
                )
            )
        except (OSError, StoreError) as exc:
            log.error("session %s: cannot start its recording: %s", session_id, exc)
            return None
        self._live[session_id] = recorder
        return recorder

    async def finish(self, session_id: str) -> None:
        """The session ended: write the rest, mark the row, queue the upload. Idempotent."""
        recorder = self._live.pop(session_id, None)
        if recorder is None:
            return
        try:
            size = await recorder.close(final=True)
        except OSError as exc:
            log.error("session %s: cannot finish its recording: %s", session_id, exc)
            size = recorder.length
        row = await self._store.recordings.get(session_id)
        if row is None:
            return
        local = row.storage is Storage.LOCAL
        state = RecordingState.COMPLETE if local else RecordingState.PENDING_UPLOAD
        await self._store.recordings.finish(
            session_id, state=state, size=size, ended_at=self._clock()
        )
        if not local:
            self._queue_upload(session_id)

    def recorder(self, session_id: str) -> SessionRecorder | None:
        return self._live.get(session_id)

    async def summary(self, session_id: str) -> dict[str, Any] | None:
        """What ``sessions get`` shows of a session's recording (``None``: not recorded)."""
        row = await self._store.recordings.get(session_id)
        if row is None:
            return None
        live = self._live.get(session_id)
        out: dict[str, Any] = {
            "State": row.state.value,
            "Storage": row.storage.value,
            "Size": live.length if live is not None else row.size,
        }
        if row.storage is Storage.S3:
            out["Location"] = row.location
        return out

    # ---- the API ----------------------------------------------------------------------------

    async def get_recording(self, body: dict[str, Any]) -> dict[str, Any]:
        """``Hatchway.GetSessionRecording``: a chunk of the recording's exact bytes.

        ``NextToken`` (the byte offset, from the previous answer) and ``MaxBytes`` page
        through it, so neither side holds a whole recording in memory. A recording in
        progress is read up to its last whole line.

        Raises:
            NotFound: no such session, or it has no recording.
            InvalidNextToken: a token this server did not issue.
        """
        session_id: str = body["SessionId"]
        offset = _offset(body.get("NextToken"))
        limit = min(int(body.get("MaxBytes") or DEFAULT_CHUNK), MAX_CHUNK)
        row = await self._store.recordings.get(session_id)
        if row is None:
            if await self._store.sessions.get(session_id) is None:
                raise NotFound(f"Session {session_id} does not exist.")
            raise NotFound(f"Session {session_id} has no recording.")
        live = self._live.get(session_id)
        if live is not None:
            await live.flush()  # everything relayed so far, not only the last periodic flush
            size = live.length
            storage, location = Storage.LOCAL, row.spool_path
        elif row.state is RecordingState.COMPLETE:
            size, storage, location = row.size, row.storage, row.location
        else:  # pending upload, or being finished: the spool file has it all
            size, storage, location = row.size, Storage.LOCAL, row.spool_path
        length = max(0, min(limit, size - offset))
        data = b""
        if length:
            data = await asyncio.to_thread(self.storages.read, storage, location, offset, length)
        out: dict[str, Any] = {
            "SessionId": session_id,
            "Data": base64.b64encode(data).decode(),
            "Size": size,
            "State": row.state.value,
        }
        if offset + len(data) < size and data:
            out["NextToken"] = str(offset + len(data))
        return out

    # ---- background tasks -------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wake_flusher.wait()
            self._wake_flusher.clear()
            for recorder in list(self._live.values()):
                if not recorder.pending:
                    continue
                try:
                    await recorder.flush()
                except Exception as exc:  # a task boundary: one recording's trouble, logged
                    log.warning(
                        "session %s: cannot write its recording: %s", recorder.session_id, exc
                    )

    def _queue_upload(self, session_id: str) -> None:
        if session_id not in self._uploads:
            self._uploads[session_id] = (0, 0.0)
        self._wake_uploader.set()

    async def _uploader(self) -> None:
        while True:
            now = time.monotonic()
            due = [sid for sid, (_, at) in self._uploads.items() if at <= now]
            for session_id in due:
                try:
                    await self._upload(session_id)
                except Exception:  # a task boundary: log it, retry later, never stop
                    log.exception("session %s: recording upload failed", session_id)
                    attempts, _ = self._uploads.get(session_id, (0, 0.0))
                    self._uploads[session_id] = (attempts + 1, time.monotonic() + self._retry_max)
            waits = [at for _, at in self._uploads.values()]
            delay = max(0.0, min(waits) - time.monotonic()) if waits else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake_uploader.wait()
            self._wake_uploader.clear()

    async def _upload(self, session_id: str) -> None:
        attempts, _ = self._uploads[session_id]
        try:
            row = await self._store.recordings.get(session_id)
            if row is None or row.state is not RecordingState.PENDING_UPLOAD:
                self._uploads.pop(session_id, None)
                return
            spool = Path(row.spool_path)
            await asyncio.to_thread(self.storages.upload, spool, row.location)
            await self._store.recordings.uploaded(session_id)
        except NotFound as exc:
            # Nothing left to upload from: retrying cannot help. The row keeps the reason and
            # stays pending (a restart tries once more, should the file be put back).
            self._uploads.pop(session_id, None)
            log.error("session %s: recording cannot be uploaded: %s", session_id, exc.message)
            with contextlib.suppress(StoreError):
                await self._store.recordings.upload_failed(session_id, exc.message)
            return
        except HatchwayError as exc:
            attempts += 1
            delay = min(self._retry_max, self._retry_initial * 2 ** (attempts - 1))
            self._uploads[session_id] = (attempts, time.monotonic() + delay)
            log.warning(
                "session %s: recording upload failed (attempt %d, next in %.0f s): %s",
                session_id,
                attempts,
                delay,
                exc.message,
            )
            with contextlib.suppress(StoreError):
                await self._store.recordings.upload_failed(session_id, exc.message)
            return
        self._uploads.pop(session_id, None)
        await asyncio.to_thread(spool.unlink, missing_ok=True)
        log.info("session %s: recording uploaded to %s", session_id, row.location)


def _offset(token: object) -> int:
    if token is None or token == "":
        return 0
    if not isinstance(token, str) or not token.isdigit() or len(token) > 18:
        raise InvalidNextToken("The NextToken is not valid.")
    return int(token)
