"""``start-session --document``: the handler a document's session type calls for, and the
``--parameters`` syntax.

The session type and properties arrive in the agent's HandshakeRequest (docs/protocol.md §7.3),
so the handler is chosen then, as AWS's plugin does: ``Standard_Stream`` and
``InteractiveCommands`` run the terminal, ``NonInteractiveCommands`` the command handler,
``Port`` the port forwarder when ``properties.type`` is ``LocalPortForwarding`` and stdio
otherwise (§8.2). An agent that sends no handshake runs a shell (§7.1).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions, SessionType

if TYPE_CHECKING:
    from hatchway.client.session import ClientSession, Handler

__all__ = ["DocumentHandler", "parse_parameters"]

LOCAL_PORT_FORWARDING = "LocalPortForwarding"


def parse_parameters(text: str) -> dict[str, list[str]]:
    """StartSession ``Parameters`` from ``key=value[,key=value...]`` (a key given twice gets
    both values) or from JSON ``{"key": ["value", ...]}`` (a plain string value is taken as a
    one-element list).

    Raises:
        ValueError: neither form, with the reason.
    """
    text = text.strip()
    result: dict[str, list[str]] = {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise ValueError("JSON parameters must be an object")
        for key, item in value.items():
            items = [item] if isinstance(item, str) else item
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise ValueError(f"parameter {key!r} must be a string or a list of strings")
            result[key] = list(items)
        return result
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value")
        result.setdefault(key, []).append(value)
    return result


class DocumentHandler:
    """Chooses the handler for the session type the agent announces, then delegates to it.

    Args:
        stdin_fd, stdout_fd, stderr_fd: the local streams the chosen handler uses.
    """

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True, no_payload_digest=True
    )

    def __init__(self, *, stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2) -> None:
        self._fds = {"stdin_fd": stdin_fd, "stdout_fd": stdout_fd, "stderr_fd": stderr_fd}
        self._channel: ClientSession | None = None
        self._stack: contextlib.ExitStack | None = None
        self.chosen: Handler | None = None

    @property
    def ended_status(self) -> int | None:
        return None if self.chosen is None else self.chosen.ended_status

    def bind(self, channel: ClientSession) -> None:
        self._channel = channel

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        with contextlib.ExitStack() as self._stack:
            yield

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        handler = self._choose(session_type, properties)
        handler.on_handshake(session_type, properties, agent_version)

    def start(self) -> None:
        self._choose(SessionType.STANDARD_STREAM, None).start()

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if self.chosen is not None:
            self.chosen.on_stream(payload_type, payload)

    def on_window(self) -> None:
        if self.chosen is not None:
            self.chosen.on_window()

    def _choose(self, session_type: str, properties: Any) -> Handler:
        """The handler for ``session_type``, made and set up the first time."""
        if self.chosen is not None:
            return self.chosen
        handler = self._make(session_type, properties)
        assert self._channel is not None and self._stack is not None, "run() first"
        handler.bind(self._channel)
        self._stack.enter_context(handler.local())
        self.chosen = handler
        return handler

    def _make(self, session_type: str, properties: Any) -> Handler:
        stdin, stdout, stderr = (self._fds[k] for k in ("stdin_fd", "stdout_fd", "stderr_fd"))
        if session_type == SessionType.NON_INTERACTIVE_COMMANDS:
            from hatchway.client.command import CommandHandler

            return CommandHandler(stdin_fd=stdin, stdout_fd=stdout, stderr_fd=stderr)
        if session_type == SessionType.PORT:
            props = properties if isinstance(properties, dict) else {}
            if props.get("type") == LOCAL_PORT_FORWARDING:
                from hatchway.client.portforward import PortForwardHandler

                return PortForwardHandler.from_properties(props, stdout_fd=stdout)
            from hatchway.client.stdio import StdioHandler

            return StdioHandler(stdin_fd=stdin, stdout_fd=stdout)
        from hatchway.client.shell import ShellHandler

        return ShellHandler(stdin_fd=stdin, stdout_fd=stdout, stderr_fd=stderr)
