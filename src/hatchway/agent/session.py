"""What every session on the agent shares: data channel, handshake, reconnect, clean end.

A session type (docs/protocol.md §8) is a subclass of :class:`DataChannelSession` that
implements :meth:`DataChannelSession._work` (and the hooks it needs); the shell
(``Standard_Stream``, ``InteractiveCommands``: agent.shell_session), the command
(``NonInteractiveCommands``: agent.command_session) and the port relay (``Port``:
agent.port_session) are the ones there are.

Sequence (docs/protocol.md §7.2, §9.3):
1. dial the data channel (signed), send HandshakeRequest (SessionType + Hatchway extensions);
2. on HandshakeResponse send HandshakeComplete; the session's work starts;
3. the work relays its bytes through the endpoint, with backpressure from the send window;
4. when it ends, the session sends what it has left (an exit code, if any), waits until the
   client has acknowledged everything, then reports ``agent_task_complete``.
If the data channel drops, it is re-dialled with backoff and the reliability layer resends.

Concurrency: a session is one task group, the work in the body and the data channel as a
child task. Whatever ends the session (the work ends, :meth:`DataChannelSession.cancel`, a
failure, or cancellation of the task running it) ends both and has the work release what it
holds (:meth:`DataChannelSession._stop_work`, ``_work_gone``, ``_release``); only a cancelled
task reports nothing (and stays cancelled).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from hatchway.agent.dialer import Socket, SocketDialer
from hatchway.auth.sessioncipher import SessionCipher, Side
from hatchway.errors import AuthError, HatchwayError, NotFound, RemoteProtocolError
from hatchway.protocol.control import session_state_frame
from hatchway.protocol.encryption import (
    CHALLENGE_BYTES,
    ENCRYPTED_MESSAGE,
    REQUEST_CHALLENGE_BYTES,
    SEALED_BY_AGENT,
    EncryptionChallenge,
    KmsEncryptionRequest,
    encryption_context,
)
from hatchway.protocol.events import ChannelClosedEvent, StreamData
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import (
    HATCHWAY_MAX_PAYLOAD,
    HATCHWAY_STREAM_WINDOW,
    Extensions,
    HandshakeComplete,
    HandshakeResponse,
    SessionType,
    build_request,
    kms_result_of,
    negotiated_from_response,
    peer_is_hatchway,
    response_failed,
)
from hatchway.protocol.payloads import AgentTaskPayload, decode_flag, encode_exit_code
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.transport.backoff import Backoff
from hatchway.transport.channel import ChannelDriver

log = logging.getLogger(__name__)

SIZE_WAIT = 1.0  # start the shell this long after the handshake if no Size came
HANDSHAKE_TIMEOUT = 60.0
DRAIN_AFTER_EXIT = 0.5  # keep reading output this long after the process exits
ACK_WAIT = 150.0  # how long to wait for the client to acknowledge the last output
STALLED_WAIT = 3.0  # ... if the client acknowledges later frames but not the last ones
RECONNECT_FOR = 150.0
HANGUP_WAIT = 3.0  # how long an ended session waits for its process to go (SIGKILL after 2 s)
READ_CHUNK = 65536
INPUT_BUFFER = 1024 * 1024  # input held for a slow reader (PTY, stdin) before more is refused
INPUT_READY_MAX = 1.0  # longest wait for a starting shell before input is written anyway
QUIET = 0.2  # a shell that printed and then stayed quiet this long is waiting for input
WRAP_UP_TIMEOUT = 60.0  # an ended session's last errands (its recording's upload) at most

#: Hatchway's own Flag value (docs/protocol.md §5.4, §8.2): the client's input ended. The agent
#: closes the command's stdin (NonInteractiveCommands) or half-closes the destination
#: connection (Port, stdio mode). Sent only between Hatchway's own ends (the HatchwayExtensions
#: action was negotiated); AWS's agent ignores unknown flags.
END_OF_INPUT: Final = int(FlagValue.END_OF_INPUT)


@dataclass(frozen=True, slots=True)
class SessionTimings:
    """How long a session waits for each thing, in seconds (the defaults are the production
    values above). Tests on the real clock pass short ones where a test would otherwise wait
    out a production time-out, and long ones where a timer must not be the thing that ends a
    wait."""

    size_wait: float = SIZE_WAIT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    drain_after_exit: float = DRAIN_AFTER_EXIT
    ack_wait: float = ACK_WAIT
    stalled_wait: float = STALLED_WAIT
    reconnect_for: float = RECONNECT_FOR
    hangup_wait: float = HANGUP_WAIT
    input_ready_max: float = INPUT_READY_MAX
    quiet: float = QUIET


DEFAULT_TIMINGS = SessionTimings()

OFFER = Extensions(
    max_payload_size=HATCHWAY_MAX_PAYLOAD,
    exit_code=True,
    no_payload_digest=True,
    stream_window=HATCHWAY_STREAM_WINDOW,
)
#: What the client and the server are told when the agent failed (details stay in its log).
COULD_NOT_RUN = "the agent could not run the session"


@runtime_checkable
class DataKeyService(Protocol):
    """The key service as the node reaches it (the agent's :class:`~hatchway.agent.dialer.Dialer`:
    ``TrentService.Decrypt`` signed with the node's key), for end-to-end encrypted sessions."""

    @property
    def node_id(self) -> str:
        """This node's id: the ``aws:ssm:TargetId`` of its sessions' data keys."""
        ...

    async def decrypt_data_key(self, blob: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        """Decrypt: the plaintext of a data key the client generated.

        Raises:
            HatchwayError: the key service's refusal (the key disabled, not allowed, …) or
                no answer; the message says which.
        """
        ...

    async def generate_recording_key(
        self, key_id: str, context: Mapping[str, str]
    ) -> tuple[bytes, bytes, str]:
        """GenerateDataKey for the session's recording: (plaintext, blob, key ARN)."""
        ...

    async def upload_recording(self, session_id: str, data: bytes, part_size: int) -> None:
        """Hand the sealed recording to the server."""
        ...


Completion = Callable[[str, str, str], Awaitable[None]]  # (session id, status, output)


class DataChannelSession:
    """Runs one session to its end; subclasses implement :meth:`_work`.

    Args:
        task: the session to run.
        dialer: opens the session's data channel (and re-dials it after a drop).
        complete: called once with (session id, status, output) when the session has ended.
        clock: the wall clock, only for timestamps in frames.
        monotonic: the clock of the reliability layer's timers and of every other time-out
            the session measures itself; it must be the event loop's clock (``time.monotonic``
            is, for asyncio's default loops).
        timings: the session's own waits and time-outs (production values by default).
    """

    #: The SessionType the handshake announces.
    session_type: str = "Standard_Stream"

    def __init__(
        self,
        task: AgentTaskPayload,
        dialer: SocketDialer,
        complete: Completion,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timings: SessionTimings = DEFAULT_TIMINGS,
    ) -> None:
        self.session_id = task.session_id
        self._timings = timings
        self._task = task
        self._dialer = dialer
        self._complete = complete
        self._clock = clock  # wall clock: CreatedDate
        self._now = monotonic  # the reliability layer's timers
        self.endpoint = Endpoint(Role.AGENT, wall_clock=clock)
        self._driver = ChannelDriver(self.endpoint, monotonic)
        self._ws: Socket | None = None
        self._handshake_done = asyncio.Event()
        self._heard = asyncio.Event()  # set whenever a message from the client was processed
        self._cancelled = asyncio.Event()
        self._cancel_reason = ""
        self._cancel_scope: asyncio.Timeout | None = None  # while the work runs
        self._extensions = Extensions()
        #: The client accepted Hatchway's extensions: Hatchway-only messages may be used.
        self.hatchway_peer = False
        #: The ClientVersion of the HandshakeResponse (docs/protocol.md §7.7).
        self.client_version = ""
        # End-to-end encryption (docs/protocol.md §7.9): never for Port sessions, as AWS.
        self._kms_key_id = task.kms_key_id if self.session_type != SessionType.PORT else ""
        self._response: HandshakeResponse | None = None
        self._responded = asyncio.Event()
        self._challenge_answer: bytes | None = None
        self._challenge_answered = asyncio.Event()
        self._cipher: SessionCipher | None = None
        self._failure = ""  # set with cancel(): the session ends Failed with this reason

    @property
    def encrypted(self) -> bool:
        """The session is encrypted end to end (its preferences name a KMS key)."""
        return bool(self._kms_key_id)

    @property
    def properties(self) -> dict[str, Any]:
        """The document's (resolved) ``properties`` object; empty if it has none."""
        value = self._task.document_content.get("properties")
        return value if isinstance(value, dict) else {}

    def cancel(self, reason: str) -> None:
        """End the session from outside (channel_closed, terminate flag); it reports
        ``Cancelled`` with ``reason``."""
        if self._cancelled.is_set():
            return
        self._cancel_reason = reason
        self._cancelled.set()
        if self._cancel_scope is not None:
            self._cancel_scope.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        """Run the session to its end, then report it through the completion callback.

        Raises:
            asyncio.CancelledError: the task running this was cancelled; the work is stopped
                and its resources released all the same, and nothing is reported.
        """
        status, output = "Failed", COULD_NOT_RUN
        try:
            async with asyncio.TaskGroup() as tasks:
                connection = tasks.create_task(self._connection_loop())
                try:
                    status, output = await self._outcome()
                finally:
                    await self._hang_up()
                    connection.cancel()
        except* Exception:
            # The data channel's task crashed (a bug): the group ended the work.
            log.exception("session %s: its data channel failed", self.session_id)
            status, output = "Failed", COULD_NOT_RUN
        finally:
            try:
                await self._driver.close()
                await self._work_gone()
            finally:
                self._release()  # even if cancelled again meanwhile
        try:
            async with asyncio.timeout(WRAP_UP_TIMEOUT):
                await self._wrap_up()
        except (HatchwayError, TimeoutError) as exc:
            log.warning("session %s: could not wrap up: %s", self.session_id, exc)
        await self._complete(self.session_id, status, output)

    async def _outcome(self) -> tuple[str, str]:
        """Run the work until it ends or :meth:`cancel` ends it: (status, output)."""
        # asyncio.timeout is the standard library's cancel scope: cancel() expires it, which
        # cancels the work in this block only. A cancellation of the task itself still
        # propagates (asyncio.Timeout tells the two apart).
        scope = asyncio.timeout(None)
        try:
            async with scope:
                self._cancel_scope = scope
                if self._cancelled.is_set():  # cancelled before the work began
                    scope.reschedule(asyncio.get_running_loop().time())
                return await self._work()
        except Exception as exc:
            if scope.expired():  # whatever the work raised on its way out
                if self._failure:
                    return "Failed", self._failure
                return "Cancelled", self._cancel_reason
            if not isinstance(exc, HatchwayError):
                log.exception("session %s crashed", self.session_id)
                return "Failed", COULD_NOT_RUN
            # Details stay in the agent's log; the client and the server get a fixed reason
            # (a protocol failure raised here is one of the session's own fixed texts).
            log.warning("session %s failed: %s", self.session_id, exc.message)
            output = exc.message if isinstance(exc, RemoteProtocolError) else COULD_NOT_RUN
            return "Failed", output
        finally:
            self._cancel_scope = None

    # ---- what a session type implements ----------------------------------------------------

    async def _work(self) -> tuple[str, str]:
        """The session's work, from the handshake (:meth:`_handshake`) to its end:
        (status, output) for the completion."""
        raise NotImplementedError

    def _handshake_properties(self) -> Any:
        """The SessionType action's ``Properties`` (docs/protocol.md §7.3): null for shells."""
        return None

    async def _stop_work(self) -> None:
        """Stop what the work runs (hang up a process, close connections); the session then
        tells the client it is terminating. Runs however the session ends."""

    async def _work_gone(self) -> None:
        """Wait (a little) until what :meth:`_stop_work` stopped is gone."""

    def _release(self) -> None:
        """Release file descriptors and the like; synchronous, runs last, once."""

    async def _wrap_up(self) -> None:
        """After the work and the data channel ended, before the completion is reported
        (e.g. hand the server an encrypted session's recording); bounded by
        :data:`WRAP_UP_TIMEOUT`."""

    @property
    def keys(self) -> DataKeyService | None:
        """The key service as the node reaches it, if the dialer can."""
        return self._dialer if isinstance(self._dialer, DataKeyService) else None

    def _set_accepting(self, value: bool) -> None:
        """Take (True) or refuse (False) the client's new stream data; with a Hatchway client
        the endpoint tells it so (pause/start publication), sent at once."""
        if value != self.endpoint.accepting:
            self.endpoint.accepting = value
            self._driver.flush_soon()

    def _on_payload(self, kind: int, payload: bytes) -> None:
        """A stream payload from the client other than the handshake and TerminateSession."""

    def _on_flag(self, value: int) -> None:
        """A Flag from the client other than TerminateSession (docs/protocol.md §5.4)."""

    def _on_heard(self) -> None:
        """After every message from the client: acknowledgements may have opened the window."""

    # ---- shared steps ----------------------------------------------------------------------

    async def _handshake(self) -> None:
        """Send the HandshakeRequest and wait for the client's answer (docs/protocol.md §7.2);
        for an encrypted session, set up its keys and prove them first (§7.9).

        Raises:
            RemoteProtocolError: the client did not answer within the handshake time-out, or
                encryption could not be set up (the message says why: it becomes the
                session's reason).
        """
        kms = None
        if self.encrypted:
            challenge = base64.b64encode(secrets.token_bytes(REQUEST_CHALLENGE_BYTES)).decode()
            kms = KmsEncryptionRequest(self._kms_key_id, challenge)
        request = build_request(self.session_type, self._handshake_properties(), OFFER, kms=kms)
        self.endpoint.send(PayloadType.HANDSHAKE_REQUEST, request.to_json(), now=self._now())
        self._driver.flush_soon()
        if not await wait_at_most(self._responded, self._timings.handshake_timeout):
            raise RemoteProtocolError("the client did not complete the handshake")
        if kms is not None and self._response is not None:
            await self._set_up_encryption(kms, self._response)
            complete = HandshakeComplete(0, customer_message=ENCRYPTED_MESSAGE)
            self.endpoint.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json(), now=self._now())
            self._driver.flush_soon()
            self._handshake_done.set()
        if not await wait_at_most(self._handshake_done, self._timings.handshake_timeout):
            raise RemoteProtocolError("the client did not complete the handshake")

    async def _set_up_encryption(
        self, request: KmsEncryptionRequest, response: HandshakeResponse
    ) -> None:
        """Unwrap the client's data key (kms:Decrypt as this node) and run the challenge.

        Raises:
            RemoteProtocolError: the client could not get a data key, the key service refused
                to decrypt it, or the client failed the challenge.
        """
        result = kms_result_of(response)
        keys = self.keys
        if keys is None:
            raise RemoteProtocolError("this agent cannot reach the key service")
        challenge = request.challenge if result.challenge_acknowledged else None
        context = encryption_context(self.session_id, keys.node_id, challenge)
        try:
            data_key = await keys.decrypt_data_key(
                result.ciphertext_key, context, request.kms_key_id
            )
            cipher = SessionCipher(data_key, Side.AGENT)
        except HatchwayError as exc:
            log.warning("session %s: cannot decrypt its data key: %s", self.session_id, exc)
            raise RemoteProtocolError(
                f"the node could not decrypt the session's data key with KMS key "
                f"{request.kms_key_id}: {exc.code}: {exc.message}"
            ) from exc
        secret = secrets.token_bytes(CHALLENGE_BYTES)
        ask = EncryptionChallenge(cipher.seal(secret))
        self.endpoint.send(PayloadType.ENC_CHALLENGE_REQUEST, ask.to_json(), now=self._now())
        self._driver.flush_soon()
        if not await wait_at_most(self._challenge_answered, self._timings.handshake_timeout):
            raise RemoteProtocolError("the client did not answer the encryption challenge")
        try:
            answer = cipher.open(self._challenge_answer or b"")
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(
                f"the client failed the encryption challenge: {exc.message}"
            ) from exc
        if not hmac.compare_digest(answer, secret):
            raise RemoteProtocolError("the client failed the encryption challenge")
        self._cipher = cipher
        self.endpoint.cipher = cipher
        self.endpoint.sealed_types = frozenset(int(t) for t in SEALED_BY_AGENT)

    async def _finish(self, exit_code: int | None, *, exit_frame: bool = False) -> None:
        """Send the last frames and wait (bounded) until the client has acknowledged all.

        An ExitCode frame goes out if ``exit_code`` is given and either the client negotiated
        it (docs/protocol.md §7.8) or ``exit_frame`` says the type sends it anyway.
        """
        if exit_code is not None and (self._extensions.exit_code or exit_frame):
            self.endpoint.send(PayloadType.EXIT_CODE, encode_exit_code(exit_code), now=self._now())
        await self._driver.flush()
        try:
            async with asyncio.timeout(self._timings.ack_wait):
                await self._wait_acked()
        except TimeoutError:
            log.info("session %s: the client did not acknowledge everything", self.session_id)

    async def _wait_acked(self) -> None:
        """Wait until the client has acknowledged every frame (docs/protocol.md §9.3).

        While the client is away this goes on (the caller bounds it by ``ack_wait``, longer
        than the server's grace: the server ends the session if the client does not come
        back). A peer that acknowledges later frames but not the last unacknowledged ones
        (AWS's plugin drops a duplicate without an ack, §12) is waited for ``stalled_wait``
        seconds at most, on the event loop's clock.
        """
        loop = asyncio.get_running_loop()
        stalled_wait = self._timings.stalled_wait
        stalled_since: float | None = None
        unacked = self.endpoint.unacked_count
        while not self.endpoint.all_acked:
            if self.endpoint.unacked_count < unacked:  # progress: waiting helps
                unacked, stalled_since = self.endpoint.unacked_count, None
            # Once stalled, a resend of the dropped frames makes the endpoint unsure again
            # (nothing acknowledged since) although nothing changed: keep the first moment.
            if stalled_since is None and self.endpoint.stalled_on_duplicates:
                stalled_since = loop.time()
            if stalled_since is not None and loop.time() - stalled_since >= stalled_wait:
                log.info(
                    "session %s: %d frame(s) left unacknowledged by a peer that acknowledged "
                    "later ones; not waiting longer",
                    self.session_id,
                    self.endpoint.unacked_count,
                )
                return
            self._heard.clear()
            # Woken by anything the client sends; re-checked at least every stalled_wait / 4
            # (resends change what is stalled without anything arriving).
            await wait_at_most(self._heard, stalled_wait / 4)

    async def _hang_up(self) -> None:
        """Stop the work and tell the client the session ends."""
        try:
            await self._stop_work()
        finally:
            await self._say_terminating()

    async def _say_terminating(self) -> None:
        frame = session_state_frame("Terminating", self.session_id, now=self._clock())
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send(frame)

    # ---- the data channel -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        """Keep the data channel up: dial, resend what is unacknowledged, relay; after a drop,
        re-dial with back-off for up to ``reconnect_for`` seconds, then cancel the session."""
        backoff = Backoff(initial=0.1, maximum=5.0)
        lost_at: float | None = None
        path = f"/v1/data-channel/{self.session_id}?role=publish_subscribe"
        while True:
            try:
                ws = await self._dialer.connect(path)
            except (NotFound, AuthError) as exc:
                log.warning("session %s: data channel refused: %s", self.session_id, exc.message)
                self.cancel("the server refused the session's data channel")
                return
            except HatchwayError as exc:
                now = self._now()
                if lost_at is None:
                    lost_at = now
                if now - lost_at > self._timings.reconnect_for:
                    log.warning("session %s: data channel lost: %s", self.session_id, exc.message)
                    self.cancel("the agent lost the session's data channel")
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            lost_at = None
            await self._relay(ws)
            if self._cancelled.is_set():
                return
            log.info("session %s: data channel dropped (%s)", self.session_id, ws.close_code)
            lost_at = self._now()

    async def _relay(self, ws: Socket) -> None:
        """Use ``ws`` until it closes (a socket's iteration ends, it never raises, on a drop)."""
        self._ws = ws
        self._driver.attach(ws)
        try:
            # Resent from the writer task: reading starts at once, so the client's acks of
            # a long resend never pile up unread until its sends (and its reading) stop.
            self.endpoint.retransmit_all(self._now())
            self._driver.flush_soon()
            await ws.deliver(self._receive)
        finally:
            self._driver.detach(ws)
            self._ws = None

    def _receive(self, message: bytes) -> None:
        """Take in one message from the client; never waits (see ``_relay``)."""
        try:
            events = self.endpoint.receive(message, now=self._now())
        except RemoteProtocolError as exc:
            log.info("session %s: dropping bad frame: %s", self.session_id, exc.message)
            return
        for event in events:
            try:
                if isinstance(event, StreamData):
                    self._on_stream(event)
                elif isinstance(event, ChannelClosedEvent):
                    self.cancel(event.payload.output or "session closed by the server")
            except RemoteProtocolError as exc:
                # The frame is already acknowledged and will not come again: drop its payload,
                # keep the channel and the events delivered with it.
                log.info("session %s: dropping bad payload: %s", self.session_id, exc.message)
        self._heard.set()  # for _wait_acked: acknowledgements may have come
        self._on_heard()
        self._driver.flush_soon(acks=False)  # data (e.g. HandshakeComplete, resends) now
        self._driver.acks_later()  # acknowledgements ride along with the next output

    def _on_stream(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.HANDSHAKE_RESPONSE:
            self._on_handshake_response(HandshakeResponse.from_json(event.payload))
        elif kind == PayloadType.ENC_CHALLENGE_RESPONSE:
            if self._challenge_answer is None:
                self._challenge_answer = EncryptionChallenge.from_json(event.payload).challenge
                self._challenge_answered.set()
        elif kind == PayloadType.OUTPUT and self.encrypted:
            if self._cipher is None:
                raise RemoteProtocolError("input before the session's encryption was set up")
            try:
                payload = self._cipher.open(event.payload)
            except RemoteProtocolError as exc:
                # Frames cannot be asked for again (acknowledged): the stream has a hole, and
                # someone on the way altered it. End the session, saying so.
                self._failure = f"end-to-end encryption: {exc.message}"
                self.cancel(self._failure)
                return
            self._on_payload(kind, payload)
        elif kind == PayloadType.FLAG:
            value = decode_flag(event.payload)
            if value == FlagValue.TERMINATE_SESSION:
                self.cancel("terminated by the client")
            else:
                self._on_flag(value)
        else:
            self._on_payload(kind, event.payload)

    def _on_handshake_response(self, response: HandshakeResponse) -> None:
        if self._handshake_done.is_set():
            return  # a second answer changes nothing
        failure = response_failed(response)
        if failure:
            self.cancel(f"handshake failed: {failure}")
            return
        self._extensions = negotiated_from_response(response, offer=OFFER)
        self.hatchway_peer = peer_is_hatchway(response)
        self.client_version = response.client_version
        # AWS's plugin never re-acknowledges a duplicate: read its acks cumulatively.
        self.endpoint.cumulative_acks = not self.hatchway_peer
        self.endpoint.flow_control = self.hatchway_peer
        self.endpoint.max_payload_size = self._extensions.max_payload_size
        self.endpoint.payload_digest = not self._extensions.no_payload_digest
        self._response = response
        self._responded.set()
        if self.encrypted:
            return  # _handshake completes it once the keys are set up (§7.9)
        complete = HandshakeComplete(handshake_time_to_complete_ns=0, customer_message="")
        self.endpoint.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json(), now=self._now())
        self._handshake_done.set()


def commands_of(properties: dict[str, Any]) -> str:
    """The command text of a command document's properties (docs/protocol.md §10.2):
    ``properties.linux.commands``, a string or a list of lines.

    Raises:
        RemoteProtocolError: there is no command.
    """
    platform = properties.get("linux")
    commands = platform.get("commands") if isinstance(platform, dict) else None
    if isinstance(commands, list) and all(isinstance(line, str) for line in commands):
        commands = "\n".join(commands)
    if not isinstance(commands, str) or not commands.strip():
        raise RemoteProtocolError("the session document names no command")
    return commands


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set, ``seconds`` at most; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
