"""The console's terminals: a session's client end kept in the server, and the browser's
WebSocket to it (docs/design.md, "Console terminal bridge").

The browser does not speak the data channel's binary frames. The server holds the client end
instead: a reliability ``Endpoint`` (sequence numbers, acknowledgements, retransmission, the
handshake) driven over an in-memory pipe to the gateway (``pipe``), exactly as the CLI's
session drives it over a network WebSocket. The browser talks to that end over a simple
WebSocket of its own (``/api/sessions/{id}/terminal``):

* server → browser, binary: 8-byte big-endian offset of the first byte, then terminal output
  (the session's byte stream, UTF-8 as the PTY wrote it).
* server → browser, text JSON: ``hello`` (session, node, how much input was taken, the first
  output offset still kept), ``inputAck``, ``notice``, ``ended`` (message, exit code).
* browser → server, binary: 8-byte offset of the first byte, then keyboard input (UTF-8).
* browser → server, text JSON: ``ack`` (output received up to an offset), ``resize`` (cols,
  rows), ``terminate``.

Nothing is lost across a browser's network loss or a reload: output is kept until the browser
acknowledges it (at most :data:`UNACKED_LIMIT` bytes: beyond that the bridge stops taking the
agent's output, which makes the agent hold it, docs/protocol.md §6.3), plus the last
:data:`REPLAY_KEEP` acknowledged bytes so that a reloaded page can redraw the screen. Input
carries its offset, so input the bridge already took is not taken twice when the browser sends
it again after a reconnect. A terminal without a browser for ``console_resume_window`` seconds
ends its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, Protocol

from aiohttp import WSMessage, WSMsgType

from hatchway.errors import HatchwayError, NotFound, RemoteProtocolError
from hatchway.protocol.events import ChannelClosedEvent, Notice, StreamData
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import (
    CLIENT_VERSION,
    HATCHWAY_MAX_PAYLOAD,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    answer_request,
    peer_is_hatchway,
)
from hatchway.protocol.payloads import (
    OpenDataChannelInput,
    SizePayload,
    decode_exit_code,
    encode_flag,
)
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.server.console.pipe import PipeEnd, pipe
from hatchway.transport.channel import ChannelDriver

__all__ = ["REPLAY_KEEP", "UNACKED_LIMIT", "Terminal", "Terminals"]

log = logging.getLogger(__name__)

UNACKED_LIMIT: Final = 1024 * 1024
"""Output bytes kept for a browser that has not acknowledged them; past this, the agent waits."""
REPLAY_KEEP: Final = 256 * 1024
"""Acknowledged output bytes kept to redraw a reloaded page."""
WRITE_CHUNK: Final = 64 * 1024
"""Output bytes per message to the page."""
MAX_INPUT: Final = 64 * 1024
"""Largest input message taken from the browser (a paste is sent in pieces)."""
EXIT_LINGER: Final = 5.0
"""After asking the agent to end the session, seconds to wait for it before closing."""
EXTENSIONS: Final = Extensions(
    max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True, no_payload_digest=True
)
OFFSET = struct.Struct(">Q")
ServeClient = Callable[[PipeEnd, str], Coroutine[Any, Any, None]]
"""The gateway's ``serve_client``: serves the client end given (the pipe's other end)."""
REPLACED_CLOSE: Final = 4000


class Terminal:
    """One console terminal: the client end of a session, and the browser attached to it.

    Args:
        serve_client: the gateway's ``serve_client`` (takes the other end of the pipe).
        on_idle_end: called when the terminal is over (removed from :class:`Terminals`).
    """

    def __init__(
        self,
        session_id: str,
        target: str,
        owner_id: str,
        token: str,
        serve_client: ServeClient,
        resume_window: float,
        on_over: Callable[[Terminal], None],
    ) -> None:
        self.session_id = session_id
        self.target = target
        self.owner_id = owner_id
        self._token = token
        self._serve_client = serve_client
        self._resume_window = resume_window
        self._on_over = on_over
        self.endpoint = Endpoint(Role.CLIENT, wall_clock=time.time)
        self._driver = ChannelDriver(self.endpoint)
        self._end: PipeEnd | None = None
        # Output: bytes [self._base, self._base + len(self._out)) are kept.
        self._out = bytearray()
        self._base = 0
        self._acked = 0  # output the browser confirmed
        self.input_taken = 0  # input bytes taken from the browser
        self.started = False
        self.ended = False
        self.exit_code: int | None = None
        self.message = ""
        self._size: tuple[int, int] | None = None
        self._early_input = b""
        self._size_sent = False
        self._page: _Page | None = None
        self._away_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._arm_away_timer()

    async def _run(self) -> None:
        mine, theirs = pipe(f"console:{self.session_id}")
        self._end = mine
        gateway: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._serve_client(theirs, self.session_id)
        )
        try:
            opened = OpenDataChannelInput(
                token_value=self._token,
                request_id=str(uuid.uuid4()),
                client_id=str(uuid.uuid4()),
                client_version=CLIENT_VERSION,
            )
            await mine.send_text(opened.to_json().decode())
            self._driver.attach(mine)
            async for message in mine:
                await self._receive(message)
            if not self.message:
                self.message = mine.close_reason or "the session has ended"
        except HatchwayError as exc:
            self.message = exc.message
        except Exception:
            log.exception("console terminal of %s failed", self.session_id)
            self.message = "the terminal failed"
        finally:
            self._driver.detach(mine)
            await mine.close()
            await self._driver.close()
            with contextlib.suppress(BaseException):
                await gateway
            self._finish()

    def _finish(self) -> None:
        self.ended = True
        if self._linger is not None:
            self._linger.cancel()
        if self._page is not None:
            self._page.post({"type": "ended", "message": self.message, "exitCode": self.exit_code})
        self._arm_away_timer()  # kept a while so that a reload still shows how it ended

    async def close(self) -> None:
        """End here: drop the pipe (the gateway keeps the session for its grace) and the
        browser. Idempotent."""
        if self._away_timer is not None:
            self._away_timer.cancel()
        if self._end is not None:
            await self._end.close()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
        page, self._page = self._page, None
        if page is not None:
            await page.ws.close(code=1001, message=b"the server is going away")

    def terminate(self) -> None:
        """Ask the agent to end the session (Flag TerminateSession, docs/protocol.md §5.4);
        close after :data:`EXIT_LINGER` seconds if it does not."""
        if self.ended:
            return
        with contextlib.suppress(HatchwayError):
            self.endpoint.send(
                PayloadType.FLAG,
                encode_flag(FlagValue.TERMINATE_SESSION),
                now=self._driver.now(),
            )
            self._driver.flush_soon()
        if self._linger is None and self._end is not None:
            end = self._end
            self._linger = asyncio.get_running_loop().call_later(
                EXIT_LINGER, lambda: asyncio.ensure_future(end.close())
            )

    # ---- the data channel ---------------------------------------------------------------

    async def _receive(self, message: bytes) -> None:
        try:
            events = self.endpoint.receive(message, now=self._driver.now())
        except RemoteProtocolError:
            return  # a corrupt frame is dropped; the agent sends it again
        for event in events:
            if isinstance(event, StreamData):
                try:
                    await self._on_stream(event.payload_type, event.payload)
                except RemoteProtocolError as exc:
                    self._notice(f"ignored a bad message: {exc.message}")
            elif isinstance(event, ChannelClosedEvent):
                self.message = event.payload.output or "the session has ended"
            elif isinstance(event, Notice):
                self._notice(event.payload.message)
        self._driver.flush_soon(acks=False)
        self._driver.acks_later()

    async def _on_stream(self, kind: int, payload: bytes) -> None:
        if kind == PayloadType.HANDSHAKE_REQUEST:
            request = HandshakeRequest.from_json(payload)
            response, _, _, negotiated = answer_request(request, supported=EXTENSIONS)
            self.endpoint.send(
                PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=self._driver.now()
            )
            self.endpoint.max_payload_size = negotiated.max_payload_size
            self.endpoint.payload_digest = not negotiated.no_payload_digest
            self.endpoint.flow_control = peer_is_hatchway(response)
        elif kind == PayloadType.HANDSHAKE_COMPLETE:
            complete = HandshakeComplete.from_json(payload)
            if complete.customer_message:
                self._notice(complete.customer_message)
            self._start()
        elif kind == PayloadType.EXIT_CODE:
            self.exit_code = decode_exit_code(payload)
        elif kind in (PayloadType.OUTPUT, PayloadType.STDERR):
            self._start()
            self._output(payload)

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self._send_size()

    def _output(self, data: bytes) -> None:
        self._out += data
        if self.output_end - self._acked >= UNACKED_LIMIT:
            self.endpoint.accepting = False  # the agent keeps the rest until the browser acks
        if self._page is not None:
            self._page.wake()

    @property
    def output_start(self) -> int:
        """Offset of the oldest output byte kept."""
        return self._base

    @property
    def output_end(self) -> int:
        """Offset just past the last output byte received."""
        return self._base + len(self._out)

    def output_from(self, offset: int, limit: int) -> bytes:
        """Kept output from ``offset`` (at least the oldest kept), at most ``limit`` bytes."""
        start = max(offset, self._base) - self._base
        return bytes(self._out[start : start + limit])

    def _send_size(self) -> None:
        if self.started and self._size is not None and not self.ended:
            cols, rows = self._size
            now = self._driver.now()
            self.endpoint.send(
                PayloadType.SIZE, SizePayload(cols=cols, rows=rows).to_json(), now=now
            )
            self._size_sent = True
            early, self._early_input = self._early_input, b""
            if early:  # typed before the shell had its size: right after it
                self.endpoint.send(PayloadType.OUTPUT, early, now=now)
            self._driver.flush_soon()

    # ---- the browser --------------------------------------------------------------------

    async def serve_browser(self, ws: BrowserSocket, offset: int) -> None:
        """Attach ``ws`` (replacing an older browser), replay output from ``offset`` (or the
        oldest kept), and take its input until it goes."""
        start = min(max(offset, self._base), self.output_end)
        old, page = self._page, _Page(ws, start)
        self._page = page
        if self._away_timer is not None:
            self._away_timer.cancel()
            self._away_timer = None
        if old is not None and not old.ws.closed:
            await old.ws.close(code=REPLACED_CLOSE, message=b"opened in another window")
        await ws.send_json(
            {
                "type": "hello",
                "sessionId": self.session_id,
                "target": self.target,
                "inputOffset": self.input_taken,
                "outputStart": start,
                "kept": self._base,
            }
        )
        if self.ended:
            page.post({"type": "ended", "message": self.message, "exitCode": self.exit_code})
        writer = asyncio.get_running_loop().create_task(page.write(self))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self._browser_input(page, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._browser_command(msg.data)
        finally:
            # No await here: aiohttp cancels this handler when the connection goes, and the
            # page must be let go (and the resume window started) even then.
            if self._page is page:
                self._page = None
                self._arm_away_timer()
            writer.cancel()

    def _browser_input(self, page: _Page, data: bytes) -> None:
        if len(data) < OFFSET.size or len(data) > OFFSET.size + MAX_INPUT or self.ended:
            return
        (offset,) = OFFSET.unpack_from(data)
        payload = data[OFFSET.size :]
        # Input already taken (sent again after a reconnect) is skipped; a gap is refused.
        if offset > self.input_taken:
            return
        fresh = bytes(payload[self.input_taken - offset :])
        if fresh:
            self.input_taken += len(fresh)
            if self._size_sent:
                self.endpoint.send(PayloadType.OUTPUT, fresh, now=self._driver.now())
                self._driver.flush_soon()
            else:  # the shell starts on the first size: input waits until then
                self._early_input += fresh
        page.post({"type": "inputAck", "offset": self.input_taken})

    def _browser_command(self, text: str) -> None:
        try:
            command = json.loads(text)
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        kind = command.get("type")
        if kind == "ack":
            self._browser_ack(command.get("offset"))
        elif kind == "resize":
            cols, rows = command.get("cols"), command.get("rows")
            if _dimension(cols) and _dimension(rows):
                assert isinstance(cols, int) and isinstance(rows, int)
                if self._size != (cols, rows):
                    self._size = (cols, rows)
                    self._send_size()
        elif kind == "terminate":
            self.terminate()

    def _browser_ack(self, offset: Any) -> None:
        end = self._base + len(self._out)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset <= self._acked:
            return
        self._acked = min(offset, end)
        # Keep REPLAY_KEEP acknowledged bytes for a reload to redraw the screen.
        drop = self._acked - REPLAY_KEEP - self._base
        if drop > 0:
            del self._out[:drop]
            self._base += drop
        if not self.endpoint.accepting and end - self._acked < UNACKED_LIMIT // 2:
            self.endpoint.accepting = True
            self._driver.flush_soon()

    def _notice(self, text: str) -> None:
        if self._page is not None:
            self._page.post({"type": "notice", "message": text})

    def _arm_away_timer(self) -> None:
        if self._away_timer is not None:
            self._away_timer.cancel()
        self._away_timer = asyncio.get_running_loop().call_later(
            self._resume_window, self._away_too_long
        )

    def _away_too_long(self) -> None:
        self._away_timer = None
        if self._page is not None:
            return
        if self.ended:
            self._on_over(self)
        else:
            log.info("console terminal of %s: no browser for a while; ending", self.session_id)
            self.message = "no browser came back within the resume window"
            self.terminate()


def _dimension(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000


class BrowserSocket(Protocol):
    """What the bridge uses of a browser's WebSocket: aiohttp's ``WebSocketResponse``, or a
    browser connected to another replica (``server.cluster.consolepipe``)."""

    @property
    def closed(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[WSMessage]: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_json(self, data: Any) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class _Page:
    """A browser page attached to a terminal, and its one writer: output from ``sent`` on,
    then the control messages queued for it. The data channel's reader only appends and wakes
    it, so a slow page never holds up the session (it is held back by :data:`UNACKED_LIMIT`
    instead)."""

    def __init__(self, ws: BrowserSocket, sent: int) -> None:
        self.ws = ws
        self.sent = sent
        self._messages: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def post(self, message: dict[str, Any]) -> None:
        self._messages.append(message)
        self._wake.set()

    async def write(self, terminal: Terminal) -> None:
        """Send until the page goes: output first (an ``ended`` always follows all output)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                self._wake.clear()
                if self.sent < terminal.output_end:
                    start = max(self.sent, terminal.output_start)
                    chunk = terminal.output_from(start, WRITE_CHUNK)
                    await self.ws.send_bytes(OFFSET.pack(start) + chunk)
                    self.sent = start + len(chunk)
                elif self._messages:
                    await self.ws.send_json(self._messages.popleft())
                else:
                    await self._wake.wait()


class Terminals:
    """The server's console terminals, by session id."""

    def __init__(
        self,
        serve_client: ServeClient,
        resume_window: float,
    ) -> None:
        self._serve_client = serve_client
        self._resume_window = resume_window
        self._terminals: dict[str, Terminal] = {}

    def open(self, session_id: str, target: str, owner_id: str, token: str) -> Terminal:
        """Connect a new terminal to a session StartSession just started (``token``)."""
        terminal = Terminal(
            session_id,
            target,
            owner_id,
            token,
            self._serve_client,
            self._resume_window,
            self._forget,
        )
        self._terminals[session_id] = terminal
        terminal.start()
        return terminal

    def get(self, session_id: str, owner_id: str) -> Terminal:
        """The user's terminal of ``session_id``.

        Raises:
            NotFound: none here (or it is someone else's).
        """
        terminal = self._terminals.get(session_id)
        if terminal is None or terminal.owner_id != owner_id:
            raise NotFound(f"No console terminal for session {session_id}.")
        return terminal

    def has(self, session_id: str) -> bool:
        """Whether a terminal of ``session_id`` is here (its client end is in this process)."""
        return session_id in self._terminals

    def _forget(self, terminal: Terminal) -> None:
        if self._terminals.get(terminal.session_id) is terminal:
            del self._terminals[terminal.session_id]

    async def close_all(self) -> None:
        terminals, self._terminals = list(self._terminals.values()), {}
        for terminal in terminals:
            await terminal.close()
