"""A local S3-compatible server process (moto's server mode) for the recordings' S3 tests.

A real HTTP server on a loopback port, spoken to by boto3 exactly as a real store would be:
never a mock of boto3. It can be stopped and started again on the same port (its buckets are
in memory, so a restart starts empty), which is how the tests make uploads fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.cluster import closed_port, wait_for

BIN = Path(sys.executable).parent
MOTO_SERVER = str(BIN / "moto_server") if (BIN / "moto_server").exists() else "moto_server"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


@dataclass
class S3Server:
    """``moto_server`` on 127.0.0.1; ``start``/``stop`` keep the port."""

    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.port == 0:
            with closed_port() as port:
                self.port = port
        assert shutil.which(MOTO_SERVER) or Path(MOTO_SERVER).exists(), "moto[server] missing"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
            )
        wait_for(self._up, 30, 0.1, "moto_server to listen")

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
