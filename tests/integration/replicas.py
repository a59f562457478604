"""Several server replicas on PostgreSQL + NATS behind a real HAProxy, started as a user would.

``ReplicaSet`` is a :class:`~tests.integration.cluster.Cluster` whose endpoint is the load
balancer's: the CLI, agents and StreamUrls all go through HAProxy (TCP mode, TLS passed
through, round-robin, health-checked on ``/healthz``: the setup of docs/haproxy.cfg).

What it needs (``HATCHWAY_TEST_SCALEOUT``: unset/``auto`` skips with the reason when one is
missing, ``require`` (CI) fails, ``0`` skips): PostgreSQL at 127.0.0.1:5432 (a database of the
test's own, dropped afterwards), NATS at 127.0.0.1:4222 (a subject prefix of the test's own),
and ``haproxy``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.cluster import HATCHWAY, LISTENING, Cluster, wait_for

PG_ADMIN = os.environ.get("HATCHWAY_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")
NATS_URL = os.environ.get("HATCHWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")
MODES = ("auto", "require", "0")


def requirements() -> None:
    """Skip (or fail, under ``require``) unless PostgreSQL, NATS and haproxy are there."""
    mode = os.environ.get("HATCHWAY_TEST_SCALEOUT") or "auto"
    if mode not in MODES:
        pytest.fail(f"HATCHWAY_TEST_SCALEOUT={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "0":
        pytest.skip("scale-out tests disabled by HATCHWAY_TEST_SCALEOUT=0")
    problems = []
    if shutil.which("haproxy") is None:
        problems.append("haproxy is not installed (apt-get install haproxy)")
    for what, url in (("PostgreSQL", PG_ADMIN), ("NATS", NATS_URL)):
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            problems.append(f"no {what} at {host}:{port} ({exc.strerror or exc})")
    if problems:
        reason = "; ".join(problems)
        if mode == "require":
            pytest.fail(f"{reason} (HATCHWAY_TEST_SCALEOUT=require)", pytrace=False)
        pytest.skip(f"{reason}; set HATCHWAY_TEST_SCALEOUT=require to make this a failure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class ReplicaSet(Cluster):
    """N replicas behind HAProxy; ``close`` stops everything and drops the database."""

    count: int = 3
    nats_url: str = NATS_URL
    prefix: str = field(default_factory=lambda: f"hwtest{secrets.token_hex(4)}")
    database: str = field(default_factory=lambda: f"hatchway_scale_{secrets.token_hex(4)}")
    replicas: list[Replica] = field(default_factory=list)
    lb_port: int = 0
    haproxy: subprocess.Popen[bytes] | None = None
    grace: float = 120.0

    # ---- what Cluster's helpers use -----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.lb_port}"

    @property
    def profile(self) -> Path:
        return self.root / "config.toml"

    @property
    def ca_file(self) -> Path:
        return self.replicas[0].data_dir / "ca.pem"

    # ---- start and stop -----------------------------------------------------------------------

    def start(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self.lb_port = free_port()
        # Ports chosen up front: a replica's banner names the public URL (the balancer's).
        self.replicas = [
            Replica(f"r{i + 1}", self.root / f"r{i + 1}", free_port()) for i in range(self.count)
        ]
        self.start_replica(self.replicas[0])
        for replica in self.replicas[1:]:
            self.start_replica(replica)
        self._write_haproxy()
        self._write_profile()
        wait_for(lambda: self._lb_healthy(), 30, what="the load balancer")

    def start_replica(self, replica: Replica) -> None:
        """Start (or restart, on the same port) one replica and wait until it is healthy."""
        database_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.database
        args = [
            HATCHWAY,
            "server",
            "--database-url",
            database_url,
            "--nats-url",
            self.nats_url,
            "--cluster-prefix",
            self.prefix,
            "--master-key-file",
            str(self.root / "master.key"),
            "--listen",
            f"127.0.0.1:{replica.port}",
            "--public-url",
            self.endpoint,
            "--data-dir",
            str(replica.data_dir),
            "--disconnect-grace",
            str(self.grace),
        ]
        log_path = self.root / f"{replica.name}.log"
        with open(log_path, "ab") as log:
            start = log.tell()
            replica.proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env())
        self.procs.append(replica.proc)

        def banner() -> bool:
            if replica.proc is not None and replica.proc.poll() is not None:
                raise AssertionError(f"{replica.name} exited: " + log_path.read_text()[-3000:])
            with open(log_path, "rb") as f:
                f.seek(start)
                return LISTENING.search(f.read()) is not None

        wait_for(banner, 60, what=f"{replica.name}'s banner")
        wait_for(lambda: self.health(replica)[0] == 200, 30, what=f"{replica.name} healthy")

    def health(self, replica: Replica) -> tuple[int, dict]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{replica.port}/healthz"
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the connection (503 while unhealthy): closed, not leaked
                return exc.code, json.load(exc)
        except OSError:
            return 0, {}

    def kill(self, replica: Replica) -> None:
        """SIGKILL: no goodbye."""
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait(10)

    def terminate(self, replica: Replica) -> None:
        """SIGTERM: a drain (rolling restart)."""
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGTERM)
        replica.proc.wait(60)

    def _write_haproxy(self) -> None:
        servers = "\n".join(
            f"  server {r.name} 127.0.0.1:{r.port} check check-ssl verify none "
            "inter 300 fall 2 rise 2"
            for r in self.replicas
        )
        config = self.root / "haproxy.cfg"
        config.write_text(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n"
            "  timeout server 1h\n  retries 3\n  option redispatch\n"
            f"frontend fe\n  bind 127.0.0.1:{self.lb_port}\n  default_backend be\n"
            "backend be\n  balance roundrobin\n  option httpchk GET /healthz\n"
            f"{servers}\n"
        )
        with open(self.root / "haproxy.log", "ab") as log:
            self.haproxy = subprocess.Popen(
                ["haproxy", "-f", str(config), "-db"], stdout=log, stderr=log
            )
        self.procs.append(self.haproxy)

    def _write_profile(self) -> None:
        """The admin profile a replica wrote, pointed at the load balancer."""
        written = next(
            r.data_dir / "admin-profile.toml"
            for r in self.replicas
            if (r.data_dir / "admin-profile.toml").exists()
        )
        p = tomllib.loads(written.read_text())["profiles"]["default"]
        p["endpoint"] = self.endpoint
        lines = ["[profiles.default]", *(f'{k} = "{v}"' for k, v in p.items())]
        self.profile.write_text("\n".join(lines) + "\n")
        self.profile.chmod(0o600)

    def _lb_healthy(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(self.endpoint + "/healthz", context=ctx, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def replica_named(self, replica_id: str) -> Replica:
        """The replica whose DescribeCluster id is ``replica_id``."""
        for listed in self.api().call("DescribeCluster", {}, service="Hatchway")["Replicas"]:
            if listed["ReplicaId"] == replica_id:
                port = int(listed["Address"].rsplit(":", 1)[1])
                return next(r for r in self.replicas if r.port == port)
        raise AssertionError(f"no replica {replica_id} alive")

    def relay_of(self, session_id: str) -> Replica:
        sessions = self.api().call(
            "DescribeSessions",
            {"State": "Active", "Filters": [{"key": "SessionId", "value": session_id}]},
        )["Sessions"]
        assert sessions, f"session {session_id} is not active"
        return self.replica_named(sessions[0]["Relay"])

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def wait_healthy_everywhere(replicas: ReplicaSet, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for replica in replicas.replicas:
        wait_for(
            lambda r=replica: replicas.health(r)[0] == 200,
            max(deadline - time.monotonic(), 1),
            what=f"{replica.name} healthy",
        )
