"""The AWS JSON 1.1 API edge: ``POST /`` with ``X-Amz-Target: AmazonSSM.<Operation>`` (the SSM
operations), ``Hatchway.<Operation>`` (identity and policies, in IAM's shapes) or
``TrentService.<Operation>`` (the key service, in KMS's shapes).

Authenticates the request (SigV4), then parses and validates its body against the model
(``validation``), asks ``authz`` whether the principal may perform the operation's action on
its resources (``operations``), dispatches to a service and maps errors through ``errormap`` —
the only place where Hatchway errors become AWS error responses.

Work done for a caller grows with what the caller has proved. Before the signature is checked:
the target header, the body's size and its framing (UTF-8, ``{…}``), nothing that builds
anything. The signature covers the raw bytes, so it is checked before they are parsed; and it
must cover ``X-Amz-Target`` and ``Content-Type`` (:data:`API_SIGNED_HEADERS`), or a captured
request could be replayed as another operation. The one anonymous operation,
RegisterManagedInstance (the activation code is its credential), is parsed only when its body
is at most :data:`MAX_ANONYMOUS_BODY` bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from aiohttp import web

from hatchway.errors import HatchwayError, RequestTooLarge, UnknownOperation
from hatchway.server.audit import CallAudit, CallAudits
from hatchway.server.authn import Authenticator
from hatchway.server.authz import Authorizer
from hatchway.server.errormap import error_body, error_status
from hatchway.server.logs import LOGS
from hatchway.server.nodes import NodeService
from hatchway.server.operations import HATCHWAY, KMS, SSM, Operation
from hatchway.server.principal import Principal
from hatchway.server.sessionkeys import NodeDataKeys
from hatchway.server.settings import ServerSettings
from hatchway.server.validation import RequestValidator, check_framing, decode_body, echo
from hatchway.store.audit import pending_call

log = logging.getLogger(__name__)

JSON_TYPE = "application/x-amz-json-1.1"
ANONYMOUS = "RegisterManagedInstance"
"""The one operation without a signature: the activation code is its credential."""
MAX_ANONYMOUS_BODY = 16 * 1024
"""Largest RegisterManagedInstance body parsed (a real one is about 600 bytes)."""
NODE_OPERATIONS = frozenset({f"{KMS}.Decrypt", f"{KMS}.GenerateDataKey"})
"""The operations a node may call with its own key (docs/protocol.md §7.9)."""
API_SIGNED_HEADERS = ("content-type", "x-amz-target")
"""Headers every signed API request must sign, besides ``host`` (which SigV4 always requires):
the target names the operation, so an unsigned target lets a captured request be replayed as a
different operation. botocore, the aws CLI and ``auth.sigv4`` all sign both."""


class Api:
    """Authenticates, validates, authorizes and dispatches API operations.

    Args:
        operations: every operation this server serves (``server.operations``).
        audit: records every call in the audit trail (``server.audit``).
        on_access_changed: called after an operation that may change who may do what
            succeeded (live sessions are then re-checked).
    """

    def __init__(
        self,
        settings: ServerSettings,
        authn: Authenticator,
        authz: Authorizer,
        nodes: NodeService,
        operations: Iterable[Operation],
        audit: CallAudits,
        validator: RequestValidator | None = None,
        on_access_changed: Callable[[], None] | None = None,
        node_keys: NodeDataKeys | None = None,
    ) -> None:
        self._settings = settings
        self._node_keys = node_keys
        self._audit = audit
        self._authn = authn
        self._authz = authz
        self._nodes = nodes
        self._on_access_changed = on_access_changed
        self.operations: dict[str, Operation] = {}
        for op in operations:
            if op.target in self.operations:
                raise ValueError(f"operation {op.target} registered twice")
            self.operations[op.target] = op
        self._validator = validator or RequestValidator.for_operations(
            [op.name for op in self.operations.values() if op.service == SSM] + [ANONYMOUS],
            [op.name for op in self.operations.values() if op.service == HATCHWAY],
            kms_ops=[op.name for op in self.operations.values() if op.service == KMS],
            logs_ops=[op.name for op in self.operations.values() if op.service == LOGS],
        )

    async def handle(self, request: web.Request) -> web.Response:
        call = self._audit.begin(request)
        request_id = call.request_id
        try:
            try:
                result = await self._call(request, call)
            except HatchwayError as exc:
                await call.finish_error(exc)
                raise
            except Exception as exc:
                await call.finish_error(HatchwayError("internal server error"))
                raise exc
            await call.finish_ok()
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

    async def _call(self, request: web.Request, call: CallAudit) -> dict[str, Any]:
        """Authenticate, validate, authorize and run one operation, telling ``call`` (its
        audit record) what it learns on the way."""
        target = request.headers.get("X-Amz-Target", "")
        name = self._operation_name(target)
        if name == ANONYMOUS:
            call.operation(SSM, name, f"ssm:{name}")
            async with self._nodes.attempt(request.remote) as attempt:  # per-source back-off
                call.recordable = True
                body = await self._read(request, MAX_ANONYMOUS_BODY)
                data = self._validator.validate(name, decode_body(body))
                call.parameters(data)
                with pending_call(call.pending):
                    return await self._nodes.register(data, attempt)
        op = self.operations[target]
        call.operation(op.service, op.name, op.action)
        body = await self._read(request, self._settings.max_body_size)
        check_framing(body)
        call.recordable = True
        if op.target in NODE_OPERATIONS and _signed_by_node(request):
            return await self._node_kms(op, request, body, call)
        principal = await self._authn.user(
            request.method,
            request.raw_path,
            request.headers,
            body,
            must_sign=API_SIGNED_HEADERS,
            service=op.signing_name,
        )
        principal = replace(
            principal,
            source_ip=request.remote or "",
            secure_transport=request.secure or self._settings.tls,
        )
        return await self._perform(op, principal, decode_body(body), request, call)

    async def _node_kms(
        self, op: Operation, request: web.Request, body: bytes, call: CallAudit
    ) -> dict[str, Any]:
        """``TrentService.Decrypt`` or ``GenerateDataKey`` signed by a node's key: an agent
        unwrapping the data key of one of its end-to-end encrypted sessions, or making its
        recording's (``server.sessionkeys`` says what it may do; nodes have no policies)."""
        if self._node_keys is None:
            raise UnknownOperation("nodes cannot call the key service on this server")
        node_id = await self._authn.node(
            request.method,
            request.raw_path,
            request.headers,
            body,
            op.signing_name,
            must_sign=API_SIGNED_HEADERS,
        )
        call.node(node_id)
        data = self._validator.validate(op.name, decode_body(body))
        call.parameters(data)
        with pending_call(call.pending):
            if op.name == "Decrypt":
                return await self._node_keys.decrypt(node_id, data)
            return await self._node_keys.generate(node_id, data)

    async def _perform(
        self,
        op: Operation,
        principal: Principal,
        body: Any,
        request: web.Request,
        call: CallAudit,
    ) -> dict[str, Any]:
        """Validate, authorize and run ``op`` for an authenticated ``principal``."""
        call.principal(principal)
        data = self._validator.validate(op.name, body)
        call.parameters(data)
        resources = await op.resources(principal, data)
        call.resources(resources)
        decisions = await self._authz.authorize(principal, op.action, resources, op.extra_context)
        call.decision(decisions[0] if decisions else None)
        with pending_call(call.pending):
            result = await op.handler(principal, data, request)
        if op.changes_access and self._on_access_changed is not None:
            self._on_access_changed()
        return result

    async def call(
        self, principal: Principal, target: str, body: Any, request: web.Request
    ) -> dict[str, Any]:
        """Perform one operation as ``principal``, authenticated by other means (the web
        console's sign-in): the same validation, authorization, service and audit record as
        a signed request after its signature.

        Raises:
            UnknownOperation: no such operation.
            ValidationError: the body breaks the operation's model.
            AccessDenied: the principal's policies do not allow it.
        """
        op = self.operations.get(target)
        if op is None:
            raise UnknownOperation(f"operation {echo(target)} is not supported")
        call = self._audit.begin(request)
        call.operation(op.service, op.name, op.action)
        call.recordable = True
        try:
            result = await self._perform(op, principal, body, request, call)
        except HatchwayError as exc:
            await call.finish_error(exc)
            raise
        except Exception as exc:
            await call.finish_error(HatchwayError("internal server error"))
            raise exc
        await call.finish_ok()
        return result

    def _operation_name(self, target: str) -> str:
        if target in self.operations or target == f"{SSM}.{ANONYMOUS}":
            return target.partition(".")[2]
        shown = echo(target) if target else "(none)"
        raise UnknownOperation(f"operation {shown} is not supported")

    @staticmethod
    async def _read(request: web.Request, limit: int) -> bytes:
        """The body, refused with 413 past ``limit`` (the app's own cap is max_body_size)."""
        if request.content_length is not None and request.content_length > limit:
            raise RequestTooLarge(f"request body exceeds {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestTooLarge(f"request body exceeds {limit} bytes") from exc
        if len(body) > limit:
            raise RequestTooLarge(f"request body exceeds {limit} bytes")
        return body


def _json(data: dict[str, Any], status: int, request_id: str) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type=JSON_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def _signed_by_node(request: web.Request) -> bool:
    """Whether the request's credential is a node id (an agent signs with its node id as
    the key id, docs/protocol.md §10.2), not an access key."""
    credential = request.headers.get("Authorization", "").partition("Credential=")[2]
    return credential.startswith("mi-")
