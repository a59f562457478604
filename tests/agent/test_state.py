"""The state directory's generation: every ``agent run`` takes the next one, atomically."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hatchway.agent.state import (
    GENERATION_FILE,
    LOCK_FILE,
    Generation,
    claim_generation,
    read_generation,
)
from hatchway.errors import ConfigError


def test_each_run_takes_the_next_generation(tmp_path: Path) -> None:
    assert read_generation(tmp_path) is None
    assert claim_generation(tmp_path) == Generation(1, os.getpid())
    assert claim_generation(tmp_path, pid=77) == Generation(2, 77)
    assert read_generation(tmp_path) == Generation(2, 77)
    assert (tmp_path / GENERATION_FILE).stat().st_mode & 0o077 == 0


def test_agents_starting_at_once_get_different_generations(tmp_path: Path) -> None:
    got: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def agent_runs() -> None:
        start.wait()
        for _ in range(5):
            number = claim_generation(tmp_path).number
            with lock:
                got.append(number)

    threads = [threading.Thread(target=agent_runs) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(1, 41))


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / LOCK_FILE).symlink_to(target)
    with pytest.raises(ConfigError):
        claim_generation(state)
    assert target.read_text() == "precious"


def test_a_damaged_generation_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / GENERATION_FILE).write_text("{nope")
    with pytest.raises(ConfigError, match="damaged"):
        read_generation(tmp_path)
