"""``sessions play`` and ``get-recording`` without a server: paging, timing, partial files."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest

from hatchway.client.recordings_cli import chunks, download, lines, play
from hatchway.errors import HatchwayError, RemoteProtocolError

CAST = (
    b'{"version": 2, "width": 80, "height": 24, "timestamp": 1700000000}\n'
    b'[0.5, "o", "a"]\n'
    b'[0.7, "i", "typed"]\n'
    b'[10.5, "o", "b"]\n'
    b'[11.0, "r", "100x30"]\n'
    b'[11.5, "o", "\\u00e9"]\n'
)


class PagingApi:
    """GetSessionRecording over ``data``, ``page`` bytes a call; fails at call ``fail_at``."""

    def __init__(self, data: bytes, page: int, fail_at: int | None = None) -> None:
        self.data, self.page, self.fail_at, self.calls = data, page, fail_at, 0

    def call(self, operation: str, body: dict[str, Any], *, service: str) -> dict[str, Any]:
        assert (operation, service) == ("GetSessionRecording", "Hatchway")
        self.calls += 1
        if self.calls == self.fail_at:
            raise HatchwayError("the server went away")
        offset = int(body.get("NextToken", 0))
        chunk = self.data[offset : offset + self.page]
        out: dict[str, Any] = {"Data": base64.b64encode(chunk).decode()}
        if offset + len(chunk) < len(self.data):
            out["NextToken"] = str(offset + len(chunk))
        return out


def test_chunks_page_through_the_whole_recording() -> None:
    api = PagingApi(CAST, 7)
    assert b"".join(chunks(api, "s")) == CAST
    assert api.calls == -(-len(CAST) // 7)


def test_lines_are_whole_across_chunk_boundaries() -> None:
    pieces = [CAST[i : i + 5] for i in range(0, len(CAST), 5)]
    assert list(lines(iter(pieces))) == CAST.splitlines()
    assert list(lines(iter([b"a\nb"]))) == [b"a", b"b"]


def test_play_keeps_the_timing_caps_idle_and_scales_by_speed() -> None:
    slept: list[float] = []
    out = io.BytesIO()
    played = play(iter([CAST]), out, speed=2.0, idle_limit=3.0, sleep=slept.append)
    assert out.getvalue() == "abé".encode()  # input and resize events are not shown
    assert played == 3
    assert slept == pytest.approx([0.25, 1.5, 0.5])  # 0.5/2, min(10, 3)/2, 1.0/2


def test_play_without_an_idle_limit() -> None:
    slept: list[float] = []
    play(iter([CAST]), io.BytesIO(), idle_limit=None, sleep=slept.append)
    assert slept == pytest.approx([0.5, 10.0, 1.0])


@pytest.mark.parametrize("data", [b"", b"not json\n", b'{"version": 1}\n'])
def test_play_refuses_what_is_not_a_recording(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        play(iter([data]), io.BytesIO(), sleep=lambda _: None)


def test_download_writes_the_exact_bytes_privately(tmp_path: Path) -> None:
    target = tmp_path / "s.cast"
    assert download(PagingApi(CAST, 10), "s", str(target)) == len(CAST)
    assert target.read_bytes() == CAST
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failed_download_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "s.cast"
    with pytest.raises(HatchwayError):
        download(PagingApi(CAST, 10, fail_at=3), "s", str(target))
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_that_is_not_base64_is_refused() -> None:
    class Bad:
        def call(self, *_: Any, **__: Any) -> dict[str, Any]:
            return {"Data": "!!!"}

    with pytest.raises(RemoteProtocolError):
        list(chunks(Bad(), "s"))
