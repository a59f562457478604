"""``hatchway sessions get-recording`` and ``hatchway sessions play``: a session's recording.

Both page through ``Hatchway.GetSessionRecording`` (at most :data:`CHUNK` bytes a call), so a
recording of any size takes bounded memory. ``get-recording`` writes the exact bytes (a new
file is created ``0600``: a recording holds whatever the terminal showed); ``play`` replays the
``o`` events with their original timing, idle gaps capped like ``asciinema play -i``.

The CLI (``hatchway.cli``) loads this module only when one of these commands runs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.asciicast import EventCode, parse_event, parse_header

__all__ = ["CHUNK", "chunks", "download", "lines", "play"]

SERVICE: Final = "Hatchway"
#: Bytes asked for per call (the server's maximum).
CHUNK: Final = 1024 * 1024


def chunks(api: Any, session_id: str) -> Iterator[bytes]:
    """The recording's bytes, chunk by chunk, as GetSessionRecording pages them."""
    token: str | None = None
    while True:
        body: dict[str, Any] = {"SessionId": session_id, "MaxBytes": CHUNK}
        if token is not None:
            body["NextToken"] = token
        result = api.call("GetSessionRecording", body, service=SERVICE)
        try:
            data = base64.b64decode(str(result.get("Data", "")), validate=True)
        except binascii.Error as exc:
            raise RemoteProtocolError(
                "the server sent a recording chunk that is not base64"
            ) from exc
        if data:
            yield data
        token = result.get("NextToken")
        if not token or not data:
            return


def download(api: Any, session_id: str, output: str) -> int:
    """Write the recording to ``output`` (``-``: stdout); returns the bytes written.

    A file is written beside its final name and renamed once complete, so a failed download
    leaves no partial recording behind.
    """
    if output == "-":
        out = sys.stdout.buffer
        total = _copy(chunks(api, session_id), out)
        out.flush()
        return total
    path = Path(output)
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            total = _copy(chunks(api, session_id), f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return total


def _copy(source: Iterator[bytes], out: BinaryIO) -> int:
    total = 0
    for data in source:
        out.write(data)
        total += len(data)
    return total


def lines(source: Iterator[bytes]) -> Iterator[bytes]:
    """Whole lines out of chunks that may split them (a last unterminated line too)."""
    rest = b""
    for data in source:
        rest += data
        *whole, rest = rest.split(b"\n")
        yield from whole
    if rest:
        yield rest


def play(
    source: Iterator[bytes],
    out: BinaryIO,
    *,
    speed: float = 1.0,
    idle_limit: float | None = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Replay a recording's output to ``out`` with its timing: each ``o`` event waits for
    its time since the previous event, divided by ``speed`` and at most ``idle_limit``
    (``None``: no cap). Returns the number of events played.

    Raises:
        RemoteProtocolError: not an asciicast v2 recording.
    """
    it = lines(source)
    first = next(it, None)
    if first is None:
        raise RemoteProtocolError("the recording is empty")
    parse_header(first)
    played, last = 0, 0.0
    for line in it:
        if not line.strip():
            continue
        event = parse_event(line)
        if event.code != EventCode.OUTPUT:
            continue
        delay = max(0.0, event.time - last)
        last = max(last, event.time)
        if idle_limit is not None:
            delay = min(delay, idle_limit)
        if delay > 0:
            sleep(delay / speed)
        out.write(event.data.encode())
        out.flush()
        played += 1
    return played
