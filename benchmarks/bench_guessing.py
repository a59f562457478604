"""Keystroke echo through a live session while 64 clients guess activation codes.

Starts a Hatchway server with one online agent, opens an interactive session running a
raw-mode ``cat`` (as ``bench_echo.py`` does) and times single keystrokes, first with the server
quiet, then while ``--guessers`` threads (in a separate process, so they do not compete with
the measurement for this interpreter's lock) send RegisterManagedInstance with wrong codes for
a known activation id as fast as the server answers, then quiet again. Prints p50/p90/p99 of
each phase, the ratio under guessing to quiet, and what the guessers were answered.

Before the guessing limits, 64 such guessers stalled every API call and delayed keystrokes by
up to 1.8 s (issue 5). Never asserts on time.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import ssl
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from multiprocessing.queues import Queue
from pathlib import Path

from bench_echo import ALPHABET, GAP_MS, PtySession
from common import CpuWatch, Summary, exit_cleanly_on_sigterm, machine_line, ratio
from hatchway_env import HatchwayEnv, _cli, hatchway_cluster

RAMP = 2.0  # seconds of guessing before keystrokes are timed


def guess_until(
    endpoint: str, ca_file: str, activation_id: str, threads: int, stop_at: float, out: Queue
) -> None:
    """Child process: ``threads`` keep-alive clients sending wrong codes until ``stop_at``
    (wall clock); puts a Counter of answers (status and error type) on ``out``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    url = urllib.parse.urlsplit(endpoint)
    ctx = ssl.create_default_context(cafile=ca_file)
    der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    public_key = base64.b64encode(der).decode()
    answers: Counter[str] = Counter()
    lock = threading.Lock()

    def guesser(i: int) -> None:
        conn: http.client.HTTPSConnection | None = None
        n = 0
        while time.time() < stop_at:
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(
                        url.hostname or "", url.port, context=ctx, timeout=30
                    )
                body = json.dumps(
                    {
                        "ActivationId": activation_id,
                        "ActivationCode": f"Wrong-{i:04d}-{n:016d}",
                        "PublicKey": public_key,
                    }
                )
                conn.request("POST", "/", body, {
                    "Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": "AmazonSSM.RegisterManagedInstance"})  # fmt: skip
                response = conn.getresponse()
                data = response.read()
                kind = json.loads(data).get("__type", "") if data else ""
                key = f"{response.status} {kind}".strip()
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                key = type(exc).__name__
                conn = None
                time.sleep(0.05)
            with lock:
                answers[key] += 1

    workers = [threading.Thread(target=guesser, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(stop_at - time.time() + 35)
    out.put(answers)


def sample(session: PtySession, samples: int, gap_ms: float, offset: int) -> list[float]:
    """``samples`` echo round trips in µs, ``gap_ms`` apart."""
    times = []
    for i in range(samples):
        j = (offset + i) % len(ALPHABET)
        times.append(session.round_trip(ALPHABET[j : j + 1]) / 1000.0)
        time.sleep(gap_ms / 1000.0)
    return times


def run(hw: HatchwayEnv, guessers: int, samples: int, gap_ms: float) -> str:
    profile = Path(hw.env["HATCHWAY_CONFIG"])
    data_dir = profile.parent
    endpoint = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in profile.read_text().splitlines()
        if line.startswith("endpoint")
    )
    activation = json.loads(
        _cli(hw.hatchway, hw.env, "activation", "create", "--registration-limit", "5",
             "--output", "json")
    )  # fmt: skip
    env = dict(hw.env)
    env["TERM"] = "xterm"
    session = PtySession("hatchway", [hw.hatchway, "start-session", "--target", hw.node], env)
    polite = False
    try:
        session.start_cat(type_command=True)
        sample(session, 50, gap_ms, 0)  # warm-up
        quiet = sample(session, samples, gap_ms, 1)

        ctx = multiprocessing.get_context("spawn")
        answers: Queue = ctx.Queue()
        duration = RAMP + samples * (gap_ms / 1000.0 + 0.01) + 5.0
        child = ctx.Process(
            target=guess_until,
            args=(endpoint, str(data_dir / "ca.pem"), activation["ActivationId"], guessers,
                  time.time() + duration, answers),
        )  # fmt: skip
        child.start()
        time.sleep(RAMP)
        under = sample(session, samples, gap_ms, 2)
        got: Counter[str] = answers.get(timeout=duration + 60)
        child.join(30)
        after = sample(session, samples, gap_ms, 3)
        polite = True
    finally:
        session.close(True, polite)

    listed = json.loads(_cli(hw.hatchway, hw.env, "activation", "list", "--output", "json"))
    state = next(
        a for a in listed["ActivationList"] if a["ActivationId"] == activation["ActivationId"]
    )
    q, u, a = Summary.of(quiet), Summary.of(under), Summary.of(after)
    fives = sum(n for k, n in got.items() if k[:1] == "5")
    lines = [
        f"echo round trip while {guessers} clients guess activation codes "
        f"({samples} samples per phase, {gap_ms:g} ms apart)",
        "                                   p50      p90      p99      max",
        f"  quiet                      {q.median:8.0f} µs {q.p90:8.0f} {q.p99:8.0f} "
        f"{q.maximum:8.0f}",
        f"  {guessers} guessers                {u.median:8.0f} µs {u.p90:8.0f} {u.p99:8.0f} "
        f"{u.maximum:8.0f}",
        f"  quiet again                {a.median:8.0f} µs {a.p90:8.0f} {a.p99:8.0f} "
        f"{a.maximum:8.0f}",
        f"  ratio guessing/quiet  p50 {ratio(u.median, q.median):5.2f}   "
        f"p99 {ratio(u.p99, q.p99):5.2f}",
        f"  guesses answered: {sum(got.values())} "
        f"({', '.join(f'{k}: {n}' for k, n in got.most_common())}); 5xx: {fives}",
        f"  the activation: FailedAttempts {state.get('FailedAttempts')}, "
        f"Locked {state.get('Locked')}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guessers", type=int, default=64, help="concurrent guessers (64)")
    parser.add_argument("--samples", type=int, default=300, help="keystrokes per phase (300)")
    parser.add_argument("--gap-ms", type=float, default=GAP_MS, help=f"pause ({GAP_MS:g} ms)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    print(machine_line(), flush=True)
    with CpuWatch() as cpu, hatchway_cluster() as hw:
        result = run(hw, max(1, args.guessers), max(10, args.samples), max(0.0, args.gap_ms))
    print(result)
    print(cpu.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
