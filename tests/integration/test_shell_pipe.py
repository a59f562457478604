"""A shell through the real CLI with stdin as a pipe (the node still gives it a PTY)."""

from __future__ import annotations

from tests.integration.cluster import Cluster


def test_piped_shell_prints_and_exits_with_status(cluster: Cluster, node: str) -> None:
    result = cluster.cli(
        "start-session", "--target", node, input=b"echo hello-$((6*7))\nexit 7\n", check=False
    )
    assert b"hello-42" in result.stdout
    assert result.returncode == 7, result.stderr


def test_end_of_input_sends_eot_and_waits_for_output(cluster: Cluster, node: str) -> None:
    # No explicit exit: end of input becomes one Ctrl-D, which ends the login shell.
    result = cluster.cli("start-session", "--target", node, input=b"seq 1 3000\n", check=False)
    lines = [ln for ln in result.stdout.decode().splitlines() if ln.strip().isdigit()]
    assert lines[-1].strip() == "3000"
    assert result.returncode == 0, result.stderr


def test_large_piped_input_arrives_whole(cluster: Cluster, node: str) -> None:
    """Megabytes of input through the PTY: the agent holds back (does not buffer it all) and
    nothing is lost or doubled."""
    import os

    path = f"/tmp/hatchway-big-{os.getpid()}"
    lines = 30_000
    script = (
        # the sleep leaves the input unread for a while: more than the agent will hold (1 MiB)
        # arrives, so the agent refuses input and the client resends it later
        f"stty -echo; sleep 1; cat > {path}; echo size-$(wc -c < {path}); rm -f {path}\n".encode()
        + (b"x" * 99 + b"\n") * lines
        + b"\x04exit\n"  # Ctrl-D ends cat, then the shell exits
    )
    result = cluster.cli("start-session", "--target", node, input=script, timeout=120)
    assert f"size-{lines * 100}".encode() in result.stdout, result.stdout[-300:]
    assert result.returncode == 0
