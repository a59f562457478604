"""Scale-out with real processes: replicas on PostgreSQL + NATS behind HAProxy, real agents
and the real CLI (docs/design.md, "Scale-out"; the README's "Scale-out").

Every test here needs PostgreSQL, NATS and haproxy (tests/integration/replicas.py says what
happens without them).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.auth.sigv4 import Credentials
from hatchway.client.config import load_profile
from hatchway.transport.apiclient import ApiClient
from tests.integration.cluster import HATCHWAY, SharedAgent, reap, wait_for
from tests.integration.replicas import ReplicaSet, free_port, requirements

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    requirements()
    replicas = ReplicaSet(tmp_path_factory.mktemp("scale"), count=3)
    try:
        replicas.start()
        yield replicas
    finally:
        replicas.close()


@pytest.fixture(scope="module")
def agent(scale: ReplicaSet) -> SharedAgent:
    node, state = scale.register("one")
    return SharedAgent(scale, node, state, scale.start_agent(state, node))


@pytest.fixture
def online(scale: ReplicaSet, agent: SharedAgent) -> SharedAgent:
    """Every replica up and the agent Online (a test before may have killed some)."""
    for replica in scale.replicas:
        if not replica.alive:
            scale.start_replica(replica)
    wait_for(lambda: scale.ping_status(agent.node_id) == "Online", 30, what="node Online")
    agent.ensure_online()
    return agent


def _start(scale: ReplicaSet, node: str, script: str, out: Path) -> subprocess.Popen[bytes]:
    """A session running ``script`` (then exit), its output going to ``out``."""
    with open(out, "wb") as sink, open(out.with_suffix(".err"), "wb") as errors:
        proc = subprocess.Popen(
            [HATCHWAY, "start-session", "--target", node],
            stdin=subprocess.PIPE,
            stdout=sink,
            stderr=errors,
            env=scale.env(),
        )
    assert proc.stdin is not None
    proc.stdin.write(f"{script}; exit\n".encode())
    proc.stdin.flush()
    return proc


def _lines(out: Path, pattern: str) -> list[str]:
    return re.findall(rf"(?m)^{pattern}\r?$", out.read_text(errors="replace"))


def _active_session(scale: ReplicaSet, node: str) -> str:
    def found() -> str | None:
        sessions = [s for s in scale.sessions() if s["Target"] == node]
        return sessions[-1]["SessionId"] if len(sessions) == 1 else None

    return str(wait_for(found, 30, what="the session to be listed"))


def test_sessions_work_whichever_replica_each_end_reaches(
    scale: ReplicaSet, online: SharedAgent
) -> None:
    """Round-robin puts the API call, the client's and the agent's data channels on different
    replicas: the ends are piped to the session's relay through NATS."""
    before = _pipes_served(scale)
    for n in range(1, 7):
        result = scale.cli(
            "start-session",
            "--target",
            online.node_id,
            input=f"echo many-$(({n}*11))\nexit\n".encode(),
        )
        assert f"many-{n * 11}" in result.stdout.decode(errors="replace")
    assert _pipes_served(scale) > before, "no end was ever piped between replicas"
    status = scale.cli_json("cluster", "status")
    assert {r["State"] for r in status["Replicas"]} == {"healthy"}
    assert len(status["Replicas"]) == 3
    assert sum(r["ControlChannels"] for r in status["Replicas"]) == 1


def _pipes_served(scale: ReplicaSet) -> int:
    status = scale.api().call("DescribeCluster", {}, service="Hatchway")
    return sum(int(r["PipesServed"]) for r in status["Replicas"])


def test_sigkill_of_two_relays_mid_output_loses_and_doubles_nothing(
    scale: ReplicaSet, online: SharedAgent, tmp_path: Path
) -> None:
    """SIGKILL the session's relay mid-output, then the replica that took it over: both ends
    re-dial through HAProxy each time and every line of ``seq 1 200000`` arrives once."""
    out = tmp_path / "seq.out"
    script = "seq 1 200000 | awk '{print; if (NR % 10000 == 0) system(\"sleep 0.4\")}'"
    proc = _start(scale, online.node_id, script, out)
    try:
        session = _active_session(scale, online.node_id)
        wait_for(lambda: len(_lines(out, r"\d+")) >= 40_000, 60, what="line 40000")
        first = scale.relay_of(session)
        scale.kill(first)
        wait_for(lambda: len(_lines(out, r"\d+")) >= 120_000, 120, what="line 120000")
        second = scale.relay_of(session)
        assert second is not first
        scale.kill(second)
        assert proc.wait(180) == 0, out.with_suffix(".err").read_text()
    finally:
        reap(proc)
    numbers = _lines(out, r"\d+")
    assert numbers == [str(i) for i in range(1, 200_001)], f"{len(numbers)} lines"


