"""Composition root of the server process: ``build_server(settings)`` and ``serve()``."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web

from hatchway import __version__
from hatchway.auth.atomicfile import ensure_private_dir
from hatchway.auth.nonce import NONCE_LIFETIME, NonceIssuer, derive_key
from hatchway.auth.secretbox import SecretBox, load_or_create_master_key
from hatchway.errors import (
    AccessDenied,
    AuthError,
    ConfigError,
    Conflict,
    HatchwayError,
    NotFound,
    Throttled,
    ValidationError,
)
from hatchway.server.api import Api
from hatchway.server.audit import AuditEvents, CallAudits, node_identity, owner_identity
from hatchway.server.authn import Authenticator
from hatchway.server.authz import Arns, Authorizer, Resource
from hatchway.server.bootstrap import write_profile
from hatchway.server.cluster.replicas import ReplicaInfo
from hatchway.server.clusterinit import admin_credentials, first_start
from hatchway.server.console.api import ConsoleApi
from hatchway.server.console.bridge import Terminals
from hatchway.server.console.logins import ConsoleLogins
from hatchway.server.control import ControlChannels, NodeControl
from hatchway.server.document_service import DocumentService
from hatchway.server.enforcement import LiveEnforcement
from hatchway.server.errormap import error_body, error_status
from hatchway.server.events.service import EventService
from hatchway.server.events.worker import DeliveryWorker, HttpPoster
from hatchway.server.gateway import LiveSession
from hatchway.server.guard import ConnectionGuard, ConnectionLimits
from hatchway.server.iam import IamService
from hatchway.server.kms import KmsService
from hatchway.server.listening import open_listeners
from hatchway.server.logs import LogService
from hatchway.server.logstreams import LogStreamService
from hatchway.server.memory import MemoryReclaimer
from hatchway.server.nodes import NodeService
from hatchway.server.operations import Resolvers, all_operations
from hatchway.server.recordingkeys import RecordingKeys
from hatchway.server.recordings import RecordingService
from hatchway.server.recordingstorage import RecordingStorages
from hatchway.server.retention import RetentionJob, audit_retention_run
from hatchway.server.sessionkeys import NodeDataKeys
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.server.simulate import Simulator
from hatchway.server.throttle import BackoffPolicy, FailureLimiter
from hatchway.server.trail import AuditTrailService
from hatchway.server.verifier import SecretVerifier
from hatchway.store.database import sqlite_url
from hatchway.store.records import Session
from hatchway.store.store import Store
from hatchway.transport.aiohttp_socket import AiohttpSocket, aiohttp_max_msg_size
from hatchway.transport.socket import CLOSE_TIMEOUT

if TYPE_CHECKING:  # scale-out's modules need nats-py (the cluster extra): loaded on demand
    from hatchway.server.cluster.service import Cluster

log = logging.getLogger(__name__)

CONSOLE_BACKOFF = BackoffPolicy(free_failures=5, first_delay=2.0, max_delay=300.0)
"""Console sign-ins: a source may get a password (or code) wrong 5 times, then waits 2 s, twice
as long after each further failure, up to 5 minutes."""


@dataclass
class Server:
    """A built server: its aiohttp app plus the pieces tests and ``up`` reach into."""

    settings: ServerSettings
    store: Store
    app: web.Application
    control: ControlChannels
    sessions: SessionService
    nodes: NodeService
    authn: Authenticator
    account_id: str
    ca_file: Path | None
    ca_fingerprint: str | None
    ssl_context: ssl.SSLContext | None
    box: SecretBox
    guard: ConnectionGuard
    authz: Authorizer
    enforcement: LiveEnforcement
    api: Api
    deliveries: DeliveryWorker
    recordings: RecordingService | None = None
    kms: KmsService | None = None
    log_streams: LogStreamService | None = None
    retention: RetentionJob | None = None
    console: ConsoleApi | None = None
    cluster: Cluster | None = None

    async def close(self) -> None:
        await self.deliveries.stop()
        await self.enforcement.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.console is not None:
            await self.console.terminals.close_all()
        await self.control.close_all()
        await self.sessions.gateway.close_all()
        if self.recordings is not None:
            await self.recordings.stop()
        if self.log_streams is not None:
            await self.log_streams.stop()
        self.nodes.close()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.store.close()


async def build_server(settings: ServerSettings, clock: Callable[[], float] = time.time) -> Server:
    """Open (and migrate) the store, run first start (account id, built-in rows, TLS identity:
    ``clusterinit``, once for all replicas sharing a database) and wire every service."""
    ensure_private_dir(settings.data_dir, what="data directory")
    master_key = load_or_create_master_key(settings.master_key_path)
    box = SecretBox(master_key)
    nonces = NonceIssuer(derive_key(master_key, b"agent upgrade nonce"))
    master_key_for_cluster = derive_key(master_key, b"cluster bus")
    del master_key
    store = Store.open(settings.database_url or sqlite_url(settings.db_path))
    now = clock()
    try:
        # Replicas sharing the database take turns here (server/clusterinit.py).
        started = await first_start(store, box, settings, now)
    except BaseException:
        await store.close()
        raise
    account_id = started.account_id
    ca_file = fingerprint = ssl_context = None
    if started.tls is not None:
        from hatchway.server.certificates import ssl_server_context

        ca_file, fingerprint = started.tls.ca_cert_path, started.tls.ca_fingerprint
        ssl_context = ssl_server_context(started.tls)
    if not settings.clustered:
        # No control channel survives a restart: the agents re-dial theirs. (Replicas of a
        # cluster leave other replicas' nodes alone: a gone replica's are released by the
        # replica that notices, server.cluster.)
        await store.nodes.disconnect_all()

    arns = Arns(settings.region, account_id)
    audit_events = AuditEvents(arns, clock)
    control = ControlChannels(store, settings, clock)
    cluster = _cluster(settings, store, box_key=master_key_for_cluster, control=control)
    node_control: NodeControl = control
    if cluster is not None:
        from hatchway.server.cluster.service import ClusterNotices, Hooks, RoutedControl

        node_control = RoutedControl(control, cluster)
    kms = KmsService(store.kms, box, settings.region, account_id, clock)
    authz = Authorizer(store, arns, clock)
    storages = RecordingStorages.from_settings(settings)
    recordings = RecordingService(
        store,
        settings,
        clock,
        storages,
        keys=RecordingKeys(kms, authz, settings.recordings_kms_key),
    )
    await _check_recordings_key(kms, settings.recordings_kms_key)
    log_streams = LogStreamService(store, settings.log_group, clock)
    sessions = SessionService(
        store,
        settings,
        clock,
        node_control,
        recordings,
        log_streams,
        audit=audit_events,
        kms=kms,
    )
    control.on_task_complete = sessions.task_complete
    control.on_node_gone = sessions.node_gone
    control.on_sessions_reported = sessions.sessions_reported
    control.on_connections = sessions.connections_reported
    if cluster is None:
        # Sessions do survive it: their ends re-dial and each has the grace to come back.
        restored = await sessions.restore()
        if restored:
            log.info("going on with %d session(s) from before the restart", restored)
        live_ids = set(sessions.gateway.live_ids())
        await recordings.restore(live_ids, sessions.gateway.attach_recorder)
        await log_streams.restore(live_ids, sessions.gateway.attach_log_stream)
    else:
        # A replica takes sessions over when their relay is gone (server.cluster); at start
        # it only picks up the uploads left in its own directory.
        control.replica_id = sessions.replica_id = cluster.replica_id
        control.presence.replica_id = cluster.replica_id
        sessions.elsewhere = ClusterNotices(cluster)
        await recordings.restore(set(), sessions.gateway.attach_recorder, only=())
    recordings.start()
    log_streams.start()
    nodes = NodeService(
        store,
        settings,
        clock,
        node_control,
        sessions,
        verifier=SecretVerifier(workers=settings.kdf_workers, max_waiting=settings.kdf_max_waiting),
        limiter=FailureLimiter(),
        audit=audit_events,
    )
    authn = Authenticator(
        store, box, region=settings.region, account_id=account_id, clock=clock, nonces=nonces
    )
    enforcement = LiveEnforcement(store, authz, sessions, time.monotonic, secure=settings.tls)

    async def admit_client(session: Session) -> None:
        decision = await authz.session_decision(session, secure=settings.tls)
        if not decision.allowed:
            denied = AccessDenied(
                f"{session.owner} may no longer run session {session.session_id} "
                f"({decision.explain()})"
            )
            denied.decision = decision
            resources = (arns.session(session.session_id), arns.node(session.target))
            await store.audit.append(
                audit_events.channel_denied(
                    "ssmmessages:OpenDataChannel",
                    owner_identity(session.owner),
                    resources,
                    denied,
                    session.source_ip,
                )
            )
            raise denied

    sessions.gateway.admit_client = admit_client

    async def admit_agent(session_id: str, node_id: str, source: str) -> LiveSession:
        """Whether ``node_id``'s agent may serve this session's data channel (relay side)."""
        live = await sessions.gateway.admit_agent(session_id, node_id)
        action = "ssmmessages:OpenDataChannel"
        try:
            authz.authorize_node(node_id, action, live.target)
        except AccessDenied as exc:
            event = audit_events.channel_denied(
                action, node_identity(node_id), (arns.node(live.target),), exc, source
            )
            await store.audit.append(event)
            raise
        return live

    trail = AuditTrailService(store, audit_events)
    operations = all_operations(
        Resolvers(store, authz.arns),
        public_url=settings.public_url,
        tls=settings.tls,
        sessions=sessions,
        nodes=nodes,
        iam=IamService(store, box, account_id, clock, region=settings.region),
        simulator=Simulator(store, authz),
        events=EventService(store.events, box, clock),
        recordings=recordings,
        documents=DocumentService(store, account_id, clock),
        logs=LogService(
            store,
            clock,
            f"arn:aws:logs:{settings.region}:{account_id}:log-group:",
            log_streams,
        ),
        trail=trail,
        kms=kms,
        describe_cluster=functools.partial(_describe_cluster, cluster, sessions, control, settings),
    )
    api = Api(
        settings,
        authn,
        authz,
        nodes,
        operations,
        CallAudits(store, clock),
        on_access_changed=enforcement.poke if cluster is None else cluster.access_changed,
        node_keys=NodeDataKeys(kms, store),
    )
    console = ConsoleApi(
        settings,
        store,
        api,
        authz,
        ConsoleLogins(
            store,
            box,
            settings,
            account_id,
            clock,
            SecretVerifier(workers=settings.kdf_workers, max_waiting=settings.kdf_max_waiting),
            FailureLimiter(CONSOLE_BACKOFF),
        ),
        Terminals(
            sessions.gateway.serve_client if cluster is None else cluster.serve_client,
            settings.console_resume_window,
        ),
    )
    enforcement.start()
    guard = ConnectionGuard(
        ConnectionLimits.derive(
            settings.max_connections,
            settings.max_connections_per_source,
            tls_handshake_timeout=settings.tls_handshake_timeout,
            head_timeout=settings.request_head_timeout,
            body_timeout=settings.request_body_timeout,
            idle_timeout=settings.keepalive_timeout,
        ),
        ssl_context=ssl_context,
        reclaimer=MemoryReclaimer(),
    )
    app = web.Application(client_max_size=settings.max_body_size, middlewares=[guard.middleware])
    server = Server(
        settings,
        store,
        app,
        control,
        sessions,
        nodes,
        authn,
        account_id,
        ca_file,
        fingerprint,
        ssl_context,
        box,
        guard,
        authz,
        enforcement,
        api,
        DeliveryWorker(store.events, box, HttpPoster(), clock=clock),
        recordings,
        kms,
        log_streams,
        RetentionJob(
            store,
            storages,
            clock,
            recordings_days=settings.recordings_retention_days,
            logs_days=settings.logs_retention_days,
            audit_days=settings.audit_retention_days,
            prune_audit=trail.prune,
            interval=settings.retention_interval,
            is_live=lambda sid: sessions.gateway.live(sid) is not None,
            audit=functools.partial(audit_retention_run, store, audit_events),
        ),
        console,
        cluster,
    )
    if cluster is not None:
        cluster.attach(
            sessions.gateway,
            Hooks(
                admit_agent=admit_agent,
                end_here=sessions.end_here,
                access_changed=enforcement.poke,
                recordings=recordings,
                log_streams=log_streams,
                terminals=console.terminals,
            ),
        )
        console.remote_terminal = cluster.serve_console
    server.deliveries.start()  # webhooks, from the outbox (pending ones of before a restart too)
    assert server.retention is not None
    server.retention.start()
    _routes(server, api, audit_events)
    return server


async def _check_recordings_key(kms: KmsService, key_ref: str | None) -> None:
    """Say at start whether ``--recordings-kms-key`` can be used. Not fatal: the key may be
    created (or enabled) through this very server once it runs; until then sessions run
    unrecorded, each with an error in the log."""
    if key_ref is None:
        return
    try:
        arn = await kms.check_usable(key_ref)
    except HatchwayError as exc:
        log.error(
            "--recordings-kms-key %s cannot be used now (%s): sessions run unrecorded until it can",
            key_ref,
            exc.message,
        )
    else:
        log.info("session recordings are encrypted with KMS key %s", arn)


def _routes(server: Server, api: Api, events: AuditEvents) -> None:
    ca_file = server.ca_file

    async def healthz(_: web.Request) -> web.Response:
        if server.cluster is not None:
            problems = await server.cluster.problems()
            if problems:
                return web.json_response({"status": "unhealthy", "reasons": problems}, status=503)
            return web.json_response({"status": "ok", "replica": server.cluster.replica_id})
        return web.json_response({"status": "ok"})

    async def ca_pem(_: web.Request) -> web.StreamResponse:
        if ca_file is None:
            raise web.HTTPNotFound(text="this server does not use TLS\n")
        return web.Response(body=ca_file.read_bytes(), content_type="application/x-pem-file")

    async def agent_nonce(request: web.Request) -> web.Response:
        # Unauthenticated and stateless: an HMAC, no lookup (docs/protocol.md §10.2).
        try:
            nonce = server.authn.issue_nonce(request.query.get("node", ""))
        except HatchwayError as exc:
            return _refuse(exc)
        return web.json_response(
            {"Nonce": nonce, "ExpiresInSeconds": NONCE_LIFETIME},
            headers={"Cache-Control": "no-store"},
        )

    async def control_channel(request: web.Request) -> web.StreamResponse:
        node_id = request.match_info["node_id"]
        try:
            agent = await server.authn.agent(
                request.method, request.raw_path, request.headers, b"", "ssmmessages"
            )
            action = "ssmmessages:OpenControlChannel"
            try:
                server.authz.authorize_node(agent.node_id, action, node_id)
            except AccessDenied as exc:
                resource = server.authz.arns.node(node_id)
                await _audit_refusal(action, agent.node_id, resource, exc, request)
                raise
            generation = agent.generation or 0  # an agent that names none is the oldest
            await server.control.admit(node_id, generation)
        except HatchwayError as exc:
            return _refuse(exc)
        return await server.control.serve(request, node_id, generation)

    async def data_channel(request: web.Request) -> web.StreamResponse:
        """A data channel's end: the client's (token in its first message) or the agent's
        (signed upgrade, checked before it is accepted) (docs/protocol.md §3.1, §3.2)."""
        session_id = request.match_info["session_id"]
        gateway = server.sessions.gateway
        cluster = server.cluster
        if "Authorization" not in request.headers:
            ws, sock = await _accept(request, f"client:{session_id}", server.settings)
            if cluster is not None:  # wherever the session is relayed
                await cluster.serve_client(sock, session_id)
            else:
                await gateway.serve_client(sock, session_id)
            return ws
        try:
            node_id = await server.authn.node(
                request.method, request.raw_path, request.headers, b"", "ssmmessages"
            )
            if cluster is not None:
                pipe = await cluster.open_agent(session_id, node_id, request.remote or "")
                if pipe is not None:  # admitted by the session's relay, another replica
                    try:
                        ws, sock = await _accept(request, f"agent:{session_id}", server.settings)
                    except BaseException:
                        cluster.forget_agent(pipe)
                        raise
                    await cluster.run_agent(pipe, sock)
                    return ws
            live = await gateway.admit_agent(session_id, node_id)
            action = "ssmmessages:OpenDataChannel"
            try:
                server.authz.authorize_node(node_id, action, live.target)
            except AccessDenied as exc:
                resource = server.authz.arns.node(live.target)
                await _audit_refusal(action, node_id, resource, exc, request)
                raise
        except HatchwayError as exc:
            return _refuse(exc)
        ws, sock = await _accept(request, f"agent:{session_id}", server.settings)
        await gateway.serve_agent(sock, live)
        return ws

    async def agent_recording(request: web.Request) -> web.Response:
        """A part of the sealed recording a node made of an end-to-end encrypted session
        (``RecordingService.receive_sealed``), signed like an upgrade, body included."""
        session_id = request.match_info["session_id"]
        try:
            body = await request.read()
            node_id = await server.authn.node(
                request.method,
                request.raw_path,
                request.headers,
                body,
                "ssmmessages",
                must_sign=("content-type",),
            )
            raw_offset = request.query.get("offset", "")
            if not raw_offset.isdigit() or len(raw_offset) > 15:
                raise ValidationError("offset must be a byte offset")
            if server.recordings is None:
                raise NotFound("this server keeps no recordings")
            size = await server.recordings.receive_sealed(
                node_id,
                session_id,
                int(raw_offset),
                body,
                final=request.query.get("final") == "1",
            )
        except HatchwayError as exc:
            status = error_status(exc)
            if status >= 500:
                log.error("recording of %s from its node failed: %s", session_id, exc)
            return web.json_response(error_body(exc), status=status)
        return web.json_response({"SessionId": session_id, "Size": size})

    async def _audit_refusal(
        action: str, node_id: str, resource: Resource, exc: AccessDenied, request: web.Request
    ) -> None:
        event = events.channel_denied(
            action, node_identity(node_id), (resource,), exc, request.remote or ""
        )
        await server.store.audit.append(event)

    server.app.router.add_get("/healthz", healthz)
    server.app.router.add_get("/ca.pem", ca_pem)
    server.app.router.add_post("/", api.handle)
    server.app.router.add_get("/v1/agent-nonce", agent_nonce)
    server.app.router.add_get("/v1/control-channel/{node_id}", control_channel)
    server.app.router.add_get("/v1/data-channel/{session_id}", data_channel)
    server.app.router.add_post("/v1/agent-recording/{session_id}", agent_recording)
    if server.console is not None:
        server.console.add_routes(server.app)


async def _accept(
    request: web.Request, label: str, settings: ServerSettings
) -> tuple[web.WebSocketResponse, AiohttpSocket]:
    """Accept a data-channel upgrade: the frame limit, a bounded close, and a socket whose
    sends are bounded (a peer that stops reading is dropped, never waited for)."""
    ws = web.WebSocketResponse(
        max_msg_size=aiohttp_max_msg_size(settings.max_frame_size),
        autoping=True,
        timeout=CLOSE_TIMEOUT,
    )
    await ws.prepare(request)
    abort = request.transport.abort if request.transport is not None else None
    sock = AiohttpSocket(ws, label, abort=abort, max_size=settings.max_frame_size)
    return ws, sock


def _refuse(exc: HatchwayError) -> web.Response:
    """Refuse a WebSocket upgrade: JSON body, and the reason in a header that WebSocket
    clients (which rarely read the body of a failed upgrade) can show.

    The status tells the agent what to do (docs/protocol.md §11.2): 403 stop (identity refused),
    404 the session is gone, 409 a newer agent took over (stop), 429/503 try again later.
    """
    status = next((code for kind, code in _REFUSAL_STATUS if isinstance(exc, kind)), 503)
    body = {"__type": exc.code, "message": exc.message}
    reason = f"{exc.message} ({exc.code})".encode("ascii", "replace").decode()[:300]
    return web.Response(
        body=json.dumps(body),
        status=status,
        content_type="application/json",
        headers={"X-Hatchway-Error": reason},
    )


_REFUSAL_STATUS: tuple[tuple[type[HatchwayError], int], ...] = (
    (NotFound, 404),
    (AuthError, 403),
    (AccessDenied, 403),
    (Conflict, 409),
    (Throttled, 429),
)


@dataclass(frozen=True)
class Running:
    """What a started server tells its caller."""

    endpoint: str
    port: int
    ca_file: Path | None
    ca_fingerprint: str | None
    profile_path: Path


async def serve(
    settings: ServerSettings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Running], None] | None = None,
    listeners: list[socket.socket] | None = None,
) -> None:
    """Run the server until ``stop`` is set; then close every channel and the store.

    ``listeners`` are sockets already bound to ``settings``' address (``hatchway server``
    binds first, see ``server/listening.py``); without them ``serve`` binds its own.
    """
    try:
        server = await build_server(settings)
    except BaseException:
        for sock in listeners or ():
            sock.close()
        raise
    if server.cluster is not None:
        try:
            await server.cluster.start()
        except BaseException:
            for sock in listeners or ():
                sock.close()
            await server.close()
            raise
    runner = web.AppRunner(
        server.app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=2,
        keepalive_timeout=server.guard.limits.idle_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    try:
        if listeners is None:
            listeners = open_listeners(settings.host, settings.port)
        # Instead of web.TCPSite: the guard accepts, admits and times each connection and
        # hands it to aiohttp's public protocol factory.
        await server.guard.start(runner.server, listeners)
    except BaseException:
        for sock in listeners or ():
            sock.close()
        await runner.cleanup()
        await server.close()
        raise
    try:
        port = int(server.guard.sockets[0].getsockname()[1])
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        host = "::1" if host == "::" else host
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        endpoint = settings.public_url or f"{settings.scheme}://{netloc}"
        admin = await admin_credentials(server.store, server.box, settings.admin_user, time.time())
        write_profile(
            settings.admin_profile_path,
            endpoint=endpoint,
            ca_file=server.ca_file,
            region=settings.region,
            credentials=admin,
        )
        running = Running(
            endpoint, port, server.ca_file, server.ca_fingerprint, settings.admin_profile_path
        )
        if on_ready is not None:
            on_ready(running)
        # Start-up objects (botocore, SQLAlchemy, aiohttp) live as long as the process: keep them
        # out of the cyclic collector's way so collections stay short on the relay path.
        gc.freeze()
        await stop.wait()
    finally:
        await server.guard.close()
        if server.cluster is not None:
            await server.cluster.drain()  # its ends and agents re-dial other replicas
        await server.deliveries.stop()
        await server.enforcement.stop()
        if server.retention is not None:
            await server.retention.stop()
        if server.console is not None:
            await server.console.terminals.close_all()
        await server.control.close_all()
        await server.sessions.gateway.close_all()
        if server.recordings is not None:
            await server.recordings.stop()
        if server.log_streams is not None:
            await server.log_streams.stop()
        await runner.cleanup()
        server.nodes.close()
        await server.store.close()


def _cluster(
    settings: ServerSettings, store: Store, *, box_key: bytes, control: ControlChannels
) -> Cluster | None:
    """This replica's cluster membership (``None``: a single server)."""
    if not settings.clustered:
        return None
    try:
        from hatchway.server.cluster.bus import Bus, BusOptions
        from hatchway.server.cluster.envelope import Sealer
        from hatchway.server.cluster.service import Cluster
    except ImportError as exc:
        raise ConfigError(
            f"--nats-url needs the cluster extra: pip install 'hatchway[cluster]' ({exc})"
        ) from exc
    assert settings.nats_url is not None
    replica_id = f"{socket.gethostname()[:24]}-{secrets.token_hex(3)}"
    bus = Bus(
        BusOptions(
            servers=tuple(u.strip() for u in settings.nats_url.split(",")),
            prefix=settings.cluster_prefix,
            name=f"hatchway {replica_id}",
            token=settings.nats_token,
            credentials_file=settings.nats_credentials,
            tls_ca_file=settings.nats_tls_ca,
            tls_cert_file=settings.nats_tls_cert,
            tls_key_file=settings.nats_tls_key,
        ),
        Sealer(box_key),
    )
    me = ReplicaInfo(
        replica_id=replica_id,
        address=f"{settings.host}:{settings.port}",
        version=__version__,
        started=time.time(),
    )
    return Cluster(store, bus, control, me)


