"""Hatchway's one exception tree.

::

    HatchwayError
    ├── ConfigError            bad settings, profile or command-line input
    ├── ProtocolError          a frame or message that breaks the wire protocol
    │   ├── LocalProtocolError     we tried to do something illegal (our bug)
    │   └── RemoteProtocolError    the peer sent something illegal
    ├── ChannelClosed          the session or channel has ended
    ├── AuthError              bad or missing credentials, signature, token
    ├── AccessDenied           authenticated, but not allowed
    ├── NotFound               no such session, node, activation, ...
    ├── Conflict               the request clashes with current state
    ├── Unavailable            the peer or service cannot be reached right now
    └── StoreError             the database failed

Each edge (HTTP API, data channel, CLI) has exactly one table that maps these to its own
vocabulary: AWS error types and HTTP statuses in ``server.errormap``, one-line messages and exit
codes in ``cli``.
"""

from __future__ import annotations


class HatchwayError(Exception):
    """Root of every error Hatchway raises on purpose.

    ``code`` is a stable machine-readable name (AWS error type where one exists).
    """

    code: str = "InternalServerError"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(HatchwayError):
    """Invalid configuration, profile or command-line input."""

    code = "ValidationException"


class ProtocolError(HatchwayError):
    """The wire protocol was broken."""

    code = "ProtocolError"


class LocalProtocolError(ProtocolError):
    """We attempted something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a malformed or illegal frame or message."""


class ChannelClosed(HatchwayError):
    """The channel or session has closed."""

    code = "ChannelClosed"


class AuthError(HatchwayError):
    """Authentication failed: bad signature, unknown key, expired or revoked token."""

    code = "UnrecognizedClientException"


class AccessDenied(HatchwayError):
    """The principal is authenticated but not allowed to do this."""

    code = "AccessDeniedException"


class NotFound(HatchwayError):
    """The named resource does not exist."""

    code = "DoesNotExistException"


class Conflict(HatchwayError):
    """The request conflicts with the current state of a resource."""

    code = "ConflictException"


class Unavailable(HatchwayError):
    """A peer or service is unreachable or not connected."""

    code = "ServiceUnavailable"


class StoreError(HatchwayError):
    """The database failed."""

    code = "InternalServerError"
