"""The signed AWS JSON 1.1 API client (stdlib ``http.client`` + SigV4) and the TLS context
that verifies the server, shared by the CLI and the agent (registration, WebSocket dials)."""

from __future__ import annotations

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
    IAM-style identity operations) on a Hatchway server."""

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
                (users, groups, access keys, policies, simulation).
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

    def _post(self, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        host, port = self._url.hostname or "", self._port
        conn: http.client.HTTPConnection
        if self._url.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self.ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        try:
            conn.request("POST", "/", body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(
                f"TLS verification of {self.endpoint} failed ({exc.verify_message}); "
                "is the right CA file configured?"
            ) from exc
        except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise Unavailable(f"cannot reach the server at {self.endpoint}: {reason}") from exc
        except http.client.HTTPException as exc:
            raise Unavailable(f"bad HTTP response from {self.endpoint}: {exc!r}") from exc
        finally:
            conn.close()
