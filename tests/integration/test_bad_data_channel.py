"""The data channel: bad opens and tokens, malformed and oversize frames, malformed
payloads, and token expiry with an injected clock.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from hatchway.auth.tokens import hash_token, new_token
from hatchway.protocol.events import StreamData
from hatchway.protocol.frames import MessageType, PayloadType, encode_frame, make_frame, peek_header
from hatchway.protocol.handshake import Extensions, HandshakeRequest, answer_request
from hatchway.protocol.reliability import Endpoint, Role
from tests.fakes import FakeClock
from tests.integration.bad_input import (
    CLOSE_BAD_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    OK_INPUT,
    MiB,
    assert_undisturbed,
    client_ssl,
    closed_as,
    dial,
    drain,
    healthz,
    open_accepted,
    open_message,
    run_async,
    run_shell,
    started_session,
)
from tests.integration.cluster import Cluster

# ---- the data channel ---------------------------------------------------------------------

BAD_OPENS = ["random token", "empty token", "other session's token", "not JSON", "binary"]


@pytest.mark.parametrize("bad", BAD_OPENS)
def test_bad_open_is_closed_with_1008_and_the_session_still_works(
    cluster: Cluster, node: str, bad: str
) -> None:
    ctx = client_ssl(cluster)
    with (
        started_session(cluster, node) as (api, start),
        started_session(cluster, node) as (_, other),
    ):
        messages: dict[str, str | bytes] = {
            "random token": open_message(new_token()),
            "empty token": open_message(""),
            "other session's token": open_message(other["TokenValue"]),
            "not JSON": "{not json",
            "binary": open_message(start["TokenValue"]).encode(),
        }
        first = messages[bad]

        async def attempt() -> tuple[int | None, str, list[str | bytes]]:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(first)
            got = await drain(ws)
            return (*closed_as(ws), got)

        code, reason, got = run_async(attempt)
        assert code == CLOSE_POLICY, (code, reason)
        assert reason
        assert got == []  # nothing of the session reached the intruder
        # Both sessions are untouched: their own tokens still open them.
        for session in (start, other):
            status, out = run_shell(api, session)
            assert b"ok-2" in out, out
            assert status == 0
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("used_before", [False, True], ids=["unused", "used"])
def test_token_revoked_by_resume_is_closed_with_1008(
    cluster: Cluster, node: str, used_before: bool
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):
        old = start["TokenValue"]

        async def use_once() -> None:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, old)
            await ws.close()

        if used_before:
            run_async(use_once)
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        assert resumed["TokenValue"] and resumed["TokenValue"] != old

        async def attempt() -> tuple[int | None, str, list[str | bytes]]:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(open_message(old))
            got = await drain(ws)
            return (*closed_as(ws), got)

        code, reason, got = run_async(attempt)
        assert code == CLOSE_POLICY, (code, reason)
        assert "revoked" in reason
        assert got == []
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize(
    "frame", [b"not a frame", b"\xff" * 120, b"\x00" * 200], ids=["short", "bad-type", "zeros"]
)
def test_malformed_frame_closes_with_1007_and_the_session_resumes(
    cluster: Cluster, node: str, frame: bytes
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):

        async def attempt() -> tuple[int | None, str]:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, start["TokenValue"])
            await ws.send(frame)
            await drain(ws)
            return closed_as(ws)

        code, reason = run_async(attempt)
        assert code == CLOSE_BAD_DATA, (code, reason)
        assert reason.startswith("malformed frame")
        active = {s["SessionId"]: s["Status"] for s in cluster.sessions("Active")}
        assert start["SessionId"] in active
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        assert resumed.get("TokenValue")
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


def test_oversize_message_closes_with_1009_and_the_server_stays_healthy(
    cluster: Cluster, node: str
) -> None:
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (api, start):

        async def attempt() -> tuple[int | None, str]:
            ws = await dial(start["StreamUrl"], ctx)
            await open_accepted(ws, start["TokenValue"])
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\x00" * (MiB + 1))
            await drain(ws)
            return closed_as(ws)

        code, reason = run_async(attempt)
        assert code == CLOSE_TOO_BIG, (code, reason)
        assert healthz(cluster) == {"status": "ok"}
        resumed = api.call("ResumeSession", {"SessionId": start["SessionId"]})
        status, out = run_shell(api, resumed)
        assert b"ok-2" in out, out
        assert status == 0
    assert_undisturbed(cluster, node)


BAD_PAYLOADS = {
    "Size not JSON": (PayloadType.SIZE, b"{garbage"),
    "Size of the wrong shape": (PayloadType.SIZE, b'["cols", 80]'),
    "Flag of 3 bytes": (PayloadType.FLAG, b"\x00\x00\x01"),
}


@pytest.mark.parametrize("kind", list(BAD_PAYLOADS))
def test_malformed_payload_is_dropped_and_the_stream_goes_on(
    cluster: Cluster, node: str, kind: str
) -> None:
    """A frame whose header is fine (so the gateway relays it) but whose payload is not.

    The agent receives it out of order together with the frame after it; it must drop the bad
    payload only, and still run the command that followed.
    """
    payload_type, payload = BAD_PAYLOADS[kind]
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (_, start):

        async def attempt() -> bytes:
            ws = await dial(start["StreamUrl"], ctx)
            await ws.send(open_message(start["TokenValue"]))
            endpoint = Endpoint(Role.CLIENT, wall_clock=time.time)
            output = bytearray()
            injected = False
            async for message in ws:
                assert isinstance(message, bytes)
                for event in endpoint.receive(message, now=time.time()):
                    if not isinstance(event, StreamData):
                        continue
                    if event.payload_type == PayloadType.HANDSHAKE_REQUEST:
                        request = HandshakeRequest.from_json(event.payload)
                        response, *_ = answer_request(request, supported=Extensions())
                        endpoint.send(
                            PayloadType.HANDSHAKE_RESPONSE, response.to_json(), now=time.time()
                        )
                    elif event.payload_type == PayloadType.HANDSHAKE_COMPLETE and not injected:
                        injected = True
                        seq = endpoint.next_sequence_number
                        # The command first (buffered: out of order), then the bad frame it
                        # waits for: both are delivered to the agent at once.
                        await ws.send(stream_frame(seq + 1, PayloadType.OUTPUT, OK_INPUT))
                        await ws.send(stream_frame(seq, payload_type, payload))
                    elif event.payload_type == PayloadType.OUTPUT:
                        output += event.payload
                        if b"ok-2" in output:
                            await ws.close()
                            return bytes(output)
                for frame in endpoint.data_to_send():
                    await ws.send(frame)
            raise AssertionError(f"the data channel closed ({ws.close_code}): {output!r}")

        output = run_async(attempt, timeout=15)
        assert b"ok-2" in output
    assert_undisturbed(cluster, node)


def stream_frame(seq: int, payload_type: int, payload: bytes) -> bytes:
    frame = make_frame(
        MessageType.INPUT_STREAM_DATA,
        payload,
        now=time.time(),
        sequence_number=seq,
        payload_type=payload_type,
    )
    return encode_frame(frame)


def test_publication_frames_reach_a_joined_client(cluster: Cluster, node: str) -> None:
    """The positive control for the tests above: a valid open is answered with frames."""
    ctx = client_ssl(cluster)
    with started_session(cluster, node) as (_, start):

        async def attempt() -> bytes:
            ws = await dial(start["StreamUrl"], ctx)
            first = await open_accepted(ws, start["TokenValue"])
            await ws.close()
            return first

        first = run_async(attempt)
        assert peek_header(first).message_type in (
            MessageType.START_PUBLICATION,
            MessageType.PAUSE_PUBLICATION,
            MessageType.OUTPUT_STREAM_DATA,
        )


# ---- token expiry, with an injected clock --------------------------------------------------


def test_token_must_be_first_used_within_60_s(tmp_path: Path) -> None:
    """Against the server's real app (plain HTTP, loopback) built with a fake clock."""
    from aiohttp import web

    from hatchway.server.app import build_server
    from hatchway.server.bootstrap import ensure_admin
    from hatchway.server.settings import ServerSettings
    from tests.fakes import session_record

    clock = FakeClock()

    async def scenario() -> dict[str, tuple[int | None, str, bytes | None]]:
        settings = ServerSettings(data_dir=tmp_path / "server", tls=False, port=0)
        server = await build_server(settings, clock=clock)
        runner = web.AppRunner(server.app)
        await runner.setup()
        listener = socket.create_server(("127.0.0.1", 0))  # the kernel picks the port
        port = listener.getsockname()[1]
        await web.SockSite(runner, listener).start()
        base = f"ws://127.0.0.1:{port}/v1/data-channel/"
        try:
            # Sessions of the administrator: a client's channel is admitted only while the
            # session's owner may still run it.
            await ensure_admin(server.store, server.box, "admin", clock())
            admin = await server.store.identity.user_by_name("admin")
            assert admin is not None
            tokens: dict[str, str] = {}
            for name in ("late", "in-time"):
                token = new_token()
                session = session_record(
                    f"admin-{name}",
                    "mi-0123456789abcdef0",
                    start_date=clock(),
                    owner_id=admin.user_id,
                )
                await server.store.sessions.create(session, hash_token(token), clock())
                server.sessions.gateway.expect(session.session_id, session.target)
                tokens[name] = token

            async def try_open(name: str) -> tuple[int | None, str, bytes | None]:
                ws = await dial(f"{base}admin-{name}?role=publish_subscribe", None)
                await ws.send(open_message(tokens[name]))
                try:
                    first = await ws.recv()
                except ConnectionClosed:
                    return (*closed_as(ws), None)
                await ws.close()
                assert isinstance(first, bytes)
                return (*closed_as(ws), first)

            results = {}
            clock.advance(59)
            results["in-time"] = await try_open("in-time")
            clock.advance(2)  # 61 s after issue
            results["late"] = await try_open("late")
            clock.advance(3600)  # once used, a token lasts for the session's life
            results["in-time, reused later"] = await try_open("in-time")
            return results
        finally:
            await runner.cleanup()
            await server.close()

    results = run_async(scenario)
    code, reason, frame = results["late"]
    assert (code, reason, frame) == (CLOSE_POLICY, "token expired before first use", None)
    for key in ("in-time", "in-time, reused later"):
        code, reason, frame = results[key]
        assert frame is not None, (key, code, reason)
        assert peek_header(frame).message_type == MessageType.PAUSE_PUBLICATION  # no agent yet
