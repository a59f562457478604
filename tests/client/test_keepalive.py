"""The CLI lists every page over one kept-alive TLS connection (one handshake), and a kept
connection the server closed while idle is replaced without the caller noticing."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hatchway.auth.sigv4 import Credentials
from hatchway.cli import main
from hatchway.server.certificates import ensure_tls_identity, ssl_server_context
from hatchway.transport.apiclient import ApiClient

NODES = [f"mi-{i:017x}" for i in range(23)]


class Pages(http.server.BaseHTTPRequestHandler):
    """DescribeInstanceInformation over ``NODES``, ``MaxResults`` at a time (offset tokens)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real server's aiohttp

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.headers["X-Amz-Target"] == "AmazonSSM.DescribeInstanceInformation"
        start = int(body.get("NextToken", "0"))
        end = start + body.get("MaxResults", 50)
        answer: dict[str, object] = {
            "InstanceInformationList": [
                {"InstanceId": i, "PingStatus": "Online"} for i in NODES[start:end]
            ]
        }
        if end < len(NODES):
            answer["NextToken"] = str(end)
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.requests += 1  # type: ignore[attr-defined]

    def log_message(self, *_: object) -> None:
        pass


class TlsServer(http.server.ThreadingHTTPServer):
    """Counts the TLS handshakes it completes; :meth:`drop_idle` closes kept connections."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Pages)
        self.context = context
        self.handshakes = 0
        self.requests = 0
        self.open: list[socket.socket] = []

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = self.socket.accept()
        tls = self.context.wrap_socket(conn, server_side=True)
        self.handshakes += 1
        self.open.append(tls)
        return tls, addr

    def drop_idle(self) -> None:
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.open.clear()


@dataclass
class Running:
    server: TlsServer
    endpoint: str
    ca_file: Path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Running]:
    identity = ensure_tls_identity(tmp_path / "tls")
    server = TlsServer(ssl_server_context(identity))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(server, f"https://127.0.0.1:{server.server_address[1]}",
                      identity.ca_cert_path)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_hatchway_nodes_lists_every_page_over_one_tls_connection(
    tls_server: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "profile.toml"
    config.write_text(
        "[profiles.default]\n"
        f'endpoint = "{tls_server.endpoint}"\n'
        'access_key_id = "AKIDEXAMPLE"\n'
        'secret_access_key = "secret"\n'
        f'ca_file = "{tls_server.ca_file}"\n'
    )
    try:
        main(["--config", str(config), "nodes", "--page-size", "5", "--output", "json"])
    except SystemExit as exited:
        assert exited.code in (0, None)
    listed = json.loads(capsys.readouterr().out)["InstanceInformationList"]
    assert [n["InstanceId"] for n in listed] == NODES
    assert tls_server.server.requests == 5  # 23 nodes, 5 a page
    assert tls_server.server.handshakes == 1


def test_a_connection_closed_while_idle_is_replaced(tls_server: Running) -> None:
    with ApiClient(
        tls_server.endpoint,
        region="local",
        credentials=Credentials("AK", "SK"),
        ca_file=tls_server.ca_file,
    ) as api:
        first = api.call("DescribeInstanceInformation", {"MaxResults": 5})
        assert first["NextToken"] == "5"
        tls_server.server.drop_idle()  # as the server's keep-alive time-out does
        second = api.call("DescribeInstanceInformation", {"MaxResults": 5, "NextToken": "5"})
        assert second["InstanceInformationList"][0]["InstanceId"] == NODES[5]
        assert api.connections == 2
    assert tls_server.server.handshakes == 2
