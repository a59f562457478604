"""The console's JSON API under ``/api/`` (described by ``openapi.py``) and its pages at ``/``.

Every action is an API operation performed as the signed-in user through
:meth:`hatchway.server.api.Api.call` — the same validation, the same policy decision and the
same service as a SigV4 request — so the console can do nothing its user could not do with the
CLI. What the user may do is also answered up front (``/api/me`` and per-item flags, decided by
the same ``Authorizer``), so that the pages offer only what will be allowed.

Requests: JSON bodies (``Content-Type: application/json``), at most :data:`MAX_BODY` bytes.
State-changing requests other than sign-in carry the CSRF token in ``X-CSRF-Token``; the
terminal's WebSocket must come from the console's own origin. Errors are
``{"error": <code>, "message": <text>}`` with the error's HTTP status (401 when not signed in).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from hatchway.errors import (
    AccessDenied,
    AuthError,
    Conflict,
    HatchwayError,
    NotFound,
    RequestTooLarge,
    Throttled,
    ValidationError,
)
from hatchway.policy import NamedPolicy
from hatchway.server.api import Api
from hatchway.server.authz import ANY, Authorizer
from hatchway.server.console.bridge import Terminal, Terminals
from hatchway.server.console.logins import ConsoleLogins, SignedIn
from hatchway.server.console.openapi import openapi_document
from hatchway.server.documents import DEFAULT_SHELL_DOCUMENT
from hatchway.server.operations import HATCHWAY, SSM
from hatchway.server.settings import ServerSettings
from hatchway.store.store import Store

__all__ = ["MAX_BODY", "ConsoleApi", "static_dir"]

log = logging.getLogger(__name__)

RemoteTerminal = Callable[[web.Request, str, str, int], Awaitable[web.StreamResponse | None]]
"""(request, session id, user id, offset) → the piped WebSocket, or None if nobody has it."""

MAX_BODY: Final = 64 * 1024
PAGE_SIZE: Final = 50
MAX_NODES: Final = 1000
RECORDING_CHUNK: Final = 1024 * 1024
SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Content-Security-Policy of the pages: nothing from elsewhere, no inline script, no eval.
xterm.js and the player set inline styles (``style-src 'unsafe-inline'``); the player's
terminal emulator is WebAssembly, compiled from its own bundle (``'wasm-unsafe-eval'``, which
allows WebAssembly only, not JavaScript's eval)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """The console's files (package data: pages, scripts, vendored xterm.js and player)."""
    return Path(str(resources.files("hatchway") / "web" / "static"))