async def _describe_cluster(
    cluster: Cluster | None,
    sessions: SessionService,
    control: ControlChannels,
    settings: ServerSettings,
) -> dict[str, Any]:
    """Hatchway.DescribeCluster: the alive replicas (one, on a single server)."""
    if cluster is None:
        me = ReplicaInfo(
            replica_id="single",
            address=f"{settings.host}:{settings.port}",
            version=__version__,
            started=_STARTED,
            control_channels=control.count(),
            sessions=len(sessions.gateway.live_ids()),
        )
        replicas = [me]
    else:
        replicas = cluster.replicas.all()
    return {
        "Mode": "single" if cluster is None else "cluster",
        "Replicas": [
            {
                "ReplicaId": r.replica_id,
                "Address": r.address,
                "Version": r.version,
                "Started": r.started,
                "ControlChannels": r.control_channels,
                "Sessions": r.sessions,
                "Pipes": r.pipes,
                "PipesServed": r.pipes_served,
                "State": "draining" if r.draining else ("healthy" if r.healthy else "unhealthy"),
            }
            for r in replicas
        ],
    }


_STARTED = time.time()


def print_banner(running: Running, out: TextIO | None = None) -> None:
    """What ``hatchway server`` prints once it listens."""
    out = out or sys.stderr
    print(f"hatchway server listening on {running.endpoint}", file=out)
    if running.ca_fingerprint:
        print(f"CA certificate: {running.ca_file}", file=out)
        print(f"CA SHA-256 fingerprint: {running.ca_fingerprint}", file=out)
    print(f"admin profile: {running.profile_path}", file=out, flush=True)
