"""Registering a node with bad input: wrong, used-up or expired activations, a CA that
does not match the pinned fingerprint, a server that is not there.
"""

from __future__ import annotations

import hashlib
import re
import signal
import ssl
import uuid
from pathlib import Path

import pytest

from tests.integration.bad_input import (
    activation_info,
    assert_undisturbed,
    ca_fingerprint,
    nodes_of,
    one_line_error,
    register_args,
)
from tests.integration.cluster import Cluster, wait_for

# ---- activations --------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["code", "activation id"])
def test_wrong_activation_is_refused_and_leaves_the_activation_usable(
    cluster: Cluster, node: str, tmp_path: Path, wrong: str
) -> None:
    aid, code = cluster.activation()
    bad_aid, bad_code = (aid, code[::-1]) if wrong == "code" else (str(uuid.uuid4()), code)
    state = tmp_path / "agent"
    result = cluster.cli(*register_args(cluster, bad_aid, bad_code, state), check=False)
    line = one_line_error(result)
    assert line == "hatchway: InvalidActivation: Activation ID or code is not valid."
    assert not (state / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert nodes_of(cluster, aid) == []
    # The failed attempt burned nothing: the right code still registers, in the same directory.
    ok = cluster.cli(*register_args(cluster, aid, code, state))
    assert re.fullmatch(r"mi-[0-9a-f]{17}", ok.stdout.decode().strip())
    assert_undisturbed(cluster, node)


def test_used_up_activation_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation("--registration-limit", "1")
    cluster.cli(*register_args(cluster, aid, code, tmp_path / "first"))
    result = cluster.cli(*register_args(cluster, aid, code, tmp_path / "second"), check=False)
    line = one_line_error(result)
    assert line.startswith("hatchway: InvalidActivation: ")
    assert "registration limit" in line
    assert not (tmp_path / "second" / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 1
    assert len(nodes_of(cluster, aid)) == 1
    assert_undisturbed(cluster, node)


def test_expired_activation_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation("--expires-in", "2s")
    assert activation_info(cluster, aid)["Expired"] is False
    wait_for(lambda: activation_info(cluster, aid)["Expired"], 15, 0.1, "activation expired")
    result = cluster.cli(*register_args(cluster, aid, code, tmp_path / "late"), check=False)
    line = one_line_error(result)
    assert line == "hatchway: InvalidActivation: Activation has expired."
    assert not (tmp_path / "late" / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert nodes_of(cluster, aid) == []
    assert_undisturbed(cluster, node)


# ---- TLS pinning --------------------------------------------------------------------------


def test_ca_fingerprint_mismatch_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    aid, code = cluster.activation()
    right = ca_fingerprint(cluster)
    wrong = hashlib.sha256(b"some other CA").hexdigest()
    state = tmp_path / "agent"
    result = cluster.cli(
        *register_args(cluster, aid, code, state, "--ca-fingerprint", wrong), check=False
    )
    line = one_line_error(result)
    assert line.startswith("hatchway: TLS fingerprint mismatch")
    assert right in line and wrong in line
    assert not (state / "ca.pem").exists()  # nothing pinned
    assert not (state / "registration.json").exists()
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0  # never got to register
    assert_undisturbed(cluster, node)


def test_right_ca_fingerprint_registers_and_the_agent_connects(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    logged = re.findall(
        r"CA SHA-256 fingerprint: ([0-9a-f:]+)", (cluster.root / "server.log").read_text()
    )
    assert logged, "the server prints its CA fingerprint"
    assert logged[-1].replace(":", "") == ca_fingerprint(cluster)
    aid, code = cluster.activation()
    state = tmp_path / "agent"
    result = cluster.cli(*register_args(cluster, aid, code, state, "--ca-fingerprint", logged[-1]))
    node_id = result.stdout.decode().strip()
    assert re.fullmatch(r"mi-[0-9a-f]{17}", node_id)
    pinned = ssl.PEM_cert_to_DER_cert((state / "ca.pem").read_text())
    assert pinned == ssl.PEM_cert_to_DER_cert(cluster.ca_file.read_text())
    # The agent verifies the server against the pinned CA from then on.
    proc = cluster.start_agent(state, node_id)
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("trust", ["--ca-file", "--ca-fingerprint"])
def test_register_with_unreachable_server_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, closed_url: str, trust: str
) -> None:
    aid, code = cluster.activation()
    closed = closed_url
    value = str(cluster.ca_file) if trust == "--ca-file" else ca_fingerprint(cluster)
    args = register_args(cluster, aid, code, tmp_path / "agent", trust, value)
    args[args.index("--endpoint") + 1] = closed
    line = one_line_error(cluster.cli(*args, check=False))
    assert closed in line and "Connection refused" in line
    assert activation_info(cluster, aid)["RegistrationsCount"] == 0
    assert_undisturbed(cluster, node)
