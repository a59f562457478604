"""Shell sessions on the agent: ``Standard_Stream`` (the login shell) and ``InteractiveCommands``
(``sh -c <properties.linux.commands>``), each in a PTY as the run-as user (docs/protocol.md §8.1,
§8.2).

The data channel, handshake, reconnect and the wait for the last acknowledgements are
:class:`hatchway.agent.session.DataChannelSession`'s. Here: start the shell at the first Size
message (or after 1 s), so it never sees a wrong window size; relay PTY output as Output frames
and Output frames to the PTY, with backpressure both ways (the PTY is not read while the send
window is full; input beyond :data:`INPUT_BUFFER` is refused); when the shell exits, send its
exit code (if negotiated). Whatever ends the session hangs the shell up and closes the PTY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from hatchway.agent.dialer import SocketDialer
from hatchway.agent.recording import SealedRecording, recording_context
from hatchway.agent.runas import RunAsUser
from hatchway.agent.session import (
    DEFAULT_TIMINGS,
    HANDSHAKE_TIMEOUT,
    INPUT_BUFFER,
    READ_CHUNK,
    RECONNECT_FOR,
    STALLED_WAIT,
    Completion,
    DataChannelSession,
    SessionTimings,
    commands_of,
    wait_at_most,
)
from hatchway.agent.terminal import PtyShell
from hatchway.errors import HatchwayError
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.payloads import AgentTaskPayload, SizePayload

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "INPUT_BUFFER",
    "READ_CHUNK",
    "RECONNECT_FOR",
    "STALLED_WAIT",
    "SessionTimings",
    "ShellSession",
    "commands_of",
]

log = logging.getLogger(__name__)

#: Bytes of a sealed recording per upload request (the server takes bodies up to 1 MiB).
RECORDING_PART = 512 * 1024

#: A PTY read at least this large means the shell is printing in bulk: coalesce what follows.
BULK_READ = 2048


class ShellSession(DataChannelSession):
    """Runs one ``Standard_Stream`` or ``InteractiveCommands`` session to its end.

    Args:
        task: the session to run (its document's ``sessionType`` picks the login shell or
            the document's command).
        dialer: opens the session's data channel (and re-dials it after a drop).
        user: who the shell runs as.
        complete: called once with (session id, status, output) when the session has ended.
        clock, monotonic, timings: as for :class:`DataChannelSession`.
    """

    def __init__(
        self,
        task: AgentTaskPayload,
        dialer: SocketDialer,
        user: RunAsUser,
        complete: Completion,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timings: SessionTimings = DEFAULT_TIMINGS,
    ) -> None:
        super().__init__(task, dialer, complete, clock, monotonic, timings)
        interactive = task.document_content.get("sessionType") == SessionType.INTERACTIVE_COMMANDS
        self.session_type = (
            SessionType.INTERACTIVE_COMMANDS if interactive else SessionType.STANDARD_STREAM
        )
        self._user = user
        self._recording: SealedRecording | None = None
        self._shell: PtyShell | None = None
        self._pending_input = bytearray()
        # The shell exited (or was hung up): no more input for it, and its PTY is drained
        # once, then left alone.
        self._exited = False
        self._input_ready = False
        self._first_output_seq = 0
        self._size: tuple[int, int] | None = None
        self._size_seen = asyncio.Event()
        self._reading = False
        self._output_eof = asyncio.Event()

    @property
    def shell(self) -> PtyShell | None:
        """The session's shell once it started (it starts after the handshake and the size)."""
        return self._shell

    async def _work(self) -> tuple[str, str]:
        command = (
            [commands_of(self.properties)]
            if self.session_type == SessionType.INTERACTIVE_COMMANDS
            else None
        )
        await self._handshake()
        await wait_at_most(self._size_seen, self._timings.size_wait)
        rows, cols = self._size or (24, 80)
        if self.encrypted:  # before the shell: its first output is read as soon as it exists
            await self._begin_recording(cols, rows)
        self._shell = await PtyShell.spawn(
            self._user,
            rows=rows,
            cols=cols,
            command=command,
            profile=self._task.shell_profile if command is None else "",
        )
        self._first_output_seq = self.endpoint.next_sequence_number
        log.info(
            "session %s: %s pid %d as %s",
            self.session_id,
            "command" if command else "shell",
            self._shell.process.pid,
            self._user.name,
        )
        self._start_reading()
        await self._shell_ready()
        self._input_ready = True
        self._write_input(b"")
        returncode = await self._shell.process.wait()
        self._exited = True
        self._drop_input()  # nobody reads it any more
        await wait_at_most(self._output_eof, self._timings.drain_after_exit)
        self._drain_output()
        self._stop_reading()
        code = PtyShell.exit_status(returncode)
        await self._finish(code)
        return "Success", str(code)

    async def _stop_work(self) -> None:
        """Stop the shell's processes (SIGHUP, SIGKILL later) and stop relaying its terminal."""
        if self._shell is not None:
            self._exited = True  # nothing more goes in or (reading again on an ack) comes out
            self._stop_reading()
            self._drop_input()
            self._shell.hangup()

    async def _work_gone(self) -> None:
        """Wait (a little) until the hung-up shell has exited."""
        if self._shell is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timings.hangup_wait):
                    await self._shell.process.wait()

    def _release(self) -> None:
        if self._shell is not None:
            self._shell.close()

    # ---- the recording of an encrypted session (agent.recording) ---------------------------

    async def _begin_recording(self, cols: int, rows: int) -> None:
        """Record on the node, since the gateway sees only ciphertext; without a recording
        key (the key service refused, say) the session goes on unrecorded, as on the server."""
        keys = self.keys
        if keys is None:
            return
        context = recording_context(self.session_id)
        try:
            data_key, blob, key_arn = await keys.generate_recording_key(self._kms_key_id, context)
        except HatchwayError as exc:
            log.warning("session %s: runs unrecorded: no recording key: %s", self.session_id, exc)
            return
        self._recording = SealedRecording(
            self.session_id, key_arn, data_key, blob, self._clock(), cols, rows
        )

    async def _wrap_up(self) -> None:
        recording, self._recording = self._recording, None
        keys = self.keys
        if recording is None or keys is None:
            return
        sealed = recording.finish(self._clock())
        await keys.upload_recording(self.session_id, sealed, RECORDING_PART)
        log.info("session %s: its sealed recording (%d bytes) sent", self.session_id, len(sealed))

    def _on_heard(self) -> None:
        if (
            not self._reading
            and self._shell is not None
            and not self._exited
            and not self._output_eof.is_set()
        ):
            self._start_reading()

    def _on_payload(self, kind: int, payload: bytes) -> None:
        if kind == PayloadType.OUTPUT:
            self._write_input(payload)
        elif kind == PayloadType.SIZE:
            size = SizePayload.from_json(payload)
            if size.rows > 0 and size.cols > 0:
                self._size = (min(size.rows, 10_000), min(size.cols, 10_000))
                self._size_seen.set()
                if self._shell is not None:
                    self._shell.resize(*self._size)
                    if self._recording is not None:
                        self._recording.resize(self._clock(), size.cols, size.rows)

    # ---- the PTY --------------------------------------------------------------------------

    async def _shell_ready(self) -> None:
        """Wait (briefly) until the shell reads its terminal the way a person's typing meets it.

        Input written while the shell is still starting sits in the line discipline in
        canonical mode, where an end-of-transmission becomes an empty "line" that the shell's
        line editor later sees as a NUL: piped input ending in EOT would then never end the
        shell. So the first input waits until the shell switched its terminal to
        non-canonical mode (readline is ready) or, for shells that never do, until its
        output has been quiet for a moment; never longer than ``input_ready_max``.
        """
        assert self._shell is not None
        timings = self._timings
        start = self._now()
        quiet_since: float | None = None
        seen = -1
        while (
            self._now() - start < timings.input_ready_max and self._shell.process.returncode is None
        ):
            if not self._shell.canonical():
                return
            now = self._now()
            if self.endpoint.next_sequence_number != seen:
                seen, quiet_since = self.endpoint.next_sequence_number, now
            elif (
                seen > self._first_output_seq and quiet_since and now - quiet_since > timings.quiet
            ):
                return
            await asyncio.sleep(0.005)

    def _write_input(self, data: bytes) -> None:
        if self._exited:
            return  # the shell will never read it
        self._pending_input += data
        shell = self._shell
        if shell is not None and self._input_ready and self._pending_input:
            written = shell.write(bytes(self._pending_input))
            del self._pending_input[:written]
            loop = asyncio.get_running_loop()
            if self._pending_input:
                loop.add_writer(shell.master_fd, self._write_input, b"")
            else:
                loop.remove_writer(shell.master_fd)
        # Backpressure, also while the shell is still starting: while the PTY lags far behind,
        # refuse (don't ack) more input; the client's send window fills and it stops reading
        # its stdin. Refused frames come back by retransmission once the PTY has caught up.
        accepting = len(self._pending_input) <= INPUT_BUFFER
        if accepting != self.endpoint.accepting:
            log.debug(
                "session %s: %s input (%d bytes waiting for the shell)",
                self.session_id,
                "accepting" if accepting else "holding back",
                len(self._pending_input),
            )
            self._set_accepting(accepting)

    def _drop_input(self) -> None:
        """Forget input that the shell will never read, and stop waiting for the PTY to take
        it: once the shell has exited, the PTY's master end polls as writable for ever and
        the writer callback would spin, and a closed PTY must leave nothing registered."""
        self._pending_input.clear()
        if self._shell is not None:
            asyncio.get_running_loop().remove_writer(self._shell.master_fd)
        self._set_accepting(True)

    def _start_reading(self) -> None:
        if self._shell is not None and not self._reading:
            self._reading = True
            asyncio.get_running_loop().add_reader(self._shell.master_fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._shell is not None and self._reading:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self._shell.master_fd)

    def _on_readable(self) -> None:
        self._read_once()
        # Output leaves alone: the acknowledgements of the input it answers follow by their
        # timer (ChannelDriver.acks_later, armed when the input arrived). Riding along, an
        # ack is parsed by the server and the client before they pass the echo on
        # (benchmarks/README.md, "Keystroke echo: what was measured").
        self._driver.flush_soon(acks=False)

    def _read_once(self) -> bool:
        """Move one read of PTY output into the endpoint; False when nothing more now."""
        shell = self._shell
        assert shell is not None
        size = self.endpoint.max_payload_size
        if self.endpoint.send_window() * size < READ_CHUNK:
            self._stop_reading()  # backpressure: resume when acks open the window
            return False
        data = shell.read(READ_CHUNK)
        if data is None:
            return False
        if not data:
            self._stop_reading()
            self._output_eof.set()
            return False
        ended = False
        if len(data) >= BULK_READ:
            # The shell prints in bulk (a PTY hands out about 4 KiB per read): take what else
            # is there already, up to a full frame, so that bulk output leaves in large
            # frames instead of one per read. A small read (an echoed keystroke) leaves at
            # once, so coalescing adds no latency.
            parts = [data]
            total = len(data)
            while total < size:
                more = shell.read(min(READ_CHUNK, size - total))
                if not more:
                    ended = more is not None  # b"": the end of the output
                    break
                parts.append(more)
                total += len(more)
            data = b"".join(parts)
        self.endpoint.send(PayloadType.OUTPUT, data, now=self._now())
        if self._recording is not None:
            self._recording.output(self._clock(), data)
        if ended:
            self._stop_reading()
            self._output_eof.set()
            return False
        return True

    def _drain_output(self) -> None:
        if self._shell is not None and not self._output_eof.is_set():
            while self._read_once():
                pass
