"""An interactive session from the client side (``hatchway start-session``).

Opens the data channel with the StartSession token (protocol.md §2), answers the agent's
handshake (negotiating Hatchway's extensions, protocol.md §6), then relays the terminal: raw
mode, window size before the first prompt and on every resize, stdin as Output frames, Output
frames to stdout. If the WebSocket drops it calls ResumeSession, re-dials and the reliability
layer resends what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.terminal import raw_mode, window_size
from hatchway.errors import AuthError, ChannelClosed, HatchwayError, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.events import ChannelClosedEvent, Notice, StreamData
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE, PayloadType
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
from hatchway.protocol.timing import PING_INTERVAL
from hatchway.transport.apiclient import ApiClient, ApiError
from hatchway.transport.backoff import Backoff
from hatchway.transport.channel import ChannelDriver

EOT = b"\x04"
READ_CHUNK = 65536
RECONNECT_FOR = 120.0  # seconds without a connection before giving up
EXIT_LINGER = 5.0  # after the exit code, wait this long for channel_closed


class ClientSession:
    """Drives one session's data channel and the local terminal."""

    def __init__(
        self,
        api: ApiClient,
        start: dict[str, Any],
        *,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.session_id: str = start["SessionId"]
        self._token: str = start["TokenValue"]
        self._url: str = start["StreamUrl"]
        self._in = stdin_fd
        self._out = stdout_fd
        self._clock = clock
        self._now = monotonic  # the reliability layer's timers
        self._client_id = str(uuid.uuid4())
        self.endpoint = Endpoint(Role.CLIENT, wall_clock=clock)
        self._driver = ChannelDriver(self.endpoint, monotonic)
        self._interactive = os.isatty(stdin_fd)
        self._started = False
        self._stdin_open = True
        self._reading = False
        self._eot_sent = False
        self._last_size: tuple[int, int] | None = None
        self.exit_code: int | None = None
        self._done = asyncio.Event()
        self.closed_message = ""
        self._thread_reader: asyncio.Task[None] | None = None

    # ---- public ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the session ends; returns the exit status to exit with."""
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            if self._interactive:
                stack.enter_context(raw_mode(self._in))
                loop.add_signal_handler(signal.SIGWINCH, self._send_size)
                stack.callback(loop.remove_signal_handler, signal.SIGWINCH)
            stack.callback(self._stop_reading)
            connection = loop.create_task(self._connection_loop())
            waiter = loop.create_task(self._done.wait())
            await asyncio.wait({connection, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if connection.done():
                connection.result()  # re-raise a fatal error
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection
            await self._driver.close()
        if self.exit_code is not None:
            return self.exit_code
        message = self.closed_message or "the session was terminated"
        sys.stderr.write(f"\r\nSession {self.session_id} ended: {message}\r\n")
        return ExitStatus.SESSION_ENDED

    # ---- the data channel -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        """Dial, relay, and after a drop resume: ResumeSession for a fresh token, re-dial.

        The first dial uses the StartSession token (re-dialled as is if the network fails, as
        AWS's plugin does). After a connection was up, every re-dial first asks ResumeSession,
        which also says when the session has meanwhile ended. Gives up after ``RECONNECT_FOR``
        seconds without a connection.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        backoff = Backoff(initial=0.1, maximum=3.0)
        ssl_ctx: ssl.SSLContext | None = (
            self._api.ssl_context() if self._url.startswith("wss:") else None
        )
        was_connected = False
        lost_at = self._clock()
        last_error = ""
        while not self._done.is_set():
            if self._clock() - lost_at > RECONNECT_FOR:
                raise ChannelClosed(f"lost the connection to the server: {last_error}")
            if was_connected:
                try:
                    await self._resume()
                except ApiError as exc:
                    if exc.status < 500:
                        raise  # a definite answer (unknown session, bad key): no point retrying
                    last_error = exc.message
                    await asyncio.sleep(backoff.next_delay())
                    continue
                except HatchwayError as exc:
                    last_error = exc.message  # server away: try again shortly
                    await asyncio.sleep(backoff.next_delay())
                    continue
                if self._done.is_set():
                    return
            try:
                ws = await connect(
                    self._url,
                    ssl=ssl_ctx,
                    max_size=DEFAULT_MAX_FRAME_SIZE,
                    ping_interval=PING_INTERVAL,
                    ping_timeout=PING_INTERVAL,
                    open_timeout=15,
                    close_timeout=1,
                    compression=None,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                last_error = str(exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            opened = OpenDataChannelInput(
                token_value=self._token,
                request_id=str(uuid.uuid4()),
                client_id=self._client_id,
                client_version=CLIENT_VERSION,
            )
            fast = FastSocket(ws)
            try:
                await ws.send(opened.to_json().decode())
                self._driver.attach(fast)
                self.endpoint.retransmit_all(self._now())
                await self._driver.flush()
                async for message in ws:
                    if isinstance(message, bytes):
                        backoff.reset()
                        await self._receive(message)
            except ConnectionClosed:
                pass
            finally:
                self._driver.detach(fast)
                # Also when run() cancels us once the session ended: the socket is closed
                # here, not left open to the garbage collector (a ResourceWarning).
                await ws.close()
            if self._done.is_set():
                return
            code, reason = ws.close_code, ws.close_reason
            if code == CloseCode.POLICY and not was_connected:
                raise AuthError(f"the server refused the session: {reason}")
            if code == CloseCode.REPLACED:
                raise ChannelClosed("another connection took over this session")
            if code == CloseCode.ENDED:
                self.closed_message = self.closed_message or reason or "session ended"
                self._done.set()
                return
            # Dropped (or, after a server restart, our token refused): resume and re-dial.
            was_connected = True
            lost_at = self._clock()
            last_error = reason or f"connection closed ({code})"

    async def _resume(self) -> None:
        """ResumeSession for a new token; an absent token means the session has ended."""
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(
            None, self._api.call, "ResumeSession", {"SessionId": self.session_id}
        )
        token = response.get("TokenValue")
        if not token:
            self.closed_message = "the session has ended"
            self._done.set()
            return
        self._token = token

    async def _receive(self, message: bytes) -> None:
        try:
            events = self.endpoint.receive(message, now=self._now())
        except RemoteProtocolError:
            return  # a corrupt frame is dropped; the agent resends it
        for event in events:
            try:
                if isinstance(event, StreamData):
                    self._on_stream(event)
                elif isinstance(event, ChannelClosedEvent):
                    self.closed_message = event.payload.output
                    self._done.set()
                elif isinstance(event, Notice):  # e.g. the node went away (§9.6)
                    sys.stderr.write(f"\r\nhatchway: {event.payload.message}\r\n")
            except RemoteProtocolError as exc:
                # Already acknowledged, so it will not come again: drop this payload only.
                sys.stderr.write(f"\r\nhatchway: ignored a bad message: {exc.message}\r\n")
        if not self._reading and self._started and self._stdin_open:
            self._start_reading()
        await self._driver.flush(acks=False)  # data (e.g. handshake) now
        self._driver.acks_later()

    def _on_stream(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.OUTPUT:
            if not self._started:
                self._start_terminal()  # an agent that skipped the handshake (§6.1)
            _write_all(self._out, event.payload)
        elif kind == PayloadType.STDERR:
            _write_all(2, event.payload)
        elif kind == PayloadType.EXIT_CODE:
            self.exit_code = decode_exit_code(event.payload)
            asyncio.get_running_loop().call_later(EXIT_LINGER, self._done.set)
        elif kind == PayloadType.HANDSHAKE_REQUEST:
            request = HandshakeRequest.from_json(event.payload)
            supported = Extensions(max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True)
            response, _type, _props, negotiated = answer_request(request, supported=supported)
            self.endpoint.send(PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=self._now())
            self.endpoint.max_payload_size = negotiated.max_payload_size
        elif kind == PayloadType.HANDSHAKE_COMPLETE:
            complete = HandshakeComplete.from_json(event.payload)
            if complete.customer_message:
                sys.stderr.write(complete.customer_message + "\r\n")
            self._start_terminal()

    # ---- the terminal ---------------------------------------------------------------------

    def _start_terminal(self) -> None:
        if self._started:
            return
        self._started = True
        self._send_size()
        self._start_reading()

    def _send_size(self) -> None:
        if not self._started:
            return
        size = window_size(self._in if self._interactive else self._out)
        if size == self._last_size:
            return
        self._last_size = size
        payload = SizePayload(cols=size[1], rows=size[0]).to_json()
        self.endpoint.send(PayloadType.SIZE, payload, now=self._now())
        self._driver.flush_soon()

    def _start_reading(self) -> None:
        if self._reading or not self._stdin_open or self._done.is_set():
            return
        loop = asyncio.get_running_loop()
        self._reading = True
        if self._thread_reader is not None:
            return
        try:
            loop.add_reader(self._in, self._on_input)
        except PermissionError:  # a regular file: epoll cannot watch it
            self._thread_reader = loop.create_task(self._read_in_thread())

    def _stop_reading(self) -> None:
        if self._reading and self._thread_reader is None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._in)
        self._reading = False

    def _on_input(self) -> None:
        if self.endpoint.send_window() * self.endpoint.max_payload_size < READ_CHUNK:
            self._stop_reading()  # backpressure until acks open the window
            return
        try:
            data = os.read(self._in, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._input(data)

    def _input(self, data: bytes) -> None:
        if data:
            self.endpoint.send(PayloadType.OUTPUT, data, now=self._now())
        else:
            self._stop_reading()
            self._stdin_open = False
            if not self._eot_sent:  # end of input: one end-of-transmission, then wait
                self._eot_sent = True
                self.endpoint.send(PayloadType.OUTPUT, EOT, now=self._now())
        self._driver.flush_soon()

    async def _read_in_thread(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stdin_open:
            if self.endpoint.send_window() * self.endpoint.max_payload_size < READ_CHUNK:
                await asyncio.sleep(0.01)
                continue
            data = await loop.run_in_executor(None, os.read, self._in, READ_CHUNK)
            self._input(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[n:]


class FastSocket:
    """A ``websockets`` client connection with a synchronous send for the keystroke path.

    ``send_now`` does what ``Connection.send`` does for a binary message when the connection
    is open and not applying backpressure — frame it in the sans-I/O protocol and write it to
    the transport — without a coroutine and a task switch per keystroke. ``can_send_now``
    says when that holds; otherwise the driver uses ``send``.
    """

    def __init__(self, conn: Any) -> None:
        from websockets.protocol import State

        self._conn = conn
        self._open = State.OPEN

    def can_send_now(self) -> bool:
        conn = self._conn
        return bool(conn.protocol.state is self._open and not conn.paused)

    def send_now(self, frames: list[bytes]) -> None:
        conn = self._conn
        for frame in frames:
            conn.protocol.send_binary(frame)
        conn.send_data()

    async def send(self, data: bytes) -> None:
        await self._conn.send(data)
