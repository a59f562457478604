"""ApiClient names the service in ``X-Amz-Target``: ``AmazonSSM`` or ``Hatchway``."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from hatchway.auth.sigv4 import Credentials
from hatchway.transport.apiclient import ApiClient, ApiError


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        target = self.headers["X-Amz-Target"]
        self.seen.append((target, body))
        denied = target.endswith(".Forbidden")
        answer = {"__type": "AccessDeniedException", "message": "no"} if denied else {"ok": target}
        data = json.dumps(answer).encode()
        self.send_response(400 if denied else 200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_service_names_the_target(endpoint: str) -> None:
    Recorder.seen.clear()
    api = ApiClient(endpoint, region="local", credentials=Credentials("AK", "SK"))
    assert api.call("DescribeSessions", {}) == {"ok": "AmazonSSM.DescribeSessions"}
    assert api.call("CreateUser", {"UserName": "u"}, service="Hatchway") == {
        "ok": "Hatchway.CreateUser"
    }
    assert Recorder.seen[1] == ("Hatchway.CreateUser", {"UserName": "u"})
    with pytest.raises(ApiError) as denied:
        api.call("Forbidden", {}, service="Hatchway")
    assert (denied.value.code, denied.value.message) == ("AccessDeniedException", "no")
