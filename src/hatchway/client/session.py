"""An interactive session from the client side (``hatchway start-session``).

Opens the data channel with the StartSession token (docs/protocol.md §3.1), answers the agent's
handshake (negotiating Hatchway's extensions, §7.6), then relays the terminal: raw mode, window
size before the first prompt and on every resize, stdin as Output frames, Output frames to
stdout. If the WebSocket drops it calls ResumeSession, re-dials and the reliability layer
resends what was not acknowledged (§9.4).

Everything it talks to is injected, so that it runs in-process in tests: the socket dialer
(:data:`Dial`), the API it asks for a fresh token (:class:`SessionApi`), the terminal's file
descriptors; its timers run on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.output import escape_controls
from hatchway.client.terminal import raw_mode, window_size
from hatchway.errors import (
    AuthError,
    ChannelClosed,
    HatchwayError,
    RemoteProtocolError,
    Unavailable,
)
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.events import ChannelClosedEvent, Notice, StreamData
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import (
    CLIENT_VERSION,
    HATCHWAY_MAX_PAYLOAD,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    answer_request,
)
from hatchway.protocol.payloads import OpenDataChannelInput, SizePayload, decode_exit_code
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.transport.apiclient import ApiClient, ApiError
from hatchway.transport.backoff import Backoff
from hatchway.transport.channel import ChannelDriver
from hatchway.transport.sansio_socket import connect

if TYPE_CHECKING:
    from hatchway.transport.socket import Socket

    class DataSocket(Socket, Protocol):
        """The client's end of a data channel: a :class:`Socket` whose first message is text
        (the open message, docs/protocol.md §3.1)."""

        async def send_text(self, text: str) -> None: ...


__all__ = ["EOT", "EXIT_LINGER", "RECONNECT_FOR", "ApiSessions", "ClientSession", "SessionApi"]

EOT = b"\x04"
READ_CHUNK = 65536
RECONNECT_FOR = 120.0  # seconds without a connection before giving up
EXIT_LINGER = 5.0  # after the exit code, wait this long for channel_closed

#: Opens the data channel's WebSocket: ``dial(stream_url, ssl_context)``. Raises
#: :class:`~hatchway.errors.Unavailable` for a connection that may work a moment later; any
#: other :class:`~hatchway.errors.HatchwayError` ends the session.
Dial = Callable[[str, "ssl.SSLContext | None"], Awaitable["DataSocket"]]


class SessionApi(Protocol):
    """What a running session needs of the API."""

    async def resume_session(self, session_id: str) -> str | None:
        """ResumeSession: a fresh token, or None when the session has ended meanwhile.

        Raises:
            ApiError: the server's answer; below HTTP 500 it is final.
            HatchwayError: the server could not be asked (tried again).
        """
        ...


class ApiSessions:
    """:class:`SessionApi` over the signed API client (whose blocking call runs in a thread)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def resume_session(self, session_id: str) -> str | None:
        response = await asyncio.to_thread(
            self._api.call, "ResumeSession", {"SessionId": session_id}
        )
        token = response.get("TokenValue")
        return token if isinstance(token, str) and token else None


@dataclass(frozen=True, slots=True)
class StartedSession:
    """The StartSession answer (docs/protocol.md §2.2), parsed at the edge."""

    session_id: str
    token: str
    stream_url: str

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> StartedSession:
        values = [response.get(key) for key in ("SessionId", "TokenValue", "StreamUrl")]
        if not all(isinstance(value, str) and value for value in values):
            raise RemoteProtocolError("StartSession answered without SessionId, token or URL")
        session_id, token, stream_url = (str(value) for value in values)
        return cls(session_id, token, stream_url)


