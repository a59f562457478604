"""``--no-tls``: refused off loopback; on loopback the whole flow works over plain ws://."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.cluster import HATCHWAY, Cluster


def test_no_tls_is_refused_off_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [HATCHWAY, "server", "--data-dir", str(tmp_path / "d"), "--listen", "0.0.0.0:1",
         "--no-tls"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert b"loopback" in result.stderr and b"Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_plain_http_on_loopback_carries_a_session(tmp_path: Path) -> None:
    c = Cluster(tmp_path, tls=False)
    c.start_server()
    try:
        assert not c.ca_file.exists()
        assert "ca_file" not in c.profile.read_text()
        node, state = c.register("plain")
        c.start_agent(state, node)
        start = c.cli_json("sessions")  # the API answers over http://
        assert start == {"Sessions": []}
        result = c.cli("start-session", "--target", node, input=b"echo plain-$((3*3))\nexit\n")
        assert b"plain-9" in result.stdout
    finally:
        c.close()