class ConsoleApi:
    """The console's routes.

    Args:
        api: the SigV4 API's operations (``call`` performs one as a principal).
        logins: sign-in and cookie sessions.
        terminals: the terminal bridge.
    """

    def __init__(
        self,
        settings: ServerSettings,
        store: Store,
        api: Api,
        authz: Authorizer,
        logins: ConsoleLogins,
        terminals: Terminals,
    ) -> None:
        self._settings = settings
        self._store = store
        self._api = api
        self._authz = authz
        self.logins = logins
        self.terminals = terminals
        #: Scale-out: opens a terminal that lives in another replica (``server.cluster``).
        self.remote_terminal: RemoteTerminal | None = None
        prefix = "__Host-" if settings.tls else ""
        self.session_cookie = prefix + "hatchway-session"
        self.csrf_cookie = prefix + "hatchway-csrf"

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/favicon.ico", self._no_icon)
        r.add_static("/static/", static_dir(), show_index=False, follow_symlinks=False)
        r.add_get("/api/openapi.json", self._openapi)
        r.add_post("/api/login", self._wrap(self._login, signed_in=False))
        r.add_post("/api/logout", self._wrap(self._logout))
        r.add_get("/api/me", self._wrap(self._me))
        r.add_post("/api/mfa/enrol", self._wrap(self._mfa_enrol))
        r.add_post("/api/mfa/confirm", self._wrap(self._mfa_confirm))
        r.add_post("/api/mfa/disable", self._wrap(self._mfa_disable))
        r.add_get("/api/nodes", self._wrap(self._nodes))
        r.add_get("/api/sessions", self._wrap(self._sessions))
        r.add_post("/api/sessions", self._wrap(self._start))
        r.add_get("/api/sessions/{session_id}", self._wrap(self._session))
        r.add_post("/api/sessions/{session_id}/terminate", self._wrap(self._terminate))
        r.add_get("/api/sessions/{session_id}/recording", self._wrap(self._recording))
        r.add_get("/api/sessions/{session_id}/terminal", self._wrap(self._terminal))
        if f"{HATCHWAY}.LookupEvents" in self._api.operations:
            r.add_get("/api/audit", self._wrap(self._audit))
        r.add_route("*", r"/api/{tail:[\s\S]*}", self._unknown)

    # ---- plumbing ---------------------------------------------------------------------------

    def _wrap(
        self,
        handler: Callable[[web.Request, SignedIn], Awaitable[web.StreamResponse]]
        | Callable[[web.Request], Awaitable[web.StreamResponse]],
        *,
        signed_in: bool = True,
    ) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                if request.method == "POST":
                    _require_json(request)
                if not signed_in:
                    return await handler(request)  # type: ignore[call-arg]
                who = await self.logins.authenticate(
                    request.cookies.get(self.session_cookie), request.remote
                )
                if request.method == "POST" and not who.csrf_ok(
                    request.headers.get("X-CSRF-Token")
                ):
                    raise CsrfRefused("Missing or wrong CSRF token; reload the page.")
                return await handler(request, who)  # type: ignore[call-arg]
            except HatchwayError as exc:
                return _error(exc)
            except web.HTTPException:
                raise
            except Exception:
                log.exception("console request %s %s failed", request.method, request.path)
                return _json({"error": "InternalServerError", "message": "internal error"}, 500)

        return handle

    async def _call(
        self, who: SignedIn, target: str, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        return await self._api.call(who.principal, target, body, request)

    async def _policies(self, who: SignedIn) -> list[NamedPolicy]:
        return await self._authz.policies_of(who.user.user_id)

    def _allowed(
        self, who: SignedIn, policies: Sequence[NamedPolicy], action: str, resource: Any = ANY
    ) -> bool:
        return self._authz.decide(policies, who.principal, action, resource).allowed

    def _cookies(self, response: web.StreamResponse, token: str, csrf: str) -> None:
        common: dict[str, Any] = {
            "path": "/",
            "secure": self._settings.tls,
            "samesite": "Strict",
            "max_age": int(self._settings.console_lifetime),
        }
        response.set_cookie(self.session_cookie, token, httponly=True, **common)
        response.set_cookie(self.csrf_cookie, csrf, httponly=False, **common)

    def _clear_cookies(self, response: web.StreamResponse) -> None:
        for name in (self.session_cookie, self.csrf_cookie):
            response.del_cookie(name, path="/", secure=self._settings.tls, samesite="Strict")

    # ---- pages ------------------------------------------------------------------------------

    async def _index(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            static_dir() / "index.html",
            headers={**SECURITY_HEADERS, "Content-Security-Policy": PAGE_POLICY},
        )

    async def _no_icon(self, _: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _openapi(self, _: web.Request) -> web.StreamResponse:
        return _json(openapi_document(audit=f"{HATCHWAY}.LookupEvents" in self._api.operations))

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        return _json({"error": "NotFound", "message": f"No such API route: {request.path}"}, 404)

    # ---- sign-in ----------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        user_name = _string(body, "username", 1, 64)
        password = _string(body, "password", 1, 128)
        code = _optional_string(body, "code", 16)
        signed = await self.logins.sign_in(
            user_name, password, code, request.remote, request.headers.get("User-Agent", "")
        )
        await self.logins.purge()
        response = _json({"username": signed.user.name})
        self._cookies(response, signed.token, signed.csrf)
        return response

    async def _logout(self, _: web.Request, who: SignedIn) -> web.StreamResponse:
        await self.logins.sign_out(who)
        response = _json({})
        self._clear_cookies(response)
        return response

    async def _me(self, _: web.Request, who: SignedIn) -> web.StreamResponse:
        policies = await self._policies(who)
        allowed = {
            name: self._allowed(who, policies, action)
            for name, action in (
                ("describeNodes", "ssm:DescribeInstanceInformation"),
                ("describeSessions", "ssm:DescribeSessions"),
                ("startSession", "ssm:StartSession"),
                ("terminateSession", "ssm:TerminateSession"),
                ("getRecording", "hatchway:GetSessionRecording"),
                ("lookupEvents", "hatchway:LookupEvents"),
            )
        }
        allowed["lookupEvents"] = allowed["lookupEvents"] and (
            f"{HATCHWAY}.LookupEvents" in self._api.operations
        )
        return _json(
            {
                "username": who.user.name,
                "arn": who.principal.arn,
                "mfaEnabled": await self.logins.mfa_enabled(who.user.user_id),
                "permissions": allowed,
                "idleTimeout": self._settings.console_idle_timeout,
                "resumeWindow": self._settings.console_resume_window,
            }
        )

    async def _mfa_enrol(self, _: web.Request, who: SignedIn) -> web.StreamResponse:
        secret, uri = await self.logins.begin_mfa(who)
        return _json({"secret": secret, "uri": uri})

    async def _mfa_confirm(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        code = _string(await _body(request), "code", 1, 16)
        await self.logins.confirm_mfa(who, code)
        return _json({"mfaEnabled": True})

    async def _mfa_disable(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        code = _string(await _body(request), "code", 1, 16)
        await self.logins.disable_mfa(who, code)
        return _json({"mfaEnabled": False})

    # ---- nodes ------------------------------------------------------------------------------

    async def _nodes(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        nodes: list[dict[str, Any]] = []
        token: str | None = None
        while len(nodes) < MAX_NODES:
            body: dict[str, Any] = {"MaxResults": 50}
            if token:
                body["NextToken"] = token
            page = await self._call(who, f"{SSM}.DescribeInstanceInformation", body, request)
            nodes += page.get("InstanceInformationList", [])
            token = page.get("NextToken")
            if not token:
                break
        policies = await self._policies(who)
        document = self._authz.arns.document(DEFAULT_SHELL_DOCUMENT)
        check = {"ssm:SessionDocumentAccessCheck": "true"}
        may_use_document = self._authz.decide(
            policies, who.principal, "ssm:StartSession", document, check
        ).allowed
        for node in nodes:
            tags = {t["Key"]: t["Value"] for t in node.get("Tags", [])}
            resource = self._authz.arns.node(node["InstanceId"], tags)
            node["CanStartSession"] = (
                may_use_document
                and (
                    self._authz.decide(policies, who.principal, "ssm:StartSession", resource, check)
                ).allowed
            )
        return _json({"Nodes": nodes})

    # ---- sessions ---------------------------------------------------------------------------

    async def _start(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        body = await _body(request)
        call: dict[str, Any] = {"Target": _string(body, "target", 1, 400)}
        document = _optional_string(body, "documentName", 128)
        reason = _optional_string(body, "reason", 256)
        if document:
            call["DocumentName"] = document
        if reason:
            call["Reason"] = reason
        parameters = body.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict) or not all(
                isinstance(k, str)
                and isinstance(v, list)
                and all(isinstance(item, str) for item in v)
                for k, v in parameters.items()
            ):
                raise ValidationError("parameters must map names to lists of strings")
            if parameters:
                call["Parameters"] = parameters
        started = await self._call(who, f"{SSM}.StartSession", call, request)
        session_id = started["SessionId"]
        self.terminals.open(session_id, call["Target"], who.user.user_id, started["TokenValue"])
        return _json({"SessionId": session_id, "Target": call["Target"]})

    async def _sessions(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        q = request.query
        state = q.get("state", "Active")
        if state not in ("Active", "History"):
            raise ValidationError("state must be Active or History")
        filters = []
        for name, key in (("target", "Target"), ("owner", "Owner"), ("status", "Status")):
            if q.get(name):
                filters.append({"key": key, "value": q[name]})
        for name, key in (("after", "InvokedAfter"), ("before", "InvokedBefore")):
            if q.get(name):
                filters.append({"key": key, "value": _date(q[name], name)})
        body: dict[str, Any] = {"State": state, "MaxResults": PAGE_SIZE}
        if filters:
            body["Filters"] = filters
        if q.get("nextToken"):
            body["NextToken"] = q["nextToken"]
        page = await self._call(who, f"{SSM}.DescribeSessions", body, request)
        await self._flag_sessions(who, page.get("Sessions", []))
        return _json(page)

    async def _session(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        session_id = _session_id(request)
        for state in ("Active", "History"):
            body = {"State": state, "Filters": [{"key": "SessionId", "value": session_id}]}
            page = await self._call(who, f"{SSM}.DescribeSessions", body, request)
            if page.get("Sessions"):
                session = page["Sessions"][0]
                await self._flag_sessions(who, [session])
                return _json(session)
        raise NotFound(f"Session {session_id} does not exist.")

    async def _flag_sessions(self, who: SignedIn, sessions: list[dict[str, Any]]) -> None:
        policies = await self._policies(who)
        for session in sessions:
            row = await self._store.sessions.get(session["SessionId"])
            resource = self._authz.arns.session(session["SessionId"], row.owner_id if row else "")
            active = session.get("Status") not in ("Terminated", "Failed")
            session["CanTerminate"] = active and self._allowed(
                who, policies, "ssm:TerminateSession", resource
            )
            session["CanPlay"] = self._allowed(
                who, policies, "hatchway:GetSessionRecording", resource
            )
            session["CanAttach"] = (
                active
                and row is not None
                and row.owner_id == who.user.user_id
                and self._has_terminal(session["SessionId"], who)
            )

    def _has_terminal(self, session_id: str, who: SignedIn) -> bool:
        try:
            self.terminals.get(session_id, who.user.user_id)
        except NotFound:
            return False
        return True

    async def _terminate(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        session_id = _session_id(request)
        await self._call(who, f"{SSM}.TerminateSession", {"SessionId": session_id}, request)
        return _json({"SessionId": session_id})

    async def _recording(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        """The whole recording (asciicast v2), read in chunks, each one authorized."""
        session_id = _session_id(request)
        body: dict[str, Any] = {"SessionId": session_id, "MaxBytes": RECORDING_CHUNK}
        target = f"{HATCHWAY}.GetSessionRecording"
        first = await self._call(who, target, body, request)
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "application/x-asciicast",
                "Content-Disposition": f'inline; filename="{session_id}.cast"',
            }
        )
        await response.prepare(request)
        chunk = first
        while True:
            await response.write(base64.b64decode(chunk.get("Data", "")))
            token = chunk.get("NextToken")
            if not token:
                break
            try:
                chunk = await self._call(who, target, {**body, "NextToken": token}, request)
            except HatchwayError as exc:  # the status went out already: end the body early
                log.warning("recording of %s cut short: %s", session_id, exc.message)
                break
        await response.write_eof()
        return response

    async def _terminal(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise CsrfRefused("The terminal may be opened from the console's own pages only.")
        session_id = _session_id(request)
        try:
            terminal: Terminal | None = self.terminals.get(session_id, who.user.user_id)
        except NotFound:
            # Scale-out: the terminal may live in another replica (the session's relay).
            if self.remote_terminal is None:
                raise
            terminal = None
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise ValidationError(
                "This is a WebSocket: open it with an Upgrade: websocket request."
            )
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError as exc:
            raise ValidationError("offset must be a whole number") from exc
        if terminal is None:
            assert self.remote_terminal is not None
            piped = await self.remote_terminal(request, session_id, who.user.user_id, offset)
            if piped is None:
                raise NotFound(f"No console terminal for session {session_id}.")
            return piped
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=2 * MAX_BODY)
        await ws.prepare(request)
        await terminal.serve_browser(ws, max(0, offset))
        return ws

    # ---- audit ------------------------------------------------------------------------------

    async def _audit(self, request: web.Request, who: SignedIn) -> web.StreamResponse:
        body: dict[str, Any] = {"MaxResults": PAGE_SIZE}
        q = request.query
        for name, key in (("after", "StartTime"), ("before", "EndTime")):
            if q.get(name):
                body[key] = _date(q[name], name)
        attributes = [
            {"AttributeKey": key, "AttributeValue": q[name]}
            for name, key in (
                ("user", "Username"),
                ("action", "EventName"),
                ("resource", "ResourceName"),
            )
            if q.get(name)
        ]
        if attributes:
            body["LookupAttributes"] = attributes
        if q.get("nextToken"):
            body["NextToken"] = q["nextToken"]
        page = await self._call(who, f"{HATCHWAY}.LookupEvents", body, request)
        for event in page.get("Events", []):
            try:
                record = json.loads(event.get("CloudTrailEvent") or "{}")
            except ValueError:
                record = {}
            decision = record.get("decision") or {}
            event["Outcome"] = record.get("errorCode") or "Success"
            event["SourceIp"] = record.get("sourceIPAddress", "")
            event["Decision"] = decision.get("outcome", "") if isinstance(decision, dict) else ""
        return _json(page)


class CsrfRefused(AccessDenied):
    """A state-changing request without the sign-in's CSRF token (or from another origin)."""

    code = "CsrfRefused"


class NotJson(ValidationError):
    """A POST whose body is not declared JSON."""

    code = "UnsupportedMediaType"


def _require_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise NotJson("Send JSON (Content-Type: application/json).")


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise RequestTooLarge(f"request body exceeds {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise RequestTooLarge(f"request body exceeds {MAX_BODY} bytes")
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("The body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ValidationError("The body must be a JSON object.")
    return body


def _string(body: dict[str, Any], name: str, least: int, most: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not (least <= len(value) <= most):
        raise ValidationError(f"{name} must be a string of {least} to {most} characters")
    return value


def _optional_string(body: dict[str, Any], name: str, most: int) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    return _string(body, name, 1, most)


def _session_id(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    if not (1 <= len(session_id) <= 96):
        raise ValidationError("session id must have 1 to 96 characters")
    return session_id


def _date(text: str, name: str) -> str:
    """A date (``YYYY-MM-DD``) or an ISO 8601 time from a query, as the API takes it."""
    value = text.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            parsed = time.strptime(value, fmt)
        except ValueError:
            continue
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed)
    raise ValidationError(f"{name} must be a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)")


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=SECURITY_HEADERS,
    )


_STATUS: Final[tuple[tuple[type[HatchwayError], int], ...]] = (
    (NotJson, 415),
    (AuthError, 401),
    (AccessDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RequestTooLarge, 413),
    (Throttled, 429),
)
"""The console's one table from errors to HTTP statuses (the SigV4 API answers 400 for every
client error, as AWS JSON services do; a browser's API says which kind)."""


def _error(exc: HatchwayError) -> web.Response:
    status = exc.status
    if status < 500:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
    if status >= 500:
        log.error("console request failed: %s", exc.message)
        return _json({"error": "InternalServerError", "message": "internal error"}, status)
    return _json({"error": exc.code, "message": exc.message[:1024]}, status)
