"""Session recordings' rows: where each recording is, how far it got, whether it is uploaded."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update

from hatchway.store import schema as t
from hatchway.store.records import HISTORY_STATUSES
from hatchway.store.repositories import _Repository

__all__ = ["Recording", "RecordingRepository", "RecordingState", "Storage"]

#: Session statuses after which a session cannot run again (its recording is finished).
_ENDED = HISTORY_STATUSES
#: ``last_error`` is cut to this many characters.
MAX_ERROR = 512


class RecordingState(StrEnum):
    """A recording's life: written while the session runs, then (S3) waiting for its upload,
    then complete where ``location`` says."""

    RECORDING = "Recording"
    PENDING_UPLOAD = "PendingUpload"
    COMPLETE = "Complete"


class Storage(StrEnum):
    """Where a finished recording is kept."""

    LOCAL = "local"
    S3 = "s3"


@dataclass(frozen=True, slots=True)
class Recording:
    """One session's recording.

    Attributes:
        location: the finished recording: a local path, or ``s3://bucket/key``.
        spool_path: the local file it is written to (and uploaded from, for S3).
        size: bytes of the recording as stored (known once it is finished; 0 before).
        kms_key_arn, wrapped_key: an encrypted recording's KMS key and the data key it
            wraps (``auth.sealedrecording``); ``None`` for a plain one.
    """

    session_id: str
    storage: Storage
    location: str
    spool_path: str
    state: RecordingState
    size: int
    started_at: float
    ended_at: float | None = None
    upload_attempts: int = 0
    last_error: str = ""
    kms_key_arn: str | None = None
    wrapped_key: bytes | None = None


class RecordingRepository(_Repository):
    async def create(self, recording: Recording) -> None:
        values = {name: getattr(recording, name) for name in recording.__slots__}
        values["storage"] = recording.storage.value
        values["state"] = recording.state.value
        wrapped = recording.wrapped_key
        values["wrapped_key"] = None if wrapped is None else base64.b64encode(wrapped).decode()
        await self._write(insert(t.recordings).values(**values))

    async def get(self, session_id: str) -> Recording | None:
        rows = await self._fetch(
            select(t.recordings).where(t.recordings.c.session_id == session_id)
        )
        return _recording(rows[0]) if rows else None

    async def in_state(self, state: RecordingState, *, limit: int = 1000) -> list[Recording]:
        c = t.recordings.c
        rows = await self._fetch(
            select(t.recordings)
            .where(c.state == state.value)
            .order_by(c.started_at, c.session_id)
            .limit(limit)
        )
        return [_recording(r) for r in rows]

    async def finish(
        self, session_id: str, *, state: RecordingState, size: int, ended_at: float
    ) -> None:
        """The recording ended: its size, end time and next state."""
        await self._write(
            update(t.recordings)
            .where(t.recordings.c.session_id == session_id)
            .values(state=state.value, size=size, ended_at=ended_at)
        )

    async def move(self, session_id: str, *, spool_path: str, location: str) -> bool:
        """A recording still being made is spooled elsewhere from now on (scale-out: its
        session moved to another replica before anything was recorded)."""
        c = t.recordings.c
        count = await self._write(
            update(t.recordings)
            .where(c.session_id == session_id, c.state == RecordingState.RECORDING.value)
            .values(spool_path=spool_path, location=location)
        )
        return count == 1

    async def uploaded(self, session_id: str) -> None:
        await self._write(
            update(t.recordings)
            .where(t.recordings.c.session_id == session_id)
            .values(state=RecordingState.COMPLETE.value, last_error="")
        )

    async def upload_failed(self, session_id: str, error: str) -> None:
        c = t.recordings.c
        await self._write(
            update(t.recordings)
            .where(c.session_id == session_id)
            .values(upload_attempts=c.upload_attempts + 1, last_error=error[:MAX_ERROR])
        )

    async def expired(self, before: float, *, limit: int = 1000) -> list[Recording]:
        """Complete recordings of sessions that ended before ``before`` (the retention job's
        candidates), oldest first. A session still active is never among them, whatever its
        recording's row says."""
        c, s = t.recordings.c, t.sessions.c
        rows = await self._fetch(
            select(t.recordings)
            .join(t.sessions, s.session_id == c.session_id)
            .where(
                c.state == RecordingState.COMPLETE.value,
                c.ended_at.is_not(None),
                c.ended_at < before,
                s.end_date.is_not(None),
                s.status.in_(_ENDED),
            )
            .order_by(c.ended_at, c.session_id)
            .limit(limit)
        )
        return [_recording(r) for r in rows]

    async def delete(self, session_id: str) -> bool:
        """Remove a recording's row (its file or object is removed first by the caller)."""
        count = await self._write(
            delete(t.recordings).where(t.recordings.c.session_id == session_id)
        )
        return count > 0


def _recording(row: Any) -> Recording:
    m = dict(row._mapping)
    m["storage"] = Storage(m["storage"])
    m["state"] = RecordingState(m["state"])
    if m["wrapped_key"] is not None:
        m["wrapped_key"] = base64.b64decode(m["wrapped_key"])
    return Recording(**m)
