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

With a KMS key for recordings (``--recordings-kms-key``; ``server.recordingkeys``) each
recording is encrypted at rest with a data key of its own (``auth.sealedrecording``); reading
it decrypts on the server, for callers also allowed ``kms:Decrypt`` on the key, and pages by
whole chunks with authenticated tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final

from hatchway.auth.sealedrecording import MAX_HEADER, MAX_PLAINTEXT, ChunkOpener, parse_header
from hatchway.errors import (
    AccessDenied,
    Conflict,
    HatchwayError,
    InvalidCiphertext,
    InvalidNextToken,
    NotFound,
    StoreError,
)
from hatchway.protocol.handshake import SessionType
from hatchway.server.principal import Principal
from hatchway.server.recorder import FLUSH_INTERVAL, Sealing, SessionRecorder
from hatchway.server.recordingkeys import RecordingKeys, page_token, read_page_token
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
#: Recordings resumed at once when sessions are taken in (each reads its spool in a thread).
_RESUME_AT_ONCE: Final = 8
#: Up to this many sessions taken over, their recordings are looked up one by one.
_FEW: Final = 16

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
        keys: data keys of encrypted recordings (``None``: recordings are not encrypted).
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
        keys: RecordingKeys | None = None,
    ) -> None:
        self._store = store
        self.keys = keys
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

    async def restore(
        self, live_ids: set[str], attach: Attach, *, only: Collection[str] | None = None
    ) -> None:
        """At start: go on with the recordings of sessions that go on (``live_ids``), finish
        those whose session ended meanwhile, and queue the uploads still pending.

        ``only``: scale-out: just these sessions' recordings (sessions this replica took over;
        their spool files must be readable here: a shared or the same file system), and no
        uploads but those spooled in this replica's own directory.
        """
        if only is not None and len(only) <= _FEW:
            rows = []
            for session_id in only:
                row = await self._store.recordings.get(session_id)
                if row is not None and row.state is RecordingState.RECORDING:
                    rows.append(row)
        else:
            rows = [
                row
                for row in await self._store.recordings.in_state(
                    RecordingState.RECORDING, limit=100_000
                )
                if only is None or row.session_id in only
            ]
        # A few at once (each reads its spool's tail in a thread): a hundred sessions taken
        # over wait for their recordings before their ends may join.
        for start in range(0, len(rows), _RESUME_AT_ONCE):
            async with asyncio.TaskGroup() as tg:
                for row in rows[start : start + _RESUME_AT_ONCE]:
                    tg.create_task(self._resume(row, live_ids, attach, taken_over=only is not None))
        for row in await self._store.recordings.in_state(
            RecordingState.PENDING_UPLOAD, limit=100_000
        ):
            if only is not None and not Path(row.spool_path).is_relative_to(
                self._settings.recordings_dir
            ):
                continue  # another replica's upload
            self._queue_upload(row.session_id)

    async def _resume(
        self, row: Recording, live_ids: set[str], attach: Attach, *, taken_over: bool
    ) -> None:
        """Go on with one recording (see :meth:`restore`)."""
        if taken_over and not Path(row.spool_path).exists():
            log.warning(
                "session %s: its recording's spool %s is not readable here; the "
                "recording ends where its previous server left it",
                row.session_id,
                row.spool_path,
            )
            return
        sealing = None
        if row.wrapped_key is not None:
            sealing = await self._sealing_of(row)
            if sealing is None:
                return
        try:
            recorder = await self._recorder(
                SessionRecorder.resume, row.session_id, Path(row.spool_path), sealing
            )
        except OSError as exc:
            log.error("session %s: cannot go on with its recording: %s", row.session_id, exc)
            return
        self._live[row.session_id] = recorder
        if row.session_id in live_ids and attach(row.session_id, recorder):
            log.info("session %s: its recording goes on after the restart", row.session_id)
        else:
            await self.finish(row.session_id)

    async def _recorder(
        self,
        opening: Callable[..., SessionRecorder],
        session_id: str,
        spool: Path,
        sealing: Sealing | None,
    ) -> SessionRecorder:
        """``SessionRecorder.create`` or ``.resume`` with this service's settings, in a
        worker thread (it touches the spool file)."""
        return await asyncio.to_thread(
            opening,
            session_id,
            spool,
            clock=self._clock,
            record_input=self._settings.record_input,
            wake=self._wake_flusher.set,
            sealing=sealing,
        )

    async def _sealing_of(self, row: Recording) -> Sealing | None:
        """An encrypted recording's sealing at start; ``None`` (logged, and the recording is
        finished as it is on disk) when its key cannot be used now."""
        try:
            if self.keys is None:
                raise NotFound("no key service")
            return await self.keys.sealing_of(row)
        except HatchwayError as exc:
            log.error(
                "session %s: its encrypted recording cannot go on (%s); it ends here",
                row.session_id,
                exc.message,
            )
            size = await asyncio.to_thread(_file_size, Path(row.spool_path))
            local = row.storage is Storage.LOCAL
            state = RecordingState.COMPLETE if local else RecordingState.PENDING_UPLOAD
            await self._store.recordings.finish(
                row.session_id, state=state, size=size, ended_at=self._clock()
            )
            if not local:
                self._queue_upload(row.session_id)
            return None

    # ---- sessions ---------------------------------------------------------------------------

    async def begin(
        self,
        session_id: str,
        session_type: str,
        *,
        kms_key: str | None = None,
        s3_bucket: str = "",
        s3_prefix: str = "",
    ) -> SessionRecorder | None:
        """Start recording a new session, if its type is recorded: encrypted with ``kms_key``
        (a session's preference) or else the server's recordings key, if there is one; uploaded
        to ``s3_bucket``/``s3_prefix`` (the session's preferences) or else where the server's
        ``--recordings`` says.

        A failure to create the recording (the KMS key disabled or gone included) is logged
        and the session runs unrecorded (it is not refused)."""
        if session_type not in RECORDED_SESSION_TYPES:
            return None
        destination = self.storages.destination(s3_bucket=s3_bucket, s3_prefix=s3_prefix)
        spool = self.storages.spool_path(session_id)
        now = self._clock()
        sealing: Sealing | None = None
        key_ref = self.keys.key_for(preference=kms_key) if self.keys is not None else None
        try:
            if key_ref is not None:
                assert self.keys is not None
                sealing = await self.keys.seal_for(session_id, key_ref)
            recorder = await self._recorder(SessionRecorder.create, session_id, spool, sealing)
            await self._store.recordings.create(
                Recording(
                    session_id=session_id,
                    storage=destination.storage,
                    location=destination.location(session_id, spool),
                    spool_path=str(spool),
                    state=RecordingState.RECORDING,
                    size=0,
                    started_at=now,
                    kms_key_arn=sealing.header.key_arn if sealing is not None else None,
                    wrapped_key=sealing.header.wrapped_key if sealing is not None else None,
                )
            )
        except (OSError, HatchwayError) as exc:
            reason = exc.message if isinstance(exc, HatchwayError) else str(exc)
            log.error("session %s: cannot start its recording: %s", session_id, reason)
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

    async def let_go(self, session_id: str) -> None:
        """Scale-out: the session moved to another replica before anything was recorded; that
        replica records it from the start (:meth:`take`). This one's empty spool goes."""
        recorder = self._live.pop(session_id, None)
        if recorder is None:
            return
        try:
            await recorder.close(final=False)
            await asyncio.to_thread(_discard_spool, recorder.path)
        except OSError as exc:
            log.warning("session %s: cannot remove its empty spool: %s", session_id, exc)

    async def take(self, session_id: str, attach: Attach) -> bool:
        """Scale-out: record a session that moved here before anything was recorded, from its
        recording's row (same destination, same key), spooled here. False: it has none."""
        row = await self._store.recordings.get(session_id)
        if row is None or row.state is not RecordingState.RECORDING:
            return False
        sealing = None
        if row.wrapped_key is not None:
            sealing = await self._sealing_of(row)
            if sealing is None:
                return False
        spool = self.storages.spool_path(session_id)
        try:
            recorder = await self._recorder(SessionRecorder.create, session_id, spool, sealing)
            location = str(spool) if row.storage is Storage.LOCAL else row.location
            if not await self._store.recordings.move(
                session_id, spool_path=str(spool), location=location
            ):
                await recorder.close(final=False)
                return False
        except (OSError, HatchwayError) as exc:
            reason = exc.message if isinstance(exc, HatchwayError) else str(exc)
            log.error("session %s: cannot record it here: %s", session_id, reason)
            return False
        self._live[session_id] = recorder
        return attach(session_id, recorder)

    def recorder(self, session_id: str) -> SessionRecorder | None:
        return self._live.get(session_id)

    async def receive_sealed(
        self, node_id: str, session_id: str, offset: int, data: bytes, *, final: bool
    ) -> int:
        """A part of the recording a node made of one of its end-to-end encrypted sessions
        (``agent.recording``): sealed under a data key the server cannot open, stored as it
        is. Parts come in order (``offset`` is where this one starts; a part already received
        is taken again without harm, offset 0 starts over); the last one (``final``) makes the
        recording ``Complete`` (or ``PendingUpload`` for S3). Returns the bytes received.

        Raises:
            AccessDenied: not a session of this node, or not encrypted end to end.
            Conflict: a part out of order, or the session has its recording already.
            InvalidCiphertext: the first part does not start with this session's header
                (its session, its key, the recording context).
        """
        session = await self._store.sessions.get(session_id)
        if session is None or session.target != node_id:
            raise AccessDenied(f"Node {node_id} has no session {session_id} to record.")
        key_arn = (session.preferences or {}).get("KmsKeyId")
        if not key_arn:
            raise AccessDenied(
                f"Session {session_id} is not encrypted end to end: the server records it."
            )
        row = await self._store.recordings.get(session_id)
        if row is not None:
            if offset + len(data) <= row.size:
                return row.size  # the answer to the last part was lost: it is here
            raise Conflict(f"Session {session_id} has its recording already.")
        spool = self.storages.spool_path(session_id)
        part = spool.with_name(spool.name + ".part")
        size = await asyncio.to_thread(_append_part, part, offset, data)
        head = await asyncio.to_thread(_head, part)
        try:
            header, _ = parse_header(head)
        except InvalidCiphertext:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        expected = {"aws:ssm:SessionId": session_id}
        if (header.session_id, header.key_arn, dict(header.context)) != (
            session_id,
            key_arn,
            expected,
        ):
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise InvalidCiphertext(
                f"The recording sent for {session_id} is not sealed for it under {key_arn}."
            )
        if not final:
            return size
        await asyncio.to_thread(part.replace, spool)
        destination = self.storages.destination()
        local = destination.storage is Storage.LOCAL
        now = self._clock()
        await self._store.recordings.create(
            Recording(
                session_id=session_id,
                storage=destination.storage,
                location=destination.location(session_id, spool),
                spool_path=str(spool),
                state=RecordingState.COMPLETE if local else RecordingState.PENDING_UPLOAD,
                size=size,
                started_at=session.start_date,
                ended_at=now,
                kms_key_arn=str(key_arn),
                wrapped_key=header.wrapped_key,
            )
        )
        if not local:
            self._queue_upload(session_id)
        log.info("session %s: its sealed recording (%d bytes) came from its node", session_id, size)
        return size

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
        if row.kms_key_arn is not None:
            out["KmsKeyId"] = row.kms_key_arn
        return out

    # ---- the API ----------------------------------------------------------------------------

    async def get_recording(
        self, body: dict[str, Any], principal: Principal | None = None
    ) -> dict[str, Any]:
        """``Hatchway.GetSessionRecording``: a chunk of the recording's exact bytes.

        ``NextToken`` (the byte offset, from the previous answer) and ``MaxBytes`` page
        through it, so neither side holds a whole recording in memory. A recording in
        progress is read up to its last whole line. An encrypted recording is decrypted
        here for a ``principal`` allowed ``kms:Decrypt`` on its key (``KmsKeyId`` in the
        answer; ``Size`` is then the stored, encrypted size).

        Raises:
            NotFound: no such session, or it has no recording.
            InvalidNextToken: a token this server did not issue.
            AccessDenied: an encrypted recording, and no ``kms:Decrypt`` on its key.
            KeyDisabled, KeyInvalidState, KeyNotFound: its key cannot be used.
            InvalidCiphertext: the encrypted recording was altered or cut short.
        """
        session_id: str = body["SessionId"]
        limit = min(int(body.get("MaxBytes") or DEFAULT_CHUNK), MAX_CHUNK)
        row = await self._store.recordings.get(session_id)
        if row is not None and row.wrapped_key is not None:
            return await self._get_sealed(row, body, limit, principal)
        offset = _offset(body.get("NextToken"))
        if row is None:
            if await self._store.sessions.get(session_id) is None:
                raise NotFound(f"Session {session_id} does not exist.")
            raise NotFound(f"Session {session_id} has no recording.")
        size, storage, location, _ = await self._where(row)
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

    async def _where(self, row: Recording) -> tuple[int, Storage, str, bool]:
        """(size, storage, location, finished) of the recording as it can be read now."""
        live = self._live.get(row.session_id)
        if live is not None:
            await live.flush()  # everything relayed so far, not only the last periodic flush
            return live.length, Storage.LOCAL, row.spool_path, False
        finished = row.state is not RecordingState.RECORDING
        if row.state is RecordingState.COMPLETE:
            return row.size, row.storage, row.location, finished
        # pending upload, or being finished: the spool file has it all
        return row.size, Storage.LOCAL, row.spool_path, finished

    async def _get_sealed(
        self, row: Recording, body: dict[str, Any], limit: int, principal: Principal | None
    ) -> dict[str, Any]:
        """A page of an encrypted recording, decrypted: whole chunks from the token's."""
        if self.keys is None:
            raise NotFound(
                f"Session {row.session_id} has an encrypted recording and no key service."
            )
        data_key = await self.keys.open_for(principal, row)
        size, storage, location, finished = await self._where(row)
        head = await asyncio.to_thread(
            self.storages.read, storage, location, 0, min(size, MAX_HEADER)
        )
        _, line = parse_header(head)
        token = body.get("NextToken")
        offset, index = (len(line), 0)
        if token:
            offset, index = read_page_token(data_key, row.session_id, str(token))
        window = max(0, min(size - offset, limit + 2 * (MAX_PLAINTEXT + 64)))
        data = b""
        if window:
            data = await asyncio.to_thread(self.storages.read, storage, location, offset, window)
        opened = ChunkOpener(data_key, line, index).open(data, limit=limit)
        end = offset + opened.consumed
        if window and not opened.chunks:
            raise InvalidCiphertext(
                f"The recording of session {row.session_id} is cut short inside a chunk."
            )
        if finished and end >= size and not opened.final:
            raise InvalidCiphertext(
                f"The recording of session {row.session_id} is cut short: its final chunk "
                "is missing."
            )
        out: dict[str, Any] = {
            "SessionId": row.session_id,
            "Data": base64.b64encode(opened.plaintext).decode(),
            "Size": size,
            "State": row.state.value,
            "KmsKeyId": row.kms_key_arn,
        }
        if end < size:
            out["NextToken"] = page_token(data_key, row.session_id, end, index + opened.chunks)
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


def _append_part(path: Path, offset: int, data: bytes) -> int:
    """Append a part of a node's recording at ``offset``; the bytes held after it."""
    size = _file_size(path)
    if offset == 0 and size:  # the node starts over
        path.unlink()
        size = 0
    if offset + len(data) <= size:
        return size
    if offset != size:
        raise Conflict(f"The recording continues at byte {size}, not {offset}.")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(data)
    return size + len(data)


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(MAX_HEADER)


def _discard_spool(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".state").unlink(missing_ok=True)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _offset(token: object) -> int:
    if token is None or token == "":
        return 0
    if not isinstance(token, str) or not token.isdigit() or len(token) > 18:
        raise InvalidNextToken("The NextToken is not valid.")
    return int(token)
