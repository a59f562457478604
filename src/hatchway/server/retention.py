"""The retention job: recordings and log events past their age are deleted, and each run is
reported to the audit trail.

Every ``--retention-interval`` seconds (and once soon after start) the job

* deletes the recordings of sessions that ended more than ``--recordings-retention-days`` ago:
  first the file or S3 object (``recordingstorage``), then the row. Only complete recordings of
  sessions that have ended are candidates (``RecordingRepository.expired``), and a session
  this server still relays is skipped whatever the database says: a live session's recording
  is never deleted. A file or object that cannot be deleted keeps its row and is tried again
  at the next run;
* deletes log events older than their group's retention (PutRetentionPolicy), else than
  ``--logs-retention-days``, and the ended streams left empty (``LogRepository.expire``).

What a run deleted (or failed to) is recorded in the audit trail by
:func:`audit_retention_run`: one ``HWT002`` ``RetentionDeleted`` record per run, naming every
recording and the log events deleted per group; and in the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from hatchway.audit.events import format_time
from hatchway.errors import HatchwayError
from hatchway.server.audit import AuditEvents
from hatchway.server.recordingstorage import RecordingStorages
from hatchway.store.recordings import Storage
from hatchway.store.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "DeletedRecording",
    "RetentionAudit",
    "RetentionJob",
    "RetentionReport",
    "audit_retention_run",
    "log_retention_run",
]

DAY: Final = 86_400.0
#: Recordings looked at per query.
BATCH: Final = 200
#: Seconds after start before the first run (the server is busy starting before that).
FIRST_RUN_DELAY: Final = 5.0


@dataclass(frozen=True, slots=True)
class DeletedRecording:
    session_id: str
    storage: Storage
    location: str
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one run of the job deleted (and what it could not).

    Attributes:
        time: when the run started (wall clock).
        recordings: the recordings deleted.
        log_events: events deleted per log group name.
        failures: one line per recording that could not be deleted (tried again next run).
        audit_records: audit records deleted (the trail records that itself, in the same
            transaction: an ``AuditTrailPruned`` record, so no ``RetentionDeleted`` for them).
    """

    time: float
    recordings: tuple[DeletedRecording, ...] = ()
    log_events: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    failures: tuple[str, ...] = ()
    audit_records: int = 0

    @property
    def deleted_anything(self) -> bool:
        return bool(self.recordings or self.log_events)


#: Receives each run's report (the audit trail's entry point for retention).
RetentionAudit = Callable[[RetentionReport], Awaitable[None]]


def log_retention_run(report: RetentionReport) -> None:
    """The operator's log lines of one run."""
    if report.deleted_anything:
        log.info(
            "retention: deleted %d recording(s)%s and %d log event(s)%s",
            len(report.recordings),
            f" ({', '.join(r.session_id for r in report.recordings[:20])})"
            if report.recordings
            else "",
            sum(report.log_events.values()),
            f" ({', '.join(f'{g}: {n}' for g, n in sorted(report.log_events.items()))})"
            if report.log_events
            else "",
        )
    for failure in report.failures:
        log.warning("retention: %s", failure)


async def audit_retention_run(store: Store, events: AuditEvents, report: RetentionReport) -> None:
    """Record what one retention run deleted in the audit trail (``HWT002``
    ``RetentionDeleted``: every recording's session and location, the log events deleted per
    group, and what could not be deleted) and in the server log.

    Called once per run that deleted something or failed to; the composition root binds
    ``store`` and ``events`` (``functools.partial``).
    """
    log_retention_run(report)
    recordings = [
        {
            "sessionId": r.session_id,
            "storage": r.storage.value,
            "location": r.location,
            **({"sessionEnded": format_time(r.ended_at)} if r.ended_at is not None else {}),
        }
        for r in report.recordings
    ]
    await store.audit.append(
        events.retention_deleted(recordings, report.log_events, report.failures)
    )


async def _log_only(report: RetentionReport) -> None:
    log_retention_run(report)


class RetentionJob:
    """Runs retention periodically (see the module docstring).

    Args:
        recordings_days: age in days past which recordings go (``None``: kept).
        logs_days: default age for log events (``None``: only groups' own policies apply).
        audit_days: age in days past which audit records go (``None``: kept), through
            ``prune_audit`` (the trail's ``prune``, which keeps the chain verifiable).
        interval: seconds between runs.
        is_live: whether this server relays the session now (never delete its recording).
        audit: receives each run's report (the server binds :func:`audit_retention_run`).
    """

    def __init__(
        self,
        store: Store,
        storages: RecordingStorages,
        clock: Callable[[], float],
        *,
        recordings_days: int | None,
        logs_days: int | None,
        interval: float,
        audit_days: int | None = None,
        prune_audit: Callable[[float], Awaitable[int]] | None = None,
        is_live: Callable[[str], bool],
        audit: RetentionAudit = _log_only,
        first_run_delay: float = FIRST_RUN_DELAY,
    ) -> None:
        self._store = store
        self._storages = storages
        self._clock = clock
        self._recordings_days = recordings_days
        self._logs_days = logs_days
        self._audit_days = audit_days
        self._prune_audit = prune_audit
        self._interval = interval
        self._is_live = is_live
        self._audit = audit
        self._first_run_delay = first_run_delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(min(self._first_run_delay, self._interval))
        while True:
            try:
                await self.run_once()
            except Exception:  # a task boundary: log it, try again next interval
                log.exception("the retention job failed")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> RetentionReport:
        """One run: delete what is past its age, report it to the audit hook."""
        now = self._clock()
        recordings, failures = await self._recordings(now)
        try:
            events = await self._store.logs.expire(default_days=self._logs_days, now=now)
        except HatchwayError as exc:
            failures.append(f"log events could not be deleted: {exc.message}")
            events = {}
        pruned = 0
        if self._audit_days is not None and self._prune_audit is not None:
            try:
                pruned = await self._prune_audit(now - self._audit_days * DAY)
            except HatchwayError as exc:
                failures.append(f"audit records could not be deleted: {exc.message}")
            if pruned:
                log.info("retention: deleted %d audit record(s)", pruned)
        report = RetentionReport(
            now, tuple(recordings), MappingProxyType(dict(events)), tuple(failures), pruned
        )
        if report.deleted_anything or report.failures:
            await self._audit(report)
        return report

    async def _recordings(self, now: float) -> tuple[list[DeletedRecording], list[str]]:
        deleted: list[DeletedRecording] = []
        failures: list[str] = []
        if self._recordings_days is None:
            return deleted, failures
        cutoff = now - self._recordings_days * DAY
        skipped: set[str] = set()
        while True:
            rows = await self._store.recordings.expired(cutoff, limit=BATCH + len(skipped))
            rows = [r for r in rows if r.session_id not in skipped]
            if not rows:
                break
            for row in rows:
                if self._is_live(row.session_id):
                    skipped.add(row.session_id)
                    continue
                try:
                    await asyncio.to_thread(self._storages.delete, row.storage, row.location)
                    await self._store.recordings.delete(row.session_id)
                except HatchwayError as exc:
                    skipped.add(row.session_id)
                    failures.append(
                        f"the recording of {row.session_id} could not be deleted: {exc.message}"
                    )
                    continue
                deleted.append(
                    DeletedRecording(row.session_id, row.storage, row.location, row.ended_at)
                )
            if len(rows) < BATCH:
                break
        return deleted, failures
