"""``hatchway up``: the one-command quickstart, as a new user on a fresh home directory."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.cluster import HATCHWAY, RUN_AS, reap


def _start_up(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HATCHWAY_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.Popen(
        [HATCHWAY, "up", "--listen", f"127.0.0.1:{port}", "--run-as-default", RUN_AS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen[bytes], pattern: bytes, timeout: float = 60) -> bytes:
    assert proc.stdout is not None
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not re.search(pattern, out):
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    assert re.search(pattern, out), out.decode(errors="replace")
    return out


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(20)
    finally:
        reap(proc)


def test_up_then_start_session_then_rerun_reuses_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    up = _start_up(home, 0)  # the kernel picks the port; `up` says which
    try:
        out = _read_until(up, rb"hatchway start-session --target (mi-[0-9a-f]{17})")
        node = re.search(rb"--target (mi-[0-9a-f]{17})", out).group(1).decode()  # type: ignore[union-attr]
        port = int(re.search(rb"server https://127\.0\.0\.1:(\d+),", out).group(1))  # type: ignore[union-attr]
        config = home / ".config" / "hatchway" / "config.toml"
        assert config.exists() and (config.stat().st_mode & 0o777) == 0o600
        env = {k: v for k, v in os.environ.items() if not k.startswith("HATCHWAY_")}
        env["HOME"] = str(home)
        result = subprocess.run(
            [HATCHWAY, "start-session", "--target", node],
            input=b"echo up-$((40+2))\nexit\n", capture_output=True, env=env, timeout=60,
        )  # fmt: skip
        assert b"up-42" in result.stdout and result.returncode == 0, result.stderr
        # a second `up` on the same port gets a clear error and changes nothing
        busy = _start_up(home, port)
        assert busy.wait(60) != 0
        assert busy.stdout is not None
        message = busy.stdout.read().decode()
        busy.stdout.close()
        assert "already in use" in message and "Traceback" not in message
    finally:
        assert _stop(up) == 0
    data = home / ".local" / "share" / "hatchway"
    assert (data / "server" / "hatchway.db").exists() and (data / "agent").is_dir()
    again = _start_up(home, port)
    try:
        out = _read_until(again, rb"--target (mi-[0-9a-f]{17})")
        assert node.encode() in out  # same registration, same server data
    finally:
        assert _stop(again) == 0
