"""The signed AWS JSON 1.1 API client (stdlib ``http.client`` + SigV4) and the TLS context
that verifies the server, shared by the CLI and the agent (registration, WebSocket dials)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hatchway import __version__
from hatchway.auth.sigv4 import Credentials, sign_request
from hatchway.errors import ConfigError, HatchwayError, Unavailable

JSON_TYPE = "application/x-amz-json-1.1"
USER_AGENT = f"hatchway-cli/{__version__}"
#: The SigV4 service of each target prefix that is not signed for ``ssm``.
SIGNING_NAMES = {"TrentService": "kms", "Logs_20140328": "logs"}


class ApiError(HatchwayError):
    """An error response from the server, with its AWS error type as ``code``."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the server against the pinned CA (or the system store without one)."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file}: {exc}") from exc


class ApiClient:
    """Calls ``AmazonSSM.<Operation>`` (and Hatchway's own ``Hatchway.<Operation>``, e.g. the
    IAM-style identity operations) on a Hatchway server.

    Calls share one kept-alive HTTP/1.1 connection (one TLS handshake for a whole listing);
    :meth:`close` it, or use the client as a context manager. Not for use from several threads
    at once.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        credentials: Credentials | None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        try:
            self._port = url.port  # urllib checks the range only here, lazily
        except ValueError as exc:
            raise ConfigError(f"endpoint {endpoint!r} has an invalid port") from exc
        self.endpoint = endpoint.rstrip("/")
        self._url = url
        self.region = region
        self._credentials = credentials
        self._ca_file = ca_file
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        #: Connections opened so far (each a TCP and, over https, a TLS handshake).
        self.connections = 0

    def ssl_context(self) -> ssl.SSLContext | None:
        if self._url.scheme != "https":
            return None
        if self._ssl is None:
            self._ssl = client_ssl_context(self._ca_file)
        return self._ssl

    def call(
        self, operation: str, body: dict[str, Any], *, service: str = "AmazonSSM"
    ) -> dict[str, Any]:
        """POST one operation as ``X-Amz-Target: <service>.<operation>``; returns the decoded
        response or raises ``ApiError``.

        Args:
            service: ``"AmazonSSM"`` for the SSM operations, ``"Hatchway"`` for Hatchway's own
                (users, groups, access keys, policies, simulation), ``"TrentService"`` for
                the key service (signed for ``kms``, as AWS KMS requests are), ``"Logs_20140328"``
                for the log groups (signed for SigV4 service ``logs``, as CloudWatch Logs is).
        """
        payload = json.dumps(body).encode()
        headers = {
            "Content-Type": JSON_TYPE,
            "X-Amz-Target": f"{service}.{operation}",
            "User-Agent": USER_AGENT,  # the audit trail's userAgent
        }
        if self._credentials is not None:
            headers = sign_request(
                "POST",
                self.endpoint + "/",
                headers,
                payload,
                credentials=self._credentials,
                region=self.region,
                service=SIGNING_NAMES.get(service, "ssm"),
                now=datetime.now(UTC),
            )
        status, data = self._post(payload, headers)
        try:
            decoded = json.loads(data or b"{}")
        except ValueError as exc:
            raise Unavailable(
                f"the server at {self.endpoint} answered HTTP {status} with a non-JSON body"
            ) from exc
        if status >= 400 or not isinstance(decoded, dict):
            code = str(decoded.get("__type", f"HTTP{status}")) if isinstance(decoded, dict) else ""
            message = str(decoded.get("message", "")) if isinstance(decoded, dict) else ""
            raise ApiError(code.rpartition("#")[2] or f"HTTP{status}", message, status)
        return decoded

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection (and True), or a new one (and False)."""
        if self._conn is not None:
            return self._conn, True
        host, port = self._url.hostname or "", self._port
        if self._url.scheme == "https":
            self._conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self.ssl_context()
            )
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        self.connections += 1
        return self._conn, False

    def _post(self, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST on the kept-alive connection (one TCP and TLS handshake for a whole listing).

        A kept connection the server has closed meanwhile (its keep-alive time-out) fails
        before any answer: the request is then sent once more on a new connection. The server
        had not read it, since it closes only idle connections.
        """
        while True:
            conn, reused = self._connection()
            try:
                conn.request("POST", "/", body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except _STALE as exc:
                self.close()
                if reused:
                    continue
                raise Unavailable(f"the server at {self.endpoint} dropped the connection") from exc
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise ConfigError(
                    f"TLS verification of {self.endpoint} failed ({exc.verify_message}); "
                    "is the right CA file configured?"
                ) from exc
            except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError) as exc:
                self.close()
                reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
                raise Unavailable(f"cannot reach the server at {self.endpoint}: {reason}") from exc
            except http.client.HTTPException as exc:
                self.close()
                raise Unavailable(f"bad HTTP response from {self.endpoint}: {exc!r}") from exc
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close the kept-alive connection, if any (the next call opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __del__(self) -> None:
        # A client dropped without close() (a one-shot CLI command) leaves no open socket.
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):  # also at interpreter exit
                conn.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How a kept-alive connection that the server closed while idle fails.
_STALE: tuple[type[BaseException], ...] = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,  # closed without a TLS close_notify
    ssl.SSLZeroReturnError,
)
