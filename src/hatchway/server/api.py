"""The AWS JSON 1.1 API edge: ``POST /`` with ``X-Amz-Target: AmazonSSM.<Operation>``.

Parses the request, authenticates it (SigV4), dispatches to a service and maps errors through
``errormap`` — the only place where Hatchway errors become AWS error responses.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hatchway.errors import (
    HatchwayError,
    RequestTooLarge,
    SerializationError,
    UnknownOperation,
)
from hatchway.server.authn import Authenticator
from hatchway.server.errormap import error_body, error_status
from hatchway.server.nodes import NodeService
from hatchway.server.principal import Principal
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings

log = logging.getLogger(__name__)

JSON_TYPE = "application/x-amz-json-1.1"
Operation = Callable[[Principal, dict[str, Any], web.Request], Awaitable[dict[str, Any]]]


class Api:
    """Dispatches AWS JSON operations to the session and node services."""

    def __init__(
        self,
        settings: ServerSettings,
        authn: Authenticator,
        sessions: SessionService,
        nodes: NodeService,
    ) -> None:
        self._settings = settings
        self._authn = authn
        self._sessions = sessions
        self._nodes = nodes
        self._operations: dict[str, Operation] = {
            "StartSession": lambda p, b, r: sessions.start(p, b, self.stream_base(r)),
            "ResumeSession": lambda p, b, r: sessions.resume(p, b, self.stream_base(r)),
            "TerminateSession": lambda p, b, r: sessions.terminate(p, b),
            "DescribeSessions": lambda p, b, r: sessions.describe(b),
            "DescribeInstanceInformation": lambda p, b, r: nodes.describe_instances(b),
            "CreateActivation": lambda p, b, r: nodes.create_activation(p, b),
            "DescribeActivations": lambda p, b, r: nodes.describe_activations(b),
            "DeleteActivation": lambda p, b, r: nodes.delete_activation(b),
            "DeregisterManagedInstance": lambda p, b, r: nodes.deregister(p, b),
        }

    def stream_base(self, request: web.Request) -> str:
        """Base of StreamUrl: ``--public-url`` or the Host the caller signed (DESIGN.md §9)."""
        if self._settings.public_url:
            base = self._settings.public_url.rstrip("/")
            return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{'wss' if self._settings.tls else 'ws'}://{request.host}"

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge as exc:
                raise RequestTooLarge(
                    f"request body exceeds {self._settings.max_body_size} bytes"
                ) from exc
            target = request.headers.get("X-Amz-Target", "")
            prefix, _, name = target.partition(".")
            if prefix != "AmazonSSM" or (
                name not in self._operations and name != "RegisterManagedInstance"
            ):
                raise UnknownOperation(f"operation {target or '(none)'} is not supported")
            data = _parse_body(body)
            if name == "RegisterManagedInstance":
                result = await self._nodes.register(data, source=request.remote)
            else:
                principal = await self._authn.user(
                    request.method, request.raw_path, request.headers, body
                )
                result = await self._operations[name](principal, data, request)
            return _json(result, 200, request_id)
        except HatchwayError as exc:
            status = error_status(exc)
            if status >= 500:
                log.error("request %s failed: %s", request_id, exc, exc_info=exc)
            return _json(error_body(exc), status, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return _json(
                {"__type": "InternalServerError", "message": "internal server error"},
                500,
                request_id,
            )


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError("request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise SerializationError("request body must be a JSON object")
    return data


def _json(data: dict[str, Any], status: int, request_id: str) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type=JSON_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )
