"""A session's data channel from the client side, whatever runs over it.

Opens the data channel with the StartSession token (docs/protocol.md §3.1), answers the agent's
handshake (negotiating Hatchway's extensions, §7.6), reads the exit code (§7.8) and the end of
the session (§9.1), and if the WebSocket drops it calls ResumeSession, re-dials and the
reliability layer resends what was not acknowledged (§9.4). What the session carries is a
:class:`Handler`'s business: the terminal (:mod:`hatchway.client.shell`), a command's output
(:mod:`hatchway.client.exec`), stdin/stdout (:mod:`hatchway.client.stdio`) or forwarded TCP
connections (:mod:`hatchway.client.portforward`). A handler talks back through the session's
:class:`Channel` methods.

Everything the session talks to is injected, so that it runs in-process in tests: the socket
dialer (:data:`Dial`), the API it asks for a fresh token (:class:`SessionApi`); its timers run on
the event loop's clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.output import escape_controls
from hatchway.client.streams import write_all
from hatchway.errors import (
    AuthError,
    ChannelClosed,
    HatchwayError,
    RemoteProtocolError,
    Unavailable,
)
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.encryption import (
    DATA_KEY_BYTES,
    SEALED_BY_AGENT,
    SEALED_BY_CLIENT,
    EncryptionChallenge,
    KmsEncryptionRequest,
    KmsEncryptionResult,
    encryption_context,
)
from hatchway.protocol.events import ChannelClosedEvent, Notice, StreamData
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import (
    CLIENT_VERSION,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    answer_request,
    kms_request_of,
    peer_is_hatchway,
)
from hatchway.protocol.payloads import OpenDataChannelInput, decode_exit_code, encode_flag
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.transport.apiclient import ApiClient, ApiError
from hatchway.transport.backoff import Backoff
from hatchway.transport.channel import ChannelDriver
from hatchway.transport.sansio_socket import connect

if TYPE_CHECKING:
    from hatchway.auth.sessioncipher import SessionCipher
    from hatchway.transport.socket import Socket

    class DataSocket(Socket, Protocol):
        """The client's end of a data channel: a :class:`Socket` whose first message is text
        (the open message, docs/protocol.md §3.1)."""

        async def send_text(self, text: str) -> None: ...


__all__ = [
    "END_OF_INPUT",
    "EXIT_LINGER",
    "READ_CHUNK",
    "RECONNECT_FOR",
    "ApiSessions",
    "ClientSession",
    "Handler",
    "SessionApi",
    "StartedSession",
]

READ_CHUNK = 65536  # bytes a handler reads at once from a local source
RECONNECT_FOR = 120.0  # seconds without a connection before giving up
EXIT_LINGER = 5.0  # after the exit code (or our TerminateSession flag), wait for channel_closed
#: Hatchway's Flag value for the end of the client's input (docs/protocol.md §5.4): the agent
#: closes the command's stdin (NonInteractiveCommands) or half-closes the destination
#: connection (Port, stdio mode). Sent only to an agent that negotiated Hatchway's extensions.
END_OF_INPUT: Final = int(FlagValue.END_OF_INPUT)

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


@runtime_checkable
class DataKeyApi(Protocol):
    """The key service as the user reaches it, for end-to-end encrypted sessions
    (docs/protocol.md §7.9)."""

    async def generate_data_key(
        self, key_id: str, context: Mapping[str, str]
    ) -> tuple[bytes, bytes]:
        """GenerateDataKey of :data:`~hatchway.protocol.encryption.DATA_KEY_BYTES` bytes under
        ``key_id`` with this encryption context: (plaintext, wrapped blob).

        Raises:
            HatchwayError: the key service's refusal (``AccessDeniedException`` without
                ``kms:GenerateDataKey``, ``DisabledException``, …) or no answer.
        """
        ...


class ApiSessions:
    """:class:`SessionApi` (and :class:`DataKeyApi`) over the signed API client (whose
    blocking call runs in a thread)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def resume_session(self, session_id: str) -> str | None:
        response = await asyncio.to_thread(
            self._api.call, "ResumeSession", {"SessionId": session_id}
        )
        token = response.get("TokenValue")
        return token if isinstance(token, str) and token else None

    async def generate_data_key(
        self, key_id: str, context: Mapping[str, str]
    ) -> tuple[bytes, bytes]:
        body = {"KeyId": key_id, "NumberOfBytes": DATA_KEY_BYTES, "EncryptionContext": context}
        response = await asyncio.to_thread(
            self._api.call, "GenerateDataKey", body, service="TrentService"
        )
        try:
            plaintext = base64.b64decode(str(response["Plaintext"]), validate=True)
            blob = base64.b64decode(str(response["CiphertextBlob"]), validate=True)
        except (KeyError, binascii.Error, ValueError) as exc:
            raise RemoteProtocolError("GenerateDataKey answered without a data key") from exc
        return plaintext, blob


@dataclass(frozen=True, slots=True)
class StartedSession:
    """The StartSession answer (docs/protocol.md §2.2), parsed at the edge."""

    session_id: str
    token: str
    stream_url: str
    #: The request's ``Target``: the ``aws:ssm:TargetId`` of an encrypted session's data key.
    target: str = ""

    @classmethod
    def from_response(cls, response: Mapping[str, Any], target: str = "") -> StartedSession:
        values = [response.get(key) for key in ("SessionId", "TokenValue", "StreamUrl")]
        if not all(isinstance(value, str) and value for value in values):
            raise RemoteProtocolError("StartSession answered without SessionId, token or URL")
        session_id, token, stream_url = (str(value) for value in values)
        return cls(session_id, token, stream_url, target)


class Handler(Protocol):
    """What runs over a session's data channel (the terminal, a command, a port forward).

    The session calls these in this order: :meth:`bind` once, :meth:`local` around the whole
    run, :meth:`on_handshake` when the agent's HandshakeRequest arrives (never, for an agent
    that skips it, §7.1), :meth:`start` once the handshake completes (or at the first Output
    of an agent without one), :meth:`on_stream` for each Output/StdErr/Flag payload and
    :meth:`on_window` whenever acknowledgements may have opened the send window.
    """

    #: The extensions to accept in the handshake (§7.6).
    extensions: Extensions
    #: The exit status when the server ends the session without an exit code; None: report
    #: the end and exit 255 (:attr:`ExitStatus.SESSION_ENDED`).
    ended_status: int | None

    def bind(self, channel: ClientSession) -> None: ...

    def local(self) -> contextlib.AbstractContextManager[None]:
        """Local state held for the whole session (e.g. the terminal's raw mode)."""
        ...

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None: ...

    def start(self) -> None: ...

    def on_stream(self, payload_type: int, payload: bytes) -> None: ...

    def on_window(self) -> None: ...


class ClientSession:
    """Drives one session's data channel for a :class:`Handler`.

    Args:
        started: what StartSession answered.
        handler: what the session carries.
        api: asks for a fresh token after a drop (:class:`ApiSessions` in the CLI).
        dial: opens the WebSocket (:func:`hatchway.transport.sansio_socket.connect`).
        ssl_context: verifies the server of a ``wss://`` stream URL (the profile's CA).
        stderr_fd: where the session's own messages go.
        wall_clock: stamps CreatedDate on frames (the timers use the event loop's clock).
    """

    def __init__(
        self,
        started: StartedSession,
        handler: Handler,
        *,
        api: SessionApi,
        dial: Dial = connect,
        ssl_context: ssl.SSLContext | None = None,
        stderr_fd: int = 2,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.session_id = started.session_id
        self._target = started.target
        self._token = started.token
        self._url = started.stream_url
        self._api = api
        self._dial = dial
        self._ssl = ssl_context
        self._err = stderr_fd
        self._client_id = str(uuid.uuid4())
        self.endpoint = Endpoint(Role.CLIENT, wall_clock=wall_clock)
        self._driver = ChannelDriver(self.endpoint)  # timers on the loop's clock
        self.handler = handler
        self.started = False
        self._tasks: asyncio.TaskGroup | None = None  # run()'s
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._last_error = ""
        self._linger: asyncio.TimerHandle | None = None
        self._done = asyncio.Event()
        self._status: int | None = None  # a local decision on how the session ended
        #: We asked the agent to end the session (time-out, Ctrl-C, end of stdio input).
        self.terminated_here = False
        self.exit_code: int | None = None
        self.agent_version = ""
        #: The agent offered (and we accepted) Hatchway's extensions: Hatchway-only messages
        #: such as Flag :data:`END_OF_INPUT` may be sent.
        self.hatchway_agent = False
        #: What the handshake negotiated (AWS's defaults until then, or with AWS's agent).
        self.negotiated = Extensions()
        self.closed_message = ""
        #: The session is encrypted end to end (docs/protocol.md §7.9): this end's keys.
        self.cipher: SessionCipher | None = None
        self._kms_task: asyncio.Task[None] | None = None
        handler.bind(self)

    @classmethod
    def from_start(
        cls,
        api: ApiClient,
        response: Mapping[str, Any],
        handler: Handler | None = None,
        *,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        target: str = "",
    ) -> ClientSession:
        """The session StartSession ``response`` started (for ``target``), with the real
        dialer and ResumeSession (and GenerateDataKey) through ``api`` (and its TLS context);
        by default a terminal on the given file descriptors."""
        if handler is None:
            from hatchway.client.shell import ShellHandler

            handler = ShellHandler(stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd)
        return cls(
            StartedSession.from_response(response, target),
            handler,
            api=ApiSessions(api),
            ssl_context=api.ssl_context(),
            stderr_fd=stderr_fd,
        )

    # ---- public ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the session ends; returns the exit status to exit with.

        The handler's local state (e.g. the terminal) is restored however it ends.

        Raises:
            HatchwayError: the session could not go on (refused, replaced, no connection
                for :data:`RECONNECT_FOR` seconds, ResumeSession refused), or the handler
                could not do its part (e.g. its local port is in use).
        """
        try:
            with self.handler.local():
                try:
                    async with asyncio.TaskGroup() as self._tasks:
                        connection = self._tasks.create_task(self._connection_loop())
                        await self._done.wait()
                        # Tasks of the connection and the handler close their sockets on
                        # the way out.
                        connection.cancel()
                        for task in list(self._handler_tasks):
                            task.cancel()
                except* HatchwayError as group:
                    raise group.exceptions[0] from None
        finally:
            if self._linger is not None:
                self._linger.cancel()
            await self._driver.close()
        if self._status is not None:
            return self._status
        if self.exit_code is not None:
            return self.exit_code
        if self.handler.ended_status is not None:
            return self.handler.ended_status
        message = self.closed_message or "the session was terminated"
        self.print(f"\r\nSession {self.session_id} ended: {message}\r\n")
        return ExitStatus.SESSION_ENDED

    # ---- for handlers ---------------------------------------------------------------------

    def now(self) -> float:
        return self._driver.now()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def send(self, payload_type: int, data: bytes) -> None:
        """Send ``data`` (chunked at the negotiated payload size for Output) and flush."""
        self.endpoint.send(payload_type, data, now=self._driver.now())
        self._driver.flush_soon()

    def send_flag(self, flag: FlagValue | int) -> None:
        """A Flag payload (docs/protocol.md §5.4); Hatchway's own values are plain ints."""
        raw = encode_flag(flag) if isinstance(flag, FlagValue) else int(flag).to_bytes(4, "big")
        self.send(PayloadType.FLAG, raw)

    def window_open(self, size: int = READ_CHUNK) -> bool:
        """Whether ``size`` more bytes of Output fit in the send window (backpressure: read a
        local source only while this holds; :meth:`Handler.on_window` says when to look
        again)."""
        needed = -(-size // self.endpoint.max_payload_size)
        return self.endpoint.send_window() >= needed

    def hold(self, holding: bool) -> None:
        """Refuse (True) or accept again (False) the agent's new stream data: receive-side
        backpressure for a local writer that cannot keep up (docs/protocol.md §6.3; refused
        frames are neither delivered nor acknowledged, so the agent resends them later)."""
        if self.endpoint.accepting == holding:
            self.endpoint.accepting = not holding
            self._driver.flush_soon()  # a Hatchway agent is told (pause/start publication)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` for the session's lifetime (cancelled when it ends; an exception that
        is a :class:`HatchwayError` ends the session with it)."""
        assert self._tasks is not None, "handlers start tasks only while run() runs"
        task = self._tasks.create_task(coro)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)
        return task

    def terminate(self, status: int | None = None) -> None:
        """Ask the agent to end the session (Flag TerminateSession, docs/protocol.md §5.4) and
        end it here once it has (channel_closed), or after :data:`EXIT_LINGER` seconds.

        ``status``, if given, is the exit status to return whatever the agent says.
        """
        if status is not None and self._status is None:
            self._status = status
        if self._done.is_set():
            return
        self.terminated_here = True
        if self._driver.connected and not self.endpoint.closed:
            with contextlib.suppress(HatchwayError):
                self.send_flag(FlagValue.TERMINATE_SESSION)
        self._linger_then_end()

    def finish(self, status: int) -> None:
        """End the session now, exiting with ``status``."""
        if self._status is None:
            self._status = status
        self._done.set()

    def print(self, text: str) -> None:
        """One message of the session's own on stderr."""
        write_all(self._err, text.encode("utf-8", "replace"))

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

            def receive(message: bytes) -> None:
                nonlocal received
                if not received:
                    received = True
                    backoff.reset()
                self._receive(message)

            await ws.deliver(receive)
        finally:
            self._driver.detach(ws)
        return received

    def _receive(self, message: bytes) -> None:
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
                    self.print(f"\r\nhatchway: {escape_controls(event.payload.message)}\r\n")
            except RemoteProtocolError as exc:
                # Already acknowledged, so it will not come again: drop this payload only.
                self.print(f"\r\nhatchway: ignored a bad message: {exc.message}\r\n")
        if self.started and not self._done.is_set():
            self.handler.on_window()  # acknowledgements may have opened the send window
        self._driver.flush_soon(acks=False)  # data (e.g. the handshake response) now
        self._driver.acks_later()

    def _on_stream(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.HANDSHAKE_REQUEST:
            request = HandshakeRequest.from_json(event.payload)
            kms = kms_request_of(request)
            if kms is not None and isinstance(self._api, DataKeyApi):
                # The answer waits for the key service (docs/protocol.md §7.9); the agent
                # sends nothing more until it has it.
                if self._kms_task is None and self._tasks is not None:
                    self._kms_task = self._tasks.create_task(self._encrypt(request, kms))
                return
            self._answer_handshake(request, None)
        elif kind == PayloadType.ENC_CHALLENGE_REQUEST:
            if self.cipher is None:
                raise RemoteProtocolError("an encryption challenge for an unencrypted session")
            challenge = EncryptionChallenge.from_json(event.payload).challenge
            answer = EncryptionChallenge(self.cipher.seal(self.cipher.open(challenge)))
            self.endpoint.send(
                PayloadType.ENC_CHALLENGE_RESPONSE, answer.to_json(), now=self._driver.now()
            )
        elif kind == PayloadType.HANDSHAKE_COMPLETE:
            complete = HandshakeComplete.from_json(event.payload)
            if complete.customer_message:
                self.print(escape_controls(complete.customer_message) + "\r\n")
            self._start()
        else:
            if self.cipher is not None and kind in SEALED_BY_AGENT:
                try:
                    payload = self.cipher.open(event.payload)
                except RemoteProtocolError as exc:
                    # Acknowledged already, so it cannot come again: the output has a hole
                    # and someone on the way altered it. Stop rather than show a lie.
                    self.print(f"\r\nhatchway: {exc.message}; ending the session\r\n")
                    self.terminate(ExitStatus.SESSION_ENDED)
                    return
                event = StreamData(kind, payload, event.sequence_number)
            self._on_output(event)

    def _on_output(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.EXIT_CODE:
            self.exit_code = decode_exit_code(event.payload)
            self._linger_then_end()
        else:
            if kind == PayloadType.OUTPUT and not self.started:
                self._start()  # an agent that skipped the handshake (§7.1)
            self.handler.on_stream(kind, event.payload)

    async def _encrypt(self, request: HandshakeRequest, kms: KmsEncryptionRequest) -> None:
        """Get the session's data key (kms:GenerateDataKey as the user) and answer the
        handshake with it; a refusal is answered too, so the agent ends the session Failed
        with the reason (and the user is told here at once)."""
        assert isinstance(self._api, DataKeyApi)
        acknowledged = bool(kms.challenge)
        context = encryption_context(
            self.session_id, self._target, kms.challenge if acknowledged else None
        )
        # Imported here: ``cryptography`` costs start-up time that unencrypted sessions
        # need not pay (tests/transport/test_sansio_socket.py keeps the CLI's path lean).
        from hatchway.auth.sessioncipher import SessionCipher, Side

        answer: KmsEncryptionResult | str
        try:
            plaintext, blob = await self._api.generate_data_key(kms.kms_key_id, context)
            self.cipher = SessionCipher(plaintext, Side.CLIENT)
            answer = KmsEncryptionResult(blob, challenge_acknowledged=acknowledged)
        except HatchwayError as exc:
            answer = f"{exc.code}: {exc.message}"
            key = escape_controls(kms.kms_key_id)
            self.print(
                f"hatchway: this session is encrypted with KMS key {key} and the key service "
                f"gave no data key: {escape_controls(answer)}\r\n"
            )
        if self._done.is_set() or self.endpoint.closed:
            return
        self._answer_handshake(request, answer)
        self._driver.flush_soon()

    def _answer_handshake(
        self, request: HandshakeRequest, kms: KmsEncryptionResult | str | None
    ) -> None:
        response, session_type, properties, negotiated = answer_request(
            request, supported=self.handler.extensions, kms=kms
        )
        self.agent_version = request.agent_version
        self.hatchway_agent = peer_is_hatchway(response)
        self.negotiated = negotiated
        self.endpoint.send(
            PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=self._driver.now()
        )
        self.endpoint.max_payload_size = negotiated.max_payload_size
        self.endpoint.payload_digest = not negotiated.no_payload_digest
        self.endpoint.flow_control = self.hatchway_agent
        if isinstance(kms, KmsEncryptionResult) and self.cipher is not None:
            # From the response on, as AWS's plugin: what we send as Output is sealed.
            self.endpoint.cipher = self.cipher
            self.endpoint.sealed_types = frozenset(int(t) for t in SEALED_BY_CLIENT)
        self.handler.on_handshake(session_type, properties, request.agent_version)

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self.handler.start()

    def _linger_then_end(self) -> None:
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(EXIT_LINGER, self._done.set)
