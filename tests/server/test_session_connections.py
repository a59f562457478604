"""A port session's connections, as its agent reports them, kept with the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.protocol.controlchannel import ConnectionRecord, ConnectionReport
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.store.database import sqlite_url
from hatchway.store.store import Store
from tests.fakes import FakeClock, session_record

NODE = "mi-0123456789abcdef0"
OTHER = "mi-00000000000000000"


@pytest.mark.asyncio
async def test_reported_connections_show_in_describe_sessions_of_that_session(
    tmp_path: Path,
) -> None:
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    try:
        service = SessionService(store, ServerSettings(tmp_path), FakeClock(), None)  # type: ignore[arg-type]
        await store.sessions.create(session_record("admin-pf", NODE), "t", 1.0)
        record = ConnectionRecord.create(
            destination="db.internal:5432", opened=10.0, closed=12.5, bytes_in=100, bytes_out=7
        )
        failed = ConnectionRecord.create(
            destination="db.internal:5433", opened=13.0, closed=13.0, bytes_in=0, bytes_out=0,
            error="connection refused",
        )  # fmt: skip
        await service.connections_reported(NODE, ConnectionReport.create("admin-pf", [record]))
        await service.connections_reported(NODE, ConnectionReport.create("admin-pf", [failed]))
        # Another node cannot write into this session's record.
        await service.connections_reported(OTHER, ConnectionReport.create("admin-pf", [record]))
        await service.connections_reported(NODE, ConnectionReport.create("admin-none", [record]))

        one = await service.describe(
            {"State": "Active", "Filters": [{"key": "SessionId", "value": "admin-pf"}]}
        )
        (session,) = one["Sessions"]
        assert session["Connections"] == [
            {"Destination": "db.internal:5432", "OpenedDate": 10.0, "ClosedDate": 12.5,
             "BytesIn": 100, "BytesOut": 7},
            {"Destination": "db.internal:5433", "OpenedDate": 13.0, "ClosedDate": 13.0,
             "BytesIn": 0, "BytesOut": 0, "Error": "connection refused"},
        ]  # fmt: skip
        listing = await service.describe({"State": "Active"})
        assert "Connections" not in listing["Sessions"][0]  # only for one session asked for
    finally:
        await store.close()
