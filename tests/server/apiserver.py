"""A real server's aiohttp app on 127.0.0.1:0, in this process, and a botocore-signed caller.

The app runs on its own thread's event loop (one per test module: building it migrates a fresh
SQLite database), so tests stay plain functions that send bytes exactly as written and read the
answer, and ``caplog`` sees the server's log records.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hatchway.server.app import Server, build_server
from hatchway.server.bootstrap import AdminCredentials, ensure_admin
from hatchway.server.settings import ServerSettings

JSON_TYPE = "application/x-amz-json-1.1"
START_TIMEOUT = 30.0


@dataclass
class Answer:
    """An HTTP answer with its JSON body decoded."""

    status: int
    headers: http.client.HTTPMessage
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body.get("__type", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass
class ApiServer:
    """The running app: where it listens, the admin's key and the built server."""

    host: str
    port: int
    admin: AdminCredentials
    server: Server

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def region(self) -> str:
        return self.server.settings.region

    def signed_headers(
        self,
        operation: str,
        body: bytes,
        *,
        secret: str | None = None,
        key_id: str | None = None,
        service: str = "AmazonSSM",
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Headers of a request signed by botocore's SigV4 signer, as boto3 sends them
        (with the admin's key unless ``key_id``/``secret`` say otherwise)."""
        request = AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=body,
            headers={
                "Content-Type": JSON_TYPE,
                "X-Amz-Target": f"{service}.{operation}",
                **(extra or {}),
            },
        )
        credentials = Credentials(
            key_id or self.admin.access_key_id, secret or self.admin.secret_access_key
        )
        signing_name = {"TrentService": "kms", "Logs_20140328": "logs"}.get(service, "ssm")
        SigV4Auth(credentials, signing_name, self.region).add_auth(request)
        return dict(request.headers.items())

    def client(self, service: str, *, key_id: str | None = None, secret: str | None = None) -> Any:
        """A boto3 client of ``service`` (``kms``, ``ssm``) for this server, as the admin
        unless ``key_id``/``secret`` say otherwise; no retries."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key_id or self.admin.access_key_id,
            aws_secret_access_key=secret or self.admin.secret_access_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def post(
        self,
        operation: str,
        body: bytes | dict[str, Any],
        *,
        sign: bool = True,
        headers: dict[str, str] | None = None,
        service: str = "AmazonSSM",
        key_id: str | None = None,
        secret: str | None = None,
    ) -> Answer:
        """POST ``body`` (bytes as they are, or a dict as JSON), signed unless ``sign=False``."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if headers is None:
            headers = (
                self.signed_headers(operation, raw, service=service, key_id=key_id, secret=secret)
                if sign
                else {"Content-Type": JSON_TYPE, "X-Amz-Target": f"AmazonSSM.{operation}"}
            )
        return self.send(raw, headers)

    def send(self, raw: bytes, headers: dict[str, str]) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("POST", "/", body=raw, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        return Answer(response.status, response.headers, json.loads(data))


@contextmanager
def running_api(data_dir: Path) -> Iterator[ApiServer]:
    """Build the server as ``hatchway server --no-tls`` does and serve it until the block ends."""
    ready = threading.Event()
    started: list[ApiServer] = []
    failed: list[BaseException] = []
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop_box.append(asyncio.get_running_loop())
        stop_box.append(stop)
        settings = ServerSettings(data_dir=data_dir, port=0, tls=False)
        server = await build_server(settings)
        runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            admin = await ensure_admin(server.store, server.box, "admin", 0.0)
            started.append(ApiServer(host, port, admin, server))
            ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()
            await server.close()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread below
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="api-server", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT) or not started:
        raise RuntimeError(f"the server did not start: {failed!r}")
    try:
        yield started[0]
    finally:
        loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(START_TIMEOUT)
