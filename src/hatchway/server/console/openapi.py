"""The OpenAPI 3.1 document of the console's API (served at ``/api/openapi.json``).

Tests check that the document and the routes agree (every route documented, every documented
route served) and send generated requests to every operation (no 5xx, answers as documented).
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _ANY_OBJECT}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request",
        401: "Not signed in, or wrong credentials",
        403: "Not allowed (policy), or CSRF token missing or wrong",
        404: "No such thing",
        409: "Conflicts with the current state",
        413: "Body too large",
        415: "Not JSON",
        429: "Too many failed attempts; wait",
    }
    return {str(s): _answer(texts[s], _ERROR) for s in statuses}


def _json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                }
            }
        },
    }


_CSRF: list[dict[str, list[str]]] = [{"cookie": [], "csrf": []}]
_COOKIE: list[dict[str, list[str]]] = [{"cookie": []}]
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 96},
}
_CODE = {"code": {"type": "string", "minLength": 1, "maxLength": 16}}


def openapi_document(*, audit: bool = False) -> dict[str, Any]:
    """The document; ``audit`` adds ``/api/audit`` (when the server has the audit trail)."""
    signed = _errors(401)
    posting = _errors(400, 401, 403, 413, 415)
    paths: dict[str, Any] = {
        "/api/login": {
            "post": {
                "operationId": "signIn",
                "summary": "Sign in with user name and password (and a TOTP code if enrolled)",
                "security": [],
                "requestBody": _json_body(
                    {
                        "username": {"type": "string", "minLength": 1, "maxLength": 64},
                        "password": {"type": "string", "minLength": 1, "maxLength": 128},
                        "code": {"type": "string", "maxLength": 16},
                    },
                    ["username", "password"],
                ),
                "responses": {
                    "200": _answer("Signed in; the cookies are set"),
                    **_errors(400, 401, 413, 415, 429),
                },
            }
        },
        "/api/logout": {
            "post": {
                "operationId": "signOut",
                "security": _CSRF,
                "responses": {"200": _answer("Signed out"), **posting},
            }
        },
        "/api/me": {
            "get": {
                "operationId": "me",
                "summary": "Who is signed in and what they may do",
                "security": _COOKIE,
                "responses": {"200": _answer("The user and permissions"), **signed},
            }
        },
        "/api/mfa/enrol": {
            "post": {
                "operationId": "enrolMfa",
                "summary": "A new TOTP secret, used once confirmed",
                "security": _CSRF,
                "responses": {"200": _answer("secret and otpauth URI"), **posting, **_errors(409)},
            }
        },
        "/api/mfa/confirm": {
            "post": {
                "operationId": "confirmMfa",
                "security": _CSRF,
                "requestBody": _json_body(_CODE, ["code"]),
                "responses": {"200": _answer("Enabled"), **posting, **_errors(404, 429)},
            }
        },
        "/api/mfa/disable": {
            "post": {
                "operationId": "disableMfa",
                "security": _CSRF,
                "requestBody": _json_body(_CODE, ["code"]),
                "responses": {"200": _answer("Disabled"), **posting, **_errors(404, 429)},
            }
        },
        "/api/nodes": {
            "get": {
                "operationId": "listNodes",
                "summary": "Managed nodes (DescribeInstanceInformation) with CanStartSession",
                "security": _COOKIE,
                "responses": {"200": _answer("Nodes"), **signed, **_errors(403)},
            }
        },
        "/api/sessions": {
            "get": {
                "operationId": "listSessions",
                "summary": "Sessions (DescribeSessions) with CanTerminate/CanPlay/CanAttach",
                "security": _COOKIE,
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["Active", "History"]},
                    },
                    *(
                        {"name": n, "in": "query", "schema": {"type": "string", "maxLength": 400}}
                        for n in ("target", "owner", "status", "after", "before", "nextToken")
                    ),
                ],
                "responses": {"200": _answer("Sessions"), **_errors(400, 401, 403)},
            },
            "post": {
                "operationId": "startSession",
                "summary": "StartSession, with a terminal bridge for the browser",
                "security": _CSRF,
                "requestBody": _json_body(
                    {
                        "target": {"type": "string", "minLength": 1, "maxLength": 400},
                        "documentName": {"type": "string", "maxLength": 128},
                        "reason": {"type": "string", "maxLength": 256},
                        "parameters": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "array",
                                "items": {"type": "string"},
                            },
                        },
                    },
                    ["target"],
                ),
                "responses": {
                    "200": _answer("Started: SessionId, Target"),
                    **posting,
                    **_errors(404),
                },
            },
        },
        "/api/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "security": _COOKIE,
                "parameters": [_SESSION_ID],
                "responses": {"200": _answer("The session"), **_errors(400, 401, 403, 404)},
            }
        },
        "/api/sessions/{session_id}/terminate": {
            "post": {
                "operationId": "terminateSession",
                "security": _CSRF,
                "parameters": [_SESSION_ID],
                "responses": {"200": _answer("Terminated"), **posting, **_errors(404)},
            }
        },
        "/api/sessions/{session_id}/recording": {
            "get": {
                "operationId": "getRecording",
                "summary": "The session's recording (asciicast v2), via GetSessionRecording",
                "security": _COOKIE,
                "parameters": [_SESSION_ID],
                "responses": {
                    "200": {
                        "description": "asciicast v2",
                        "content": {"application/x-asciicast": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/api/sessions/{session_id}/terminal": {
            "get": {
                "operationId": "terminal",
                "summary": "WebSocket to the session's console terminal (docs/design.md)",
                "security": _COOKIE,
                "parameters": [
                    _SESSION_ID,
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol"},
                    **_errors(400, 401, 403, 404),
                },
            }
        },
    }
    if audit:
        paths["/api/audit"] = {
            "get": {
                "operationId": "lookupEvents",
                "summary": "The audit trail (LookupEvents)",
                "security": _COOKIE,
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string", "maxLength": 400}}
                    for n in ("user", "action", "resource", "after", "before", "nextToken")
                ],
                "responses": {"200": _answer("Events"), **_errors(400, 401, 403)},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hatchway console API",
            "version": "1",
            "description": "The web console's API: every call runs as the signed-in user "
            "through the same operations and IAM-style policies as the SigV4 API.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "__Host-hatchway-session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["error", "message"],
                }
            },
        },
    }
