"""Two real ``hatchway server`` processes started at once against an empty PostgreSQL
database, with one master key file they race to create: both serve, as one installation."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import urllib.request
from functools import partial
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.integration.cluster import HATCHWAY, LISTENING, wait_for
from tests.store.conftest import fresh_pg_database


def _port(log: Path, proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is not None:
        raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
    m = LISTENING.search(log.read_bytes())
    return int(m.group(2)) if m else None


def _healthy(port: int, data_dir: Path) -> bool:
    if not (data_dir / "admin-profile.toml").exists():
        return False
    context = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/healthz", context=context, timeout=2
        ) as r:
            return bool(json.load(r) == {"status": "ok"})
    except OSError:
        return False


def test_two_servers_started_at_once_on_an_empty_database_both_serve(tmp_path: Path) -> None:
    with fresh_pg_database() as async_url:
        url = make_url(async_url).set(drivername="postgresql")  # as an operator writes it
        key = tmp_path / "shared" / "master.key"
        dirs = [tmp_path / f"replica-{i}" for i in range(2)]
        logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for data_dir, log in zip(dirs, logs, strict=True):
                with open(log, "wb") as out:
                    args = [
                        HATCHWAY,
                        "server",
                        "--data-dir",
                        str(data_dir),
                        "--listen",
                        "127.0.0.1:0",
                        "--database-url",
                        url.render_as_string(hide_password=False),
                        "--master-key-file",
                        str(key),
                    ]
                    procs.append(subprocess.Popen(args, stdout=out, stderr=out))
            ports = [
                int(wait_for(partial(_port, log, proc), 60, what=f"{log.name} banner"))
                for log, proc in zip(logs, procs, strict=True)
            ]
            for port, data_dir in zip(ports, dirs, strict=True):
                wait_for(partial(_healthy, port, data_dir), 30, what=f"{data_dir.name} /healthz")
            for name in ("ca.pem", "server.pem", "server.key"):
                assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name
            arns = set()
            for data_dir in dirs:
                env = {**os.environ, "HATCHWAY_CONFIG": str(data_dir / "admin-profile.toml")}
                env.pop("HATCHWAY_PROFILE", None)
                result = subprocess.run(
                    [HATCHWAY, "iam", "get-user", "--output", "json"],
                    capture_output=True,
                    env=env,
                    timeout=60,
                    check=True,
                )
                arns.add(json.loads(result.stdout)["User"]["Arn"])
            assert len(arns) == 1, arns  # one account, one admin, whichever replica answers
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