def test_rolling_restart_of_every_replica_while_20_sessions_run(
    scale: ReplicaSet, online: SharedAgent, tmp_path: Path
) -> None:
    """SIGTERM each replica in turn (a drain: its ends and agents re-dial the others), start
    it again, and go on to the next: 20 sessions run through it all, nothing lost."""
    script = "for i in $(seq 1 300); do echo tick-$i; sleep 0.2; done"
    runs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(20):  # one after the other, as users come: each is running first
            out = tmp_path / f"s{n}.out"
            runs.append((_start(scale, online.node_id, script, out), out))
            wait_for(lambda o=out: _lines(o, r"tick-\d+"), 60, what=f"session {n} to run")
        for replica in scale.replicas:
            scale.terminate(replica)
            scale.start_replica(replica)
        for proc, out in runs:
            assert proc.wait(180) == 0, out.with_suffix(".err").read_text()
    finally:
        for proc, _ in runs:
            reap(proc)
    for _, out in runs:
        ticks = _lines(out, r"tick-(\d+)")
        assert ticks == [str(i) for i in range(1, 301)], f"{out.name}: {len(ticks)} ticks"


def test_revocation_on_one_replica_ends_a_session_relayed_by_another(
    scale: ReplicaSet, online: SharedAgent, tmp_path: Path
) -> None:
    """Access is re-checked by every replica when it changes on any: detaching a user's
    policy through a replica that does not relay the session ends the session at once."""
    admin_arn = "arn:aws:iam::aws:policy/AdministratorAccess"
    scale.cli_json("iam", "create-user", "--user-name", "ops")
    key = scale.cli_json("iam", "create-access-key", "--user-name", "ops")["AccessKey"]
    scale.cli("iam", "attach-user-policy", "--user-name", "ops", "--policy-arn", admin_arn)
    config = tmp_path / "ops.toml"
    lines = scale.profile.read_text().splitlines()
    lines = [ln for ln in lines if not ln.startswith(("access_key_id", "secret_access_key"))]
    lines += [f'access_key_id = "{key["AccessKeyId"]}"',
              f'secret_access_key = "{key["SecretAccessKey"]}"']  # fmt: skip
    config.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ops.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [HATCHWAY, "--config", str(config), "start-session", "--target", online.node_id],
            stdin=subprocess.PIPE,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=scale.env(),
        )
    assert proc.stdin is not None
    proc.stdin.write(b"for i in $(seq 1 600); do echo tick-$i; sleep 0.1; done; exit\n")
    proc.stdin.flush()
    try:
        wait_for(lambda: _lines(out, r"tick-\d+"), 60, what="the session to run")
        session = _active_session(scale, online.node_id)
        relay = scale.relay_of(session)
        other = next(r for r in scale.replicas if r is not relay)
        p = load_profile(str(scale.profile), "default")
        api = ApiClient(  # this replica, not the balancer
            f"https://127.0.0.1:{other.port}",
            region=p.region,
            credentials=Credentials(p.access_key_id, p.secret_access_key),
            ca_file=p.ca_file,
        )
        api.call(
            "DetachUserPolicy", {"UserName": "ops", "PolicyArn": admin_arn}, service="Hatchway"
        )
        wait_for(lambda: proc.poll() is not None, 20, what="the revoked session to end")
        assert "access revoked" in out.read_text(errors="replace")
    finally:
        reap(proc)


