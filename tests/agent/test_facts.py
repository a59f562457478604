"""Heartbeat facts are collected off the event loop; what cannot change is read once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hatchway.agent import facts
from hatchway.agent.facts import NodeFacts


@pytest.mark.asyncio
async def test_facts_are_collected_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    threads: list[threading.Thread] = []
    reads: list[Path] = []
    real_read = facts._os_release

    def hostname() -> str:
        threads.append(threading.current_thread())
        return "node-\x1b[2J1"

    def counting_read(path: Path) -> dict[str, str]:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(facts.socket, "gethostname", hostname)
    monkeypatch.setattr(facts, "_os_release", counting_read)
    monkeypatch.setattr(facts, "_address_towards", lambda endpoint: "127.0.0.1")
    node = NodeFacts("https://127.0.0.1:8443", os_release=release)
    first = await node.heartbeat(["admin-2", "admin-1"])
    second = await node.heartbeat([])
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert reads == [release]  # the platform is read once
    assert first.platform_name == "Debian GNU/Linux" and first.platform_version == "12"
    assert first.hostname == "node-\ufffd[2J1"  # even our own facts are sent sanitised
    assert first.session_ids == ("admin-1", "admin-2") and second.active_sessions == 0
