"""The retention job with a settable clock over a real SQLite store and local recordings: what
is old goes (files and rows, log events), what is new or live stays, each run is reported to
the audit hook, and a recording that cannot be deleted is kept and tried again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import MappingProxyType

import pytest

from hatchway.audit.events import format_time
from hatchway.errors import Unavailable
from hatchway.server.audit import AuditEvents
from hatchway.server.authz import Arns
from hatchway.server.recordingstorage import Destination, RecordingStorages
from hatchway.server.retention import (
    DAY,
    DeletedRecording,
    RetentionJob,
    RetentionReport,
    audit_retention_run,
)
from hatchway.store.audit import AuditQuery
from hatchway.store.database import sqlite_url
from hatchway.store.logs import StreamBatch
from hatchway.store.recordings import Recording, RecordingState, Storage
from hatchway.store.records import SessionStatus
from hatchway.store.store import Store
from tests.fakes import session_record

NOW = 1_800_000_000.0
NODE = "mi-0123456789abcdef0"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FailingStorages(RecordingStorages):
    """Local storage whose deletes fail for the sessions named in ``broken``."""

    broken: set[str] = set()

    def delete(self, storage: Storage, location: str) -> None:
        if any(sid in location for sid in self.broken):
            raise Unavailable("cannot delete: the store is away")
        super().delete(storage, location)


async def _recorded(
    store: Store, root: Path, sid: str, ended: float, *, live: bool = False
) -> Path:
    status = SessionStatus.CONNECTED if live else SessionStatus.TERMINATED
    await store.sessions.create(session_record(sid, NODE, status=status), sid, 0.0)
    if not live:
        await store.sessions.set_status(sid, status, now=ended, only_if=None)
    path = root / f"{sid}.cast"
    path.write_text('{"version": 2}\n')
    await store.recordings.create(
        Recording(sid, Storage.LOCAL, str(path), str(path), RecordingState.COMPLETE, 15, 0.0, ended)
    )
    return path


def test_old_recordings_and_events_go_new_and_live_ones_stay(tmp_path: Path) -> None:
    reports: list[RetentionReport] = []

    async def audit(report: RetentionReport) -> None:
        reports.append(report)

    async def main() -> None:
        store = Store.open(sqlite_url(tmp_path / "h.db"))
        root = tmp_path / "recordings"
        root.mkdir()
        storages = FailingStorages(root, Destination(Storage.LOCAL))
        FailingStorages.broken = {"erin-"}
        try:
            old = await _recorded(store, root, "alice-0000000000000000a", NOW - 10 * DAY)
            new = await _recorded(store, root, "bob-0000000000000000b", NOW - 1 * DAY)
            live = await _recorded(store, root, "carol-0000000000000000c", NOW - 10 * DAY)
            broken = await _recorded(store, root, "erin-0000000000000000e", NOW - 10 * DAY)
            group = await store.logs.create_group("g", 0.0)
            stream = await store.logs.open_stream(group.group_id, "s", 0.0)
            await store.logs.append(
                [
                    StreamBatch(
                        stream.stream_id,
                        [(int((NOW - 6 * DAY) * 1000), "old\n"), (int(NOW * 1000), "new\n")],
                    )
                ],
                int(NOW * 1000),
            )
            clock = Clock(NOW)
            job = RetentionJob(
                store,
                storages,
                clock,
                recordings_days=5,
                logs_days=5,
                interval=3600,
                is_live=lambda sid: sid.startswith("carol-"),
                audit=audit,
            )
            report = await job.run_once()
            assert [r.session_id for r in report.recordings] == ["alice-0000000000000000a"]
            assert dict(report.log_events) == {"g": 1}
            assert report.failures == (
                "the recording of erin-0000000000000000e could not be deleted: "
                "cannot delete: the store is away",
            )
            assert not old.exists() and new.exists() and live.exists() and broken.exists()
            assert await store.recordings.get("alice-0000000000000000a") is None
            assert await store.recordings.get("erin-0000000000000000e") is not None
            page = await store.logs.events(stream_id=stream.stream_id, limit=9, max_bytes=99)
            assert [e.message for e in page.events] == ["new\n"]
            assert reports == [report]
            # Later: the store is back, bob's recording has aged too; nothing twice.
            FailingStorages.broken = set()
            clock.now += 5 * DAY + 1
            report = await job.run_once()
            assert sorted(r.session_id for r in report.recordings) == [
                "bob-0000000000000000b",
                "erin-0000000000000000e",
            ]
            assert not new.exists() and not broken.exists() and live.exists()
            assert dict(report.log_events) == {"g": 1}  # the "new" event has aged too
            # Nothing left to delete: nothing reported.
            clock.now += 1
            assert not (await job.run_once()).deleted_anything
            assert len(reports) == 2
        finally:
            await store.close()

    asyncio.run(main())


def test_without_ages_nothing_is_deleted_but_a_groups_own_policy(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store.open(sqlite_url(tmp_path / "h.db"))
        root = tmp_path / "r"
        root.mkdir()
        try:
            path = await _recorded(store, root, "alice-0000000000000000a", NOW - 1000 * DAY)
            for name, days in (("kept", None), ("short", 1)):
                g = await store.logs.create_group(name, 0.0)
                if days:
                    await store.logs.set_retention(name, days)
                s = await store.logs.open_stream(g.group_id, "s", 0.0)
                old_ms = int((NOW - 2 * DAY) * 1000)
                await store.logs.append([StreamBatch(s.stream_id, [(old_ms, "x\n")])], old_ms)
            job = RetentionJob(
                store,
                RecordingStorages(root, Destination(Storage.LOCAL)),
                Clock(NOW),
                recordings_days=None,
                logs_days=None,
                interval=1,
                is_live=lambda _: False,
            )
            report = await job.run_once()
            assert report.recordings == () and dict(report.log_events) == {"short": 1}
            assert path.exists()
        finally:
            await store.close()

    asyncio.run(main())


def test_each_run_is_one_audit_record_naming_what_was_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")

    async def main() -> None:
        store = Store.open(sqlite_url(tmp_path / "h.db"))
        try:
            report = RetentionReport(
                NOW,
                (DeletedRecording("alice-1", Storage.LOCAL, "/x/alice-1.cast", NOW - DAY),),
                MappingProxyType({"g": 3}),
                ("the recording of bob-2 could not be deleted: away",),
            )
            events = AuditEvents(Arns("local", "123456789012"), Clock(NOW))
            await audit_retention_run(store, events, report)
            (record,) = await store.audit.lookup(AuditQuery(), limit=10)
            event = record.event()
            assert event["eventCode"] == "HWT002" and event["eventName"] == "RetentionDeleted"
            assert event["additionalEventData"] == {
                "recordingsDeleted": [
                    {
                        "sessionId": "alice-1",
                        "storage": "local",
                        "location": "/x/alice-1.cast",
                        "sessionEnded": format_time(NOW - DAY),
                    }
                ],
                "logEventsDeleted": {"g": 3},
                "failures": ["the recording of bob-2 could not be deleted: away"],
            }
            assert [r["name"] for r in event["resources"]] == ["alice-1"]
            by_session = await store.audit.lookup(AuditQuery(resource_name="alice-1"), limit=5)
            assert [r.event_id for r in by_session] == [record.event_id]
        finally:
            await store.close()

    asyncio.run(main())
    assert "retention: deleted 1 recording(s) (alice-1) and 3 log event(s) (g: 3)" in caplog.text
    assert "the recording of bob-2 could not be deleted" in caplog.text


def test_old_audit_records_are_pruned_by_the_job_and_the_chain_verifies(tmp_path: Path) -> None:
    from hatchway.server.trail import AuditTrailService
    from tests.store.test_audit_contract import event

    async def main() -> None:
        store = Store.open(sqlite_url(tmp_path / "h.db"))
        try:
            clock = Clock(NOW)
            trail = AuditTrailService(store, AuditEvents(Arns("local", "1"), clock))
            await store.audit.append(
                *(event(f"E{i}", at=NOW - (10.5 - i) * DAY) for i in range(1, 6))
            )  # E1 … E5: 9.5 … 5.5 days old
            job = RetentionJob(
                store,
                RecordingStorages(tmp_path / "rec", Destination(Storage.LOCAL)),
                clock,
                recordings_days=None,
                logs_days=None,
                interval=3600,
                is_live=lambda _sid: False,
                audit_days=7,
                prune_audit=trail.prune,
            )
            report = await job.run_once()
            assert report.audit_records == 3  # E1, E2, E3 were older than 7 days
            names = [
                r.event()["eventName"] for r in await store.audit.lookup(AuditQuery(), limit=9)
            ]
            assert names == ["AuditTrailPruned", "E5", "E4"]
            verdict = await trail.verdict()
            assert verdict.intact, verdict.summary()
            assert (await job.run_once()).audit_records == 0  # nothing more that old
        finally:
            await store.close()

    asyncio.run(main())