def test_a_console_terminal_is_reached_through_any_replica(
    scale: ReplicaSet, online: SharedAgent
) -> None:
    """The console starts a session on one replica (its terminal lives there); the browser's
    terminal WebSocket reaching another replica is piped to it."""
    import asyncio
    import json
    import ssl
    import struct

    import aiohttp

    password = "console-pass-" + "x7" * 6
    scale.cli("iam", "set-password", "--user-name", "admin", input=password.encode() + b"\n")
    first, second = scale.replicas[0], scale.replicas[1]

    async def browse() -> str:
        tls = ssl.create_default_context(cafile=str(scale.ca_file))
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, whichever port
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            a = f"https://127.0.0.1:{first.port}"
            b = f"https://127.0.0.1:{second.port}"
            login = {"username": "admin", "password": password}
            async with http.post(f"{a}/api/login", json=login, ssl=tls) as r:
                assert r.status == 200, await r.text()
            csrf = next(c.value for c in jar if c.key.endswith("hatchway-csrf"))
            async with http.post(
                f"{a}/api/sessions",
                json={"target": online.node_id},
                headers={"X-CSRF-Token": csrf},
                ssl=tls,
            ) as r:
                assert r.status == 200, await r.text()
                session_id = (await r.json())["SessionId"]
            url = f"{b}/api/sessions/{session_id}/terminal?offset=0"
            async with http.ws_connect(url, ssl=tls, headers={"Origin": b}) as ws:
                hello = json.loads((await ws.receive(timeout=30)).data)
                assert hello["type"] == "hello" and hello["sessionId"] == session_id
                await ws.send_str(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
                typed = b"echo con-$((6*7))\n"
                await ws.send_bytes(struct.pack(">Q", 0) + typed)
                seen = b""
                while b"con-42\r\n" not in seen:
                    msg = await ws.receive(timeout=30)
                    assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data[8:]
                await ws.send_str(json.dumps({"type": "terminate"}))
        # aiohttp's graceful shutdown: TLS transports close on the loop's next turns, not
        # when the session does (else one is left unclosed for the garbage collector).
        await asyncio.sleep(0.25)
        return str(session_id)

    session_id = asyncio.run(browse())
    wait_for(
        lambda: session_id not in {s["SessionId"] for s in scale.sessions()},
        30,
        what="the console's session to end",
    )


def test_a_drained_replica_reports_itself_unhealthy_and_holds_nothing(
    scale: ReplicaSet, online: SharedAgent
) -> None:
    replica = scale.replicas[0]
    scale.terminate(replica)
    status = scale.cli_json("cluster", "status")
    assert len(status["Replicas"]) == 2  # it said it was leaving: gone at once
    wait_for(lambda: scale.ping_status(online.node_id) == "Online", 30, what="node Online")


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        requirements()
        pytest.skip("nats-server is not installed: cannot restart a NATS of the test's own")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(accepting, 10, what="nats-server")

    start()
    procs.append(start)  # type: ignore[arg-type]  # the restart function, last in the list
    try:
        yield port, procs
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)


def test_nats_restarted_mid_session(own_nats: tuple[int, list], tmp_path: Path) -> None:
    """NATS goes away and comes back: the replicas say they are unhealthy meanwhile, and a
    session whose ends are piped between replicas goes on afterwards with nothing lost."""
    requirements()
    port, procs = own_nats
    restart = procs.pop()
    replicas = ReplicaSet(tmp_path / "c", count=2, nats_url=f"nats://127.0.0.1:{port}")
    (tmp_path / "c").mkdir()
    try:
        replicas.start()
        node, state = replicas.register("n")
        replicas.start_agent(state, node)
        out = tmp_path / "ticks.out"
        proc = _start(
            replicas, node, "for i in $(seq 1 100); do echo tick-$i; sleep 0.1; done", out
        )
        try:
            wait_for(lambda: len(_lines(out, r"tick-\d+")) >= 20, 60, what="tick 20")
            nats = procs[0]
            nats.send_signal(signal.SIGKILL)
            nats.wait(10)
            _code, body = wait_for(
                lambda: (h := replicas.health(replicas.replicas[0]))[0] == 503 and h,
                20,
                what="unhealthy without NATS",
            )
            assert any("NATS" in reason for reason in body["reasons"]), body
            restart()
            procs[0] = procs.pop()
            wait_for(lambda: replicas.health(replicas.replicas[0])[0] == 200, 30, what="healthy")
            assert proc.wait(180) == 0, out.with_suffix(".err").read_text()
        finally:
            reap(proc)
        ticks = _lines(out, r"tick-(\d+)")
        assert ticks == [str(i) for i in range(1, 101)], f"{len(ticks)} ticks"
    finally:
        replicas.close()