class ClientSession:
    """Drives one session's data channel and the local terminal.

    Args:
        started: what StartSession answered.
        api: asks for a fresh token after a drop (:class:`ApiSessions` in the CLI).
        dial: opens the WebSocket (:func:`hatchway.transport.sansio_socket.connect`).
        ssl_context: verifies the server of a ``wss://`` stream URL (the profile's CA).
        stdin_fd, stdout_fd, stderr_fd: the terminal. With a terminal on ``stdin_fd`` the
            session runs it in raw mode and follows its size; otherwise stdin is piped input,
            ended with one end-of-transmission.
        wall_clock: stamps CreatedDate on frames (the timers use the event loop's clock).
    """

    def __init__(
        self,
        started: StartedSession,
        *,
        api: SessionApi,
        dial: Dial = connect,
        ssl_context: ssl.SSLContext | None = None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.session_id = started.session_id
        self._token = started.token
        self._url = started.stream_url
        self._api = api
        self._dial = dial
        self._ssl = ssl_context
        self._in = stdin_fd
        self._out = stdout_fd
        self._err = stderr_fd
        self._client_id = str(uuid.uuid4())
        self.endpoint = Endpoint(Role.CLIENT, wall_clock=wall_clock)
        self._driver = ChannelDriver(self.endpoint)  # timers on the loop's clock
        self._interactive = os.isatty(stdin_fd)
        self._started = False
        self._stdin_open = True
        self._reading = False
        self._tasks: asyncio.TaskGroup | None = None  # run()'s
        self._file_reader: asyncio.Task[None] | None = None
        self._may_read = asyncio.Event()
        self._eot_sent = False
        self._last_size: tuple[int, int] | None = None
        self._last_error = ""
        self._linger: asyncio.TimerHandle | None = None
        self._done = asyncio.Event()
        self.exit_code: int | None = None
        self.closed_message = ""

    @classmethod
    def from_start(
        cls,
        api: ApiClient,
        response: Mapping[str, Any],
        *,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> ClientSession:
        """The session StartSession ``response`` started, with the real dialer and
        ResumeSession through ``api`` (and its TLS context)."""
        return cls(
            StartedSession.from_response(response),
            api=ApiSessions(api),
            ssl_context=api.ssl_context(),
            stdin_fd=stdin_fd,
            stdout_fd=stdout_fd,
            stderr_fd=stderr_fd,
        )

    # ---- public ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the session ends; returns the exit status to exit with.

        The terminal is restored however it ends.

        Raises:
            HatchwayError: the session could not go on (refused, replaced, no connection
                for :data:`RECONNECT_FOR` seconds, ResumeSession refused).
        """
        try:
            with self._terminal():
                try:
                    async with asyncio.TaskGroup() as self._tasks:
                        connection = self._tasks.create_task(self._connection_loop())
                        await self._done.wait()
                        connection.cancel()  # it closes its socket on the way out
                        if self._file_reader is not None:
                            self._file_reader.cancel()
                except* HatchwayError as group:
                    raise group.exceptions[0] from None
        finally:
            if self._linger is not None:
                self._linger.cancel()
            await self._driver.close()
        if self.exit_code is not None:
            return self.exit_code
        message = self.closed_message or "the session was terminated"
        self._print(f"\r\nSession {self.session_id} ended: {message}\r\n")
        return ExitStatus.SESSION_ENDED

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        """Raw mode and resize notifications for a terminal; stop reading stdin on the way
        out."""
        with contextlib.ExitStack() as stack:
            if self._interactive:
                stack.enter_context(raw_mode(self._in))
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGWINCH, self._send_size)
                stack.callback(loop.remove_signal_handler, signal.SIGWINCH)
            stack.callback(self._stop_reading)
            yield

    # ---- the data channel -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        """Connect, relay until the connection ends, and reconnect, until the session ends.

        The first dial uses the StartSession token (re-dialled as is if the network fails, as
        AWS's plugin does). After a connection was up, every re-dial first asks ResumeSession,
        which also says when the session has meanwhile ended (docs/protocol.md §9.4).
        """
        backoff = Backoff(initial=0.1, maximum=3.0)
        dropped = False  # a connection has ended: ResumeSession before the next dial
        accepted = False  # the server has taken a connection's token (it relayed something)
        try:
            while True:
                try:
                    async with asyncio.timeout(RECONNECT_FOR):
                        ws = await self._reconnect(backoff, resume=dropped)
                except TimeoutError as exc:
                    raise ChannelClosed(
                        f"lost the connection to the server: {self._last_error}"
                    ) from exc
                if ws is None:
                    self.closed_message = "the session has ended"
                    return
                try:
                    accepted = await self._relay(ws, backoff) or accepted
                finally:
                    await ws.close()
                code, reason = ws.close_code, ws.close_reason
                if code == CloseCode.POLICY and not accepted:
                    raise AuthError(f"the server refused the session: {reason}")
                if code == CloseCode.REPLACED:
                    raise ChannelClosed("another connection took over this session")
                if code == CloseCode.ENDED:
                    self.closed_message = self.closed_message or reason or "session ended"
                    return
                # Dropped, or our token refused once it had worked (the server restarted).
                dropped = True
                self._last_error = reason or f"connection closed ({CloseCode.describe(code)})"
        finally:
            self._done.set()

    async def _reconnect(self, backoff: Backoff, *, resume: bool) -> DataSocket | None:
        """A newly opened data channel, after ResumeSession if ``resume``; None if the session
        has ended meanwhile. Tries until it succeeds (the caller bounds the time)."""
        while True:
            try:
                if resume and not await self._resume():
                    return None
                ws = await self._dial(self._url, self._ssl)
            except Unavailable as exc:
                self._last_error = exc.message
                await asyncio.sleep(backoff.next_delay())
                continue
            opened = OpenDataChannelInput(
                token_value=self._token,
                request_id=str(uuid.uuid4()),
                client_id=self._client_id,
                client_version=CLIENT_VERSION,
            )
            try:
                await ws.send_text(opened.to_json().decode())
            except BaseException:  # cancelled: the session ended meanwhile
                ws.abort()
                raise
            return ws

    async def _resume(self) -> bool:
        """ResumeSession: True with a fresh token to dial with, False if the session has ended.

        Raises:
            Unavailable: no answer now (the server is away or failed): try again.
            HatchwayError: a definite refusal (unknown session, bad key): no point retrying.
        """
        try:
            token = await self._api.resume_session(self.session_id)
        except ApiError as exc:
            if exc.status < 500:
                raise
            raise Unavailable(exc.message) from exc
        if token is None:
            return False
        self._token = token
        return True

    async def _relay(self, ws: DataSocket, backoff: Backoff) -> bool:
        """Use ``ws`` until it closes: resend what is unacknowledged, then handle each frame.

        Returns whether any frame arrived (proof that the server took the token).
        """
        received = False
        self._driver.attach(ws)
        try:
            self.endpoint.retransmit_all(self._driver.now())
            # Never wait for writing before reading: the peer's acknowledgements of a long
            # resend must keep being read, or both ends can wait on each other.
            self._driver.flush_soon()
            async for message in ws:
                if not received:
                    received = True
                    backoff.reset()
                await self._receive(message)
        finally:
            self._driver.detach(ws)
        return received

    async def _receive(self, message: bytes) -> None:
        try:
            events = self.endpoint.receive(message, now=self._driver.now())
        except RemoteProtocolError:
            return  # a corrupt frame is dropped; the agent resends it
        for event in events:
            try:
                if isinstance(event, StreamData):
                    self._on_stream(event)
                elif isinstance(event, ChannelClosedEvent):
                    self.closed_message = escape_controls(event.payload.output)
                    self._done.set()
                elif isinstance(event, Notice):  # e.g. the node went away (§9.6)
                    self._print(f"\r\nhatchway: {escape_controls(event.payload.message)}\r\n")
            except RemoteProtocolError as exc:
                # Already acknowledged, so it will not come again: drop this payload only.
                self._print(f"\r\nhatchway: ignored a bad message: {exc.message}\r\n")
        if not self._reading and self._started and self._stdin_open:
            self._start_reading()  # acknowledgements may have opened the send window
        self._driver.flush_soon(acks=False)  # data (e.g. the handshake response) now
        self._driver.acks_later()

    def _on_stream(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.OUTPUT:
            if not self._started:
                self._start_terminal()  # an agent that skipped the handshake (§7.1)
            _write_all(self._out, event.payload)
        elif kind == PayloadType.STDERR:
            _write_all(self._err, event.payload)
        elif kind == PayloadType.EXIT_CODE:
            self.exit_code = decode_exit_code(event.payload)
            if self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(EXIT_LINGER, self._done.set)
        elif kind == PayloadType.HANDSHAKE_REQUEST:
            request = HandshakeRequest.from_json(event.payload)
            supported = Extensions(max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True)
            response, _type, _props, negotiated = answer_request(request, supported=supported)
            self.endpoint.send(
                PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=self._driver.now()
            )
            self.endpoint.max_payload_size = negotiated.max_payload_size
        elif kind == PayloadType.HANDSHAKE_COMPLETE:
            complete = HandshakeComplete.from_json(event.payload)
            if complete.customer_message:
                self._print(escape_controls(complete.customer_message) + "\r\n")
            self._start_terminal()

    # ---- the terminal ---------------------------------------------------------------------

    def _start_terminal(self) -> None:
        if self._started:
            return
        self._started = True
        self._send_size()  # before the first input: the agent starts the shell on it
        self._start_reading()

    def _send_size(self) -> None:
        if not self._started:
            return
        size = window_size(self._in if self._interactive else self._out)
        if size == self._last_size:
            return
        self._last_size = size
        payload = SizePayload(cols=size[1], rows=size[0]).to_json()
        self.endpoint.send(PayloadType.SIZE, payload, now=self._driver.now())
        self._driver.flush_soon()

    def _window_open(self) -> bool:
        return self.endpoint.send_window() * self.endpoint.max_payload_size >= READ_CHUNK

    def _start_reading(self) -> None:
        if self._reading or not self._stdin_open or self._done.is_set():
            return
        if not self._window_open():
            return  # backpressure: acknowledgements will open the window again
        self._reading = True
        if self._file_reader is not None:
            self._may_read.set()
            return
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(self._in, self._on_input)
        except PermissionError:  # a regular file (or /dev/null): epoll cannot watch it
            self._may_read.set()
            assert self._tasks is not None  # reading starts only while run() runs
            self._file_reader = self._tasks.create_task(self._read_file())

    def _stop_reading(self) -> None:
        if self._reading and self._file_reader is None:
            with contextlib.suppress(ValueError, OSError):  # the loop may be closing
                asyncio.get_running_loop().remove_reader(self._in)
        self._reading = False
        self._may_read.clear()

    def _on_input(self) -> None:
        if not self._window_open():
            self._stop_reading()  # backpressure until acks open the window
            return
        try:
            data = os.read(self._in, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._input(data)

    async def _read_file(self) -> None:
        """Read a stdin that cannot be polled; such a file never blocks a read for long."""
        while self._stdin_open:
            await self._may_read.wait()
            if not self._window_open():
                self._stop_reading()
                continue
            try:
                data = os.read(self._in, READ_CHUNK)
            except OSError:
                data = b""
            self._input(data)
            await asyncio.sleep(0)  # let received frames (acknowledgements) in

    def _input(self, data: bytes) -> None:
        if data:
            self.endpoint.send(PayloadType.OUTPUT, data, now=self._driver.now())
        else:
            self._stop_reading()
            self._stdin_open = False
            if not self._eot_sent:  # end of input: one end-of-transmission, then wait
                self._eot_sent = True
                self.endpoint.send(PayloadType.OUTPUT, EOT, now=self._driver.now())
        self._driver.flush_soon()

    def _print(self, text: str) -> None:
        _write_all(self._err, text.encode("utf-8", "replace"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
