"""Fixtures that start real servers and agents on loopback (TLS) and stop them afterwards."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import RUN_AS, Cluster, SharedAgent, closed_port, wait_for


@pytest.fixture(scope="session", autouse=True)
def run_as_user() -> Iterator[str]:
    """The user the tests' agents run sessions as; removed at the end if the tests made it.

    An agent running as root creates its run-as user on the first session. The name is this
    run's own (``RUN_AS``), so whatever exists under it at the end was created by these tests.
    """
    existed = _uid_of(RUN_AS) is not None
    yield RUN_AS
    uid = _uid_of(RUN_AS)
    if existed or uid is None:
        return
    _end_processes_of(uid)
    removed = subprocess.run(["userdel", "-r", RUN_AS], capture_output=True, text=True)
    assert removed.returncode == 0, f"userdel -r {RUN_AS}: {removed.stderr}"
    try:
        grp.getgrnam(RUN_AS)
    except KeyError:
        return
    subprocess.run(["groupdel", RUN_AS], check=True, capture_output=True)


def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _pids_of(uid: int) -> list[int]:
    """Processes whose real user is ``uid`` (from /proc: no tool to rely on)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # ended meanwhile
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        if int(uids[1]) == uid:
            pids.append(int(entry.name))
    return pids


def _end_processes_of(uid: int) -> None:
    """Give the test user's processes (session shells) a moment to end, then kill those left.

    ``userdel`` refuses a user who still runs processes. Every process of this uid was started
    by this test run, since the user is the run's own.
    """
    try:
        wait_for(lambda: not _pids_of(uid), 10, 0.1, "the test user's processes to end")
    except AssertionError:
        for pid in _pids_of(uid):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _pids_of(uid), 10, 0.1, "the test user's processes to die")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running TLS server shared by the tests of one module."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.start_server()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def shared_agent(cluster: Cluster) -> SharedAgent:
    """A registered node with its agent running, shared by the tests of one module."""
    node_id, state = cluster.register("shared", "--tag", "Env=test")
    return SharedAgent(cluster, node_id, state, cluster.start_agent(state, node_id))


@pytest.fixture
def node(cluster: Cluster, shared_agent: SharedAgent) -> str:
    """The shared node, checked before each test: the server and its agent are restarted if a
    test before this one stopped them, so one broken agent fails one test, not the module."""
    cluster.ensure_server()
    shared_agent.ensure_online()
    return shared_agent.node_id


@pytest.fixture
def closed_url() -> Iterator[str]:
    """An https URL on loopback where nothing listens (connecting is refused) for the test."""
    with closed_port() as port:
        yield f"https://127.0.0.1:{port}"


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server of the test's own, for tests that restart or break it."""
    c = Cluster(tmp_path)
    c.start_server()
    try:
        yield c
    finally:
        c.close()
